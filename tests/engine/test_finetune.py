"""Fine-tuning: a new head on DeepMind's Kinetics-400 I3D, frozen parts that stay frozen, and
layer-wise LR decay with the documented per-layer LRs."""

import math

import pytest
import torch
from helpers import compose_config

from videocls import create_model
from videocls.engine.optim import build_optimizer, layer_id, lr_scales
from videocls.engine.trainer import Trainer
from videocls.models.freezing import freeze

WEIGHTS = __import__("conftest").WEIGHTS / "i3d-kinetics-400.ckpt"


def _finetune(tiny_synthetic, run_dir, *extra):
    return compose_config([
        "experiment=finetune", "model=i3d_inception_v1", f"model.pretrained={WEIGHTS}",
        f"data.root={tiny_synthetic}", "data.synthetic.train_per_class=2", "data.synthetic.val_per_class=1",
        "data.num_frames=4", "data.train_short_side=[32,36]", "data.train_crop=32", "data.test_short_side=32",
        "data.test_crop=32", "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=1",
        "schedule.warmup_epochs=0.5",
        "test.num_clips=1", "test.num_crops=1", "test.batch_size=8", "logger=none", *extra,
    ])


def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("backbone", [True, False])
def test_finetune_from_kinetics_i3d_with_and_without_a_frozen_backbone(tiny_synthetic, tmp_path, backbone):
    pretrained = create_model("i3d_inception_v1", pretrained=WEIGHTS)
    trainer = Trainer(_finetune(tiny_synthetic, tmp_path / "run", f"model.freeze_backbone={backbone}"),
                      tmp_path / "run")
    try:
        model = trainer.model
        assert model.head.proj.out_features == 10  # a new head for the 10 built-in classes
        before = {k: v.clone() for k, v in model.state_dict().items()}
        # the backbone starts as DeepMind's weights
        for key, value in pretrained.state_dict().items():
            if not key.startswith("head.proj"):
                assert torch.equal(before[key], value), key
        # (DeepMind's BatchNorms have no scale: their weights never train, frozen or not)
        fixed = {n for n, p in pretrained.named_parameters() if not p.requires_grad}
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad and n not in fixed]
        assert bool(frozen) == backbone and all(not n.startswith("head.proj") for n in frozen)
        # the new head learns head_lr_mult (10) times faster than the rest
        lrs = {g.get("lr_scale", 1.0): g["initial_lr"] for g in trainer.optimizer.param_groups}
        assert lrs[10.0] == pytest.approx(10 * trainer._base_lr("initial_lr"))
        assert (1.0 in lrs) != backbone  # frozen: only the head is in the optimiser
        results = trainer.fit()
    finally:
        trainer.close()
    after = model.state_dict()
    assert results["num_videos"] == 10
    assert not torch.equal(after["head.proj.weight"], before["head.proj.weight"])
    backbone_keys = [k for k in after
                     if not k.startswith("head.proj") and not k.endswith("num_batches_tracked")]
    unchanged = [k for k in backbone_keys if torch.equal(after[k], before[k])]
    if backbone:  # weights and BatchNorm statistics: exactly as loaded
        assert unchanged == backbone_keys
    else:  # trained: weights and statistics move
        assert len(unchanged) < len(backbone_keys) // 2


def test_frozen_batchnorm_keeps_its_statistics_in_training_mode():
    model = create_model("i3d_r50", num_classes=3, width=4, stage_blocks=[1, 1, 1, 1])
    frozen = freeze(model, ["stem", "res2"])
    assert frozen and all(n.startswith(("stem.", "res2.")) for n in frozen)
    stats = _bn_stats(model)
    model.train()
    model(torch.randn(2, 3, 4, 32, 32))
    after = _bn_stats(model)
    for key, value in stats.items():
        assert torch.equal(after[key], value) == key.startswith(("stem.", "res2.")), key
    with pytest.raises(ValueError, match="model.freeze: \\['res9'\\] are not modules"):
        freeze(model, ["res9"])


def test_layer_decay_gives_the_documented_per_layer_lrs():
    """BEiT/VideoMAE: LR x decay^(L + 1 - layer), embeddings layer 0, block i layer i + 1, head L + 1."""
    model = create_model("timesformer_base", num_classes=5, img_size=32, patch_size=16, num_frames=2,
                         embed_dim=16, depth=3, num_heads=2)
    decay, head_mult = 0.5, 4.0
    scales = lr_scales(model, head_lr_mult=head_mult, layer_decay=decay)
    expected_layer = {"patch_embed.proj.weight": 0, "cls_token": 0, "pos_embed": 0, "time_embed": 0,
                      "blocks.0.attn.qkv.weight": 1, "blocks.2.mlp.fc1.weight": 3, "norm.weight": 4,
                      "head.weight": 4}
    for name, layer in expected_layer.items():
        assert layer_id(name, 3) == layer
        factor = decay ** (3 + 1 - layer) * (head_mult if name.startswith("head.") else 1.0)
        assert scales[name] == pytest.approx(factor), name
    optimizer = build_optimizer(model, 8, name="adamw", base_lr=1e-3, base_batch_size=8, no_decay=[],
                                head_lr_mult=head_mult, layer_decay=decay)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        assert lr_of[id(param)] == pytest.approx(1e-3 * scales[name]), name
    assert math.isclose(max(lr_of.values()), 1e-3 * head_mult)
    with pytest.raises(ValueError, match="needs a value in \\(0, 1\\] and a transformer"):
        lr_scales(create_model("i3d_r50", width=4, stage_blocks=[1, 1, 1, 1]), layer_decay=0.75)


def test_the_finetune_recipe_refuses_to_start_without_pretrained_weights(tiny_synthetic, tmp_path):
    from videocls.engine.config_checks import ConfigError

    cfg = _finetune(tiny_synthetic, tmp_path / "run", "model.pretrained=null")
    with pytest.raises(ConfigError, match="this experiment fine-tunes: give model.pretrained=PATH"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
