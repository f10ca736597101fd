"""VideoMAE ViT against Hugging Face's implementation, an independent re-implementation of the official
``modeling_finetune.py`` forward, the official checkpoint layouts, and the official fine-tuning recipe."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from videocls.models.complexity import count_gflops
from videocls.models.registry import create_model, get_model_config
from videocls.models.videomae import VideoMAEViT, checkpoint_filter, resize_pos_embed, sinusoid_table

TINY = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=4)
NUM_CLASSES = 7
TOKENS = (4 // 2) * (32 // 8) ** 2  # 2 x 4 x 4 tubelets


def _clip(frames: int = 4, size: int = 32, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Noise on every parameter: zero biases, identity norms and the 0.001-scaled head all matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return module


@pytest.fixture(scope="module")
def hf_model() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(
        image_size=TINY["img_size"], patch_size=TINY["patch_size"], num_frames=TINY["num_frames"],
        tubelet_size=2, hidden_size=TINY["embed_dim"], num_hidden_layers=TINY["depth"],
        num_attention_heads=TINY["num_heads"], intermediate_size=4 * TINY["embed_dim"],
        num_labels=NUM_CLASSES, layer_norm_eps=1e-6,  # the official LayerNorms' eps
    )
    hf = transformers.VideoMAEForVideoClassification(config)
    hf.fc_norm.eps = 1e-6  # HF builds fc_norm at PyTorch's 1e-5; the official (and ours) 1e-6
    return _randomise(hf).eval()


def _hf_logits(hf: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(pixel_values=clip.transpose(1, 2)).logits  # HF takes B x T x C x H x W


def _official_from_hf(hf_state: dict) -> dict:
    """The official modeling_finetune.py names, written out independently of the model's filter:
    q/k/v weights fused in that order, ``q_bias``/``v_bias``, no key bias."""
    dim, layers = TINY["embed_dim"], TINY["depth"]
    out = {
        "patch_embed.proj.weight": hf_state["videomae.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_state["videomae.embeddings.patch_embeddings.projection.bias"],
        "fc_norm.weight": hf_state["fc_norm.weight"], "fc_norm.bias": hf_state["fc_norm.bias"],
        "head.weight": hf_state["classifier.weight"], "head.bias": hf_state["classifier.bias"],
    }
    for i in range(layers):
        hf = f"videomae.encoder.layer.{i}."
        att = hf + "attention.attention."
        block = {
            "norm1.weight": hf + "layernorm_before.weight", "norm1.bias": hf + "layernorm_before.bias",
            "attn.q_bias": att + "query.bias", "attn.v_bias": att + "value.bias",
            "attn.proj.weight": hf + "attention.output.dense.weight",
            "attn.proj.bias": hf + "attention.output.dense.bias",
            "norm2.weight": hf + "layernorm_after.weight", "norm2.bias": hf + "layernorm_after.bias",
            "mlp.fc1.weight": hf + "intermediate.dense.weight",
            "mlp.fc1.bias": hf + "intermediate.dense.bias",
            "mlp.fc2.weight": hf + "output.dense.weight", "mlp.fc2.bias": hf + "output.dense.bias",
        }
        out.update({f"blocks.{i}.{ours}": hf_state[theirs] for ours, theirs in block.items()})
        qkv = [hf_state[att + part + ".weight"] for part in ("query", "key", "value")]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(qkv)
    # the reference layout's shapes (modeling_finetune.VisionTransformer, use_mean_pooling, qkv_bias)
    shapes = {"patch_embed.proj.weight": (dim, 3, 2, 8, 8), "blocks.0.attn.qkv.weight": (3 * dim, dim),
              "blocks.0.attn.q_bias": (dim,), "blocks.1.mlp.fc1.weight": (4 * dim, dim),
              "head.weight": (NUM_CLASSES, dim), "fc_norm.weight": (dim,)}
    assert {k: tuple(out[k].shape) for k in shapes} == shapes
    assert len(out) == 6 + 13 * layers
    return out


def _official_forward(state: dict, clip: torch.Tensor, heads: int, gamma: bool = False) -> torch.Tensor:
    """The official fine-tuning forward in plain tensor ops (explicit softmax attention, numpy table)."""
    x = torch.nn.functional.conv3d(clip, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                                   stride=(2, 8, 8)).flatten(2).transpose(1, 2)
    n, dim = x.shape[1:]
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(n)])
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    x = x + torch.tensor(angles, dtype=torch.float32)[None]
    ln = lambda t, k: torch.nn.functional.layer_norm(  # noqa: E731
        t, (dim,), state[k + ".weight"], state[k + ".bias"], 1e-6)
    lin = lambda t, k: t @ state[k + ".weight"].T + state[k + ".bias"]  # noqa: E731
    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        p = f"blocks.{i}."
        bias = torch.cat([state[p + "attn.q_bias"], torch.zeros(dim), state[p + "attn.v_bias"]])
        qkv = ln(x, p + "norm1") @ state[p + "attn.qkv.weight"].T + bias
        qkv = qkv.reshape(x.shape[0], n, 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        out = lin((attn @ v).transpose(1, 2).reshape(x.shape[0], n, dim), p + "attn.proj")
        x = x + (state[p + "gamma_1"] * out if gamma else out)
        out = lin(torch.nn.functional.gelu(lin(ln(x, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2")
        x = x + (state[p + "gamma_2"] * out if gamma else out)
        i += 1
    return lin(ln(x.mean(1), "fc_norm"), "head")


def test_hugging_face_state_dict_gives_hugging_face_logits(tmp_path, hf_model):
    path = tmp_path / "hf_videomae.bin"
    torch.save(hf_model.state_dict(), path)
    model = create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, **TINY).eval()
    clip = _clip()
    expected = _hf_logits(hf_model, clip)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), expected, atol=1e-4, rtol=0)
    assert expected.abs().max() > 0.1  # not a comparison of near-zeros
    # transformers 4 wrote the biases as q_bias / v_bias: the same model
    old = {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v
           for k, v in hf_model.state_dict().items()}
    assert any(k.endswith("attention.q_bias") for k in old)
    assert {k: torch.equal(v, model.state_dict()[k]) for k, v in checkpoint_filter(old, model).items()} == {
        k: True for k in model.state_dict()}


def test_official_checkpoint_gives_hugging_face_and_reference_logits(tmp_path, hf_model):
    official = _official_from_hf(hf_model.state_dict())
    clip = _clip()
    expected = _hf_logits(hf_model, clip)
    reference = _official_forward(official, clip, TINY["num_heads"])
    torch.testing.assert_close(reference, expected, atol=1e-4, rtol=0)
    path = tmp_path / "videomae_tiny_ft.pth"
    torch.save({"model": official, "epoch": 74, "args": "Namespace()"}, path)  # run_class_finetuning's file
    model = create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, **TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(clip), expected, atol=1e-4, rtol=0)
    torch.save({"module": official, "epoch": 74}, path)  # DeepSpeed's file (VideoMAEv2)
    model = create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, **TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(clip), expected, atol=1e-4, rtol=0)
    # DeepSpeed's "module" dict and DDP / backbone prefixes: the same keys once unwrapped
    for prefix in ("module.", "backbone.", "encoder."):
        mapped = checkpoint_filter({prefix + k: v for k, v in official.items()}, model)
        assert mapped.keys() == model.state_dict().keys()


def test_layer_scale_checkpoint_gives_the_official_logits():
    """VideoMAEv2's layer scale (``gamma_1``/``gamma_2``) against the reference forward."""
    model = _randomise(VideoMAEViT(num_classes=NUM_CLASSES, init_values=0.1, **TINY)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state["blocks.1.gamma_2"].shape == (TINY["embed_dim"],)
    clip = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(clip), _official_forward(state, clip, TINY["num_heads"], gamma=True),
                                   atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="init_values > 0"):
        checkpoint_filter(state, VideoMAEViT(num_classes=NUM_CLASSES, **TINY))


def test_pre_training_checkpoint_loads_the_encoder_and_a_fresh_head(tmp_path, caplog):
    source = _randomise(VideoMAEViT(num_classes=NUM_CLASSES, **TINY))
    encoder = {f"encoder.{k}": v for k, v in source.state_dict().items()
               if not k.startswith(("head.", "fc_norm."))}
    dim = TINY["embed_dim"]
    encoder.update({"encoder.norm.weight": torch.ones(dim), "encoder.norm.bias": torch.zeros(dim),
                    "mask_token": torch.zeros(1, 1, 16), "encoder_to_decoder.weight": torch.randn(16, dim),
                    "decoder.blocks.0.attn.qkv.weight": torch.randn(48, 16),
                    "decoder.head.weight": torch.randn(1536, 16)})
    path = tmp_path / "checkpoint-1599.pth"
    torch.save({"model": encoder}, path)
    with caplog.at_level(logging.WARNING, logger="videocls.models.registry"):
        model = create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, **TINY)
    assert "new 7-way classifier (checkpoint has 0 classes)" in caplog.text
    assert torch.equal(model.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    assert torch.equal(model.fc_norm.weight, torch.ones(dim)) and model.head.weight.abs().max() < 0.001
    with pytest.raises(ValueError, match="0 classes"):
        create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, strict_head=True, **TINY)


def test_learned_pos_embed_loads_resized_and_a_fixed_model_refuses_it(tmp_path):
    source = _randomise(VideoMAEViT(num_classes=NUM_CLASSES, learned_pos_embed=True, **TINY)).eval()
    assert source.state_dict()["pos_embed"].shape == (1, TOKENS, TINY["embed_dim"])
    path = tmp_path / "learned.pth"
    torch.save({"model": source.state_dict()}, path)
    with pytest.raises(ValueError, match="learned_pos_embed=true"):
        create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, **TINY)
    larger = create_model("videomae_vit_b", pretrained=path, num_classes=NUM_CLASSES, learned_pos_embed=True,
                          **{**TINY, "img_size": 48}).eval()
    # bicubic per time step, as the official fine-tuning script resizes a checkpoint's table
    grid = source.pos_embed.detach().reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(larger.pos_embed.detach(), expected.permute(0, 2, 3, 1).reshape(1, 72, -1))
    with torch.no_grad():  # the 32-px model resamples its table on the fly to the same values
        torch.testing.assert_close(larger(_clip(size=48)), larger(_clip(size=48)))
        torch.testing.assert_close(resize_pos_embed(source.pos_embed, (2, 4, 4), (2, 6, 6)), larger.pos_embed)


def test_sinusoid_table_is_the_official_and_not_in_the_state_dict():
    n, dim = 10, 6
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(n)])
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    torch.testing.assert_close(sinusoid_table(n, dim), torch.tensor(angles, dtype=torch.float32)[None])
    model = VideoMAEViT(**TINY)
    assert "pos_embed" not in model.state_dict() and "pos_embed" not in dict(model.named_parameters())


def test_param_counts_and_gflops_are_the_references():
    counts = {}
    for name in ("videomae_vit_s", "videomae_vit_b", "videomae_vit_l"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in create_model(name).parameters())
        config = get_model_config(name)
        assert abs(counts[name] / (config.reference_params_m * 1e6) - 1) < 0.001
        assert (config.num_frames, config.sampling_rate, config.crop_size) == (16, 4, 224)
        assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)
    # VideoMAEForVideoClassification(VideoMAEConfig(hidden_size, layers, heads, 4 x hidden, num_labels=400))
    assert counts == {"videomae_vit_s": 22_033_936, "videomae_vit_b": 86_534_800,
                      "videomae_vit_l": 304_270_736}
    # fvcore convention by hand: tubelet conv, then per block qkv + 2 attention matmuls + proj + MLP
    # and two LayerNorms (fvcore: 5 per element), then fc_norm and the head
    model = VideoMAEViT(num_classes=NUM_CLASSES, **TINY)
    n, d = TOKENS, TINY["embed_dim"]
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 4 * d + 2 * 5 * n * d
    expected = n * d * 3 * 2 * 8 * 8 + 2 * block + 5 * d + d * NUM_CLASSES
    assert round(count_gflops(model, _clip(batch=1)) * 1e9) == expected
    # the same formula at 16 x 224 with ViT-B's sizes is the paper's 180 GFLOPs
    n, d, layers = 8 * 14 * 14, 768, 12
    vit_b = n * d * 3 * 2 * 16 * 16 + layers * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 4 * d)
    assert round(vit_b / 1e9) == get_model_config("videomae_vit_b").reference_gflops


def test_frame_order_matters_and_every_parameter_trains():
    model = _randomise(VideoMAEViT(num_classes=NUM_CLASSES, drop_path_rate=0.1, head_drop_rate=0.1, **TINY))
    clip = _clip()
    model.train()(clip).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert (model(clip.flip(2)) - model(clip)).abs().max() > 0.05  # the position table tells time apart
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        model(_clip(frames=3))
    with pytest.raises(ValueError, match="B x C x T x H x W"):
        model(torch.randn(2, 3, 32, 32))


def test_layer_decay_and_weight_decay_groups_are_run_class_finetunings():
    """optim_factory.get_num_layer_for_vit / get_parameter_groups at layer_decay 0.75, as the recipe
    builds them."""
    from helpers import compose_config
    from hydra.utils import instantiate

    cfg = compose_config(["experiment=videomae_b_k400", "+model.depth=3", "+model.embed_dim=16",
                          "+model.num_heads=2"])
    model = instantiate(cfg.model)
    optimizer = instantiate(cfg.optim)(model, global_batch_size=384)
    layers = 3

    def layer_id(name):  # the official rule, written out
        if name.startswith("patch_embed") or name in ("cls_token", "mask_token", "pos_embed"):
            return 0
        return int(name.split(".")[1]) + 1 if name.startswith("blocks") else layers + 1

    peak = 5e-4 * 384 / 256
    got = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        decay = 0.0 if param.ndim == 1 or name.endswith(".bias") else 0.05
        want = (peak * 0.75 ** (layers + 1 - layer_id(name)), decay)
        assert got[id(param)] == pytest.approx(want, rel=1e-12), name


def _official_cosine(base, final, epochs, niter, warmup_epochs, start):
    """VideoMAE utils.cosine_scheduler: linspace warm-up (both ends included), then a cosine."""
    warmup = np.linspace(start, base, warmup_epochs * niter)
    iters = np.arange(epochs * niter - warmup_epochs * niter)
    return np.concatenate([warmup, final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))])


def test_recipe_is_the_official_finetune_script():
    from helpers import compose_config
    from hydra.utils import instantiate

    cfg = compose_config(["experiment=videomae_b_k400"])
    d, t = cfg.data, cfg.test
    # finetune.sh: 64 GPUs x --batch_size 6 = 384 videos per step; here 8 GPUs x 6 x 8 accumulated
    assert d.batch_size * 8 * cfg.trainer.accumulate_grad_batches == 384
    assert d.clips_per_video == 2 and d.clips_share_frames  # --num_sample 2: one decode, two augmentations
    assert (d.num_frames, d.sampling_rate, d.target_fps, d.train_crop) == (16, 4, None, 224)
    assert (list(d.train_crop_scale), list(d.train_crop_ratio), d.flip) == ([0.08, 1.0], [0.75, 1.3333], True)
    assert d.rand_augment == "rand-m7-n4-mstd0.5-inc1"
    assert (d.erase_prob, d.erase_mode, d.erase_count) == (0.25, "pixel", 1)
    assert dict(d.mixup) == {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5,
                             "label_smoothing": 0.1}
    assert (d.test_short_side, d.test_crop, t.num_clips, t.num_crops) == (224, 224, 5, 3)
    assert t.aggregation == "mean_softmax"  # engine_for_finetuning.merge: softmax per view, averaged
    m = cfg.model
    assert (m.drop_path_rate, m.head_drop_rate, m.head_init_scale) == (0.1, 0.0, 0.001)
    assert m.name == "videomae_vit_b"
    assert cfg.optim.name == "adamw" and list(cfg.optim.betas) == [0.9, 0.999]
    assert cfg.trainer.max_epochs == 75 and cfg.require_pretrained

    # the LR at every optimiser step against the official schedule (lr, warmup_lr, min_lr x 384 / 256)
    niter = 20
    model = VideoMAEViT(num_classes=NUM_CLASSES, **{**TINY, "depth": 1})
    optimizer = instantiate(cfg.optim)(model, global_batch_size=384)
    scheduler = instantiate(cfg.schedule)(optimizer, niter, cfg.trainer.max_epochs)
    official = _official_cosine(7.5e-4, 1.5e-6, 75, niter, 5, 1.5e-6)
    head = next(g for g in optimizer.param_groups if any(p is model.head.weight for p in g["params"]))
    got = []
    for _ in official:
        got.append(head["lr"])
        optimizer.step()
        scheduler.step()
    got, warm = np.array(got), 5 * niter
    np.testing.assert_allclose(got[warm:], official[warm:], rtol=1e-6)  # the cosine: equal
    # warm-up: official linspace reaches the peak one step earlier (i / (W - 1) against i / W)
    assert got[0] == pytest.approx(official[0])
    assert np.abs(got[:warm] - official[:warm]).max() <= 7.5e-4 / (warm - 1)
