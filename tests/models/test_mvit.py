"""MViTv2 against torchvision's ``mvit_v2_s``, PySlowFast's names, shapes and configs, and its own
invariants. torchvision's builder is run at a small input and an eighth of the width (its layout
untouched: every block's heads, strides and kernels are the builder's), so a comparison costs a second."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torchvision
import torchvision.models.video.mvit as tv_mvit
from torch import nn

from videocls.models.mvit import MViT, block_layout, checkpoint_filter, mvit_v2_b, mvit_v2_s
from videocls.models.registry import builder_kwargs, create_model, get_model_config

NUM_CLASSES = 7
FRAMES, SIZE, NARROW = 4, 64, 8  # a 2 x 16 x 16 token grid, widths 12 / 24 / 48 / 96
SMALL = dict(num_frames=FRAMES, img_size=SIZE, embed_dim=96 // NARROW)


def _torchvision_mvit_v2_s(monkeypatch, *, frames: int = FRAMES, size: int = SIZE) -> nn.Module:
    """``torchvision.models.video.mvit_v2_s`` built for ``frames x size`` (its builder fixes 16 x 224)
    with every block's channels divided by NARROW; weights randomised so no tensor is trivial."""
    build = tv_mvit._mvit

    def at_small_size(block_setting, **kwargs):
        kwargs.update(spatial_size=(size, size), temporal_size=frames)
        narrow = [dataclasses.replace(c, input_channels=c.input_channels // NARROW,
                                      output_channels=c.output_channels // NARROW) for c in block_setting]
        return build(block_setting=narrow, **kwargs)

    monkeypatch.setattr(tv_mvit, "_mvit", at_small_size)
    model = tv_mvit.mvit_v2_s(weights=None, num_classes=NUM_CLASSES)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def _clip(frames: int = FRAMES, size: int = SIZE, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


# torchvision -> PySlowFast names (slowfast/models/video_model_builder.py MViT, attention.py
# MultiScaleBlock / MultiScaleAttention, head_helper.TransformerBasicHead), written out apart from the model.
def _pyslowfast_name(key: str) -> str:
    fixed = {"conv_proj.weight": "patch_embed.proj.weight", "conv_proj.bias": "patch_embed.proj.bias",
             "pos_encoding.class_token": "cls_token", "head.1.weight": "head.projection.weight",
             "head.1.bias": "head.projection.bias"}
    if key in fixed:
        return fixed[key]
    for theirs, ours in [(r"attn\.project\.0\.", "attn.proj."), (r"attn\.pool_(.)\.pool\.", r"attn.pool_\1."),
                         (r"attn\.pool_(.)\.norm_act\.0\.", r"attn.norm_\1."), (r"mlp\.0\.", "mlp.fc1."),
                         (r"mlp\.3\.", "mlp.fc2."), (r"(blocks\.\d+)\.project\.", r"\1.proj.")]:
        key = re.sub(theirs, ours, key)
    return key


def _pyslowfast_state(torchvision_state: dict) -> dict:
    state = {_pyslowfast_name(k): v for k, v in torchvision_state.items()}
    state["cls_token"] = state["cls_token"].reshape(1, 1, -1)  # PySlowFast: 1 x 1 x D
    return state


@pytest.fixture(scope="module")
def torchvision_model():
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _torchvision_mvit_v2_s(monkeypatch)


def test_torchvision_weights_give_torchvision_logits_and_gradients(torchvision_model, tmp_path):
    path = tmp_path / "mvit_v2_s.pth"
    torch.save(torchvision_model.state_dict(), path)
    model = create_model("mvit_v2_s", pretrained=path, num_classes=NUM_CLASSES, **SMALL).eval()
    clip = _clip()
    torchvision_model.zero_grad()
    expected = torchvision_model(clip)
    logits = model(clip)
    assert expected.abs().max() > 1.0  # not a comparison of near-zeros
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)

    # The position bias enters SDPA as a mask that needs a gradient: every table's must be torchvision's.
    expected.square().sum().backward()
    logits.square().sum().backward()
    theirs = dict(torchvision_model.named_parameters())
    for block in (0, 1, 14):
        for name in ("rel_pos_h", "rel_pos_t"):
            torch.testing.assert_close(model.blocks[block].attn.get_parameter(name).grad,
                                       theirs[f"blocks.{block}.attn.{name}"].grad, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(model.blocks[1].attn.pool_q.weight.grad,
                               theirs["blocks.1.attn.pool_q.pool.weight"].grad, atol=1e-4, rtol=1e-3)


def test_pyslowfast_checkpoint_gives_torchvision_logits(torchvision_model, tmp_path):
    path = tmp_path / "MViTv2_S_16x4_k400.pyth"
    # PySlowFast's file: the weights under model_state beside training metadata.
    torch.save({"epoch": 200, "model_state": _pyslowfast_state(torchvision_model.state_dict())}, path)
    model = create_model("mvit_v2_s", pretrained=path, num_classes=NUM_CLASSES, **SMALL).eval()
    clip = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(clip), torchvision_model(clip), atol=1e-4, rtol=0)


def test_position_bias_and_residual_pooling_each_change_the_logits(torchvision_model):
    """The comparison above can fail: without either MViTv2 change the logits move well past 1e-4."""
    model = MViT(num_classes=NUM_CLASSES, **SMALL).eval()
    model.load_state_dict(checkpoint_filter(dict(torchvision_model.state_dict()), model))
    clip = _clip()
    with torch.no_grad():
        reference = model(clip)
        model.blocks[5].attn.residual_pooling = False
        assert (model(clip) - reference).abs().max() > 1e-2
        model.blocks[5].attn.residual_pooling = True
        model.blocks[0].attn.rel_pos_w.zero_()
        assert (model(clip) - reference).abs().max() > 1e-2


def test_full_size_pyslowfast_names_and_shapes_map_onto_mvit_v2_s():
    """On the meta device: torchvision's full mvit_v2_s in PySlowFast's names, at PySlowFast's shapes."""
    with torch.device("meta"):
        reference = torchvision.models.video.mvit_v2_s(weights=None)
        model = mvit_v2_s()
    state = _pyslowfast_state(reference.state_dict())
    # PySlowFast shapes at 16 x 224 (an 8 x 56 x 56 grid): table rows 2 * max(q, kv grid) - 1.
    expected = {
        "patch_embed.proj.weight": (96, 3, 3, 7, 7), "cls_token": (1, 1, 96),
        "blocks.0.attn.qkv.weight": (288, 96), "blocks.0.attn.pool_q.weight": (96, 1, 3, 3, 3),
        "blocks.0.attn.rel_pos_h": (111, 96), "blocks.0.attn.rel_pos_t": (15, 96),
        "blocks.1.attn.qkv.weight": (576, 96), "blocks.1.proj.weight": (192, 96),
        "blocks.1.attn.rel_pos_w": (55, 96), "blocks.14.attn.rel_pos_h": (27, 96),
        "blocks.15.attn.rel_pos_h": (13, 96), "blocks.15.mlp.fc1.weight": (3072, 768),
        "norm.weight": (768,), "head.projection.weight": (400, 768),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    filtered = checkpoint_filter(state, model)
    own = model.state_dict()
    assert {k: v.shape for k, v in filtered.items()} == {k: v.shape for k, v in own.items()}
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == 34_537_744  # torchvision's num_params
    config = get_model_config("mvit_v2_s")
    assert abs(count / (config.reference_params_m * 1e6) - 1) < 0.005
    assert (config.num_frames, config.sampling_rate, config.crop_size) == (16, 4, 224)
    assert config.mean == (0.45, 0.45, 0.45) and config.std == (0.225, 0.225, 0.225)


def test_mvit_v2_b_is_pyslowfast_mvitv2_b_32x3():
    """PySlowFast configs/Kinetics/MVITv2_B_32x3.yaml: DEPTH 24, DIM_MUL / HEAD_MUL at blocks 2, 5, 21,
    POOL_Q_STRIDE 1x2x2 there, POOL_KV_STRIDE_ADAPTIVE 1x8x8, 32 frames; built as torchvision's MViT."""
    stage = [0] * 2 + [1] * 3 + [2] * 16 + [3] * 3
    kv = {0: [1, 8, 8], 1: [1, 4, 4], 2: [1, 2, 2], 3: [1, 1, 1]}
    setting = [
        tv_mvit.MSBlockConfig(
            num_heads=2 ** s, input_channels=96 * 2 ** (s - 1 if i in (2, 5, 21) else s),
            output_channels=96 * 2 ** s, kernel_q=[3, 3, 3], kernel_kv=[3, 3, 3],
            stride_q=[1, 2, 2] if i in (2, 5, 21) else [1, 1, 1], stride_kv=kv[s])
        for i, s in enumerate(stage)
    ]
    with torch.device("meta"):
        reference = tv_mvit.MViT(spatial_size=(224, 224), temporal_size=32, block_setting=setting,
                                 residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True,
                                 proj_after_attn=True)
        model = mvit_v2_b()
    filtered = checkpoint_filter(dict(reference.state_dict()), model)
    assert {k: v.shape for k, v in filtered.items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.blocks[0].attn.rel_pos_t.shape == (31, 96)  # a 16-frame token grid
    count = sum(p.numel() for p in model.parameters())
    config = get_model_config("mvit_v2_b")
    assert abs(count / (config.reference_params_m * 1e6) - 1) < 0.005  # 51.2M (MViTv2 paper, Table 3)
    assert (config.num_frames, config.sampling_rate) == (32, 3)
    assert builder_kwargs("mvit_v2_b")["drop_path_rate"] == 0.3  # DROPPATH_RATE


def test_block_layout_is_pyslowfast_adaptive_kv_stride():
    layout = block_layout(depth=16, stage_starts=(1, 3, 14), embed_dim=96, num_heads=1,
                          q_stride=(1, 2, 2), kv_stride=(1, 8, 8))
    assert [b["kv_stride"][1] for b in layout] == [8, 4, 4] + [2] * 11 + [1, 1]  # torchvision's stride_kv
    assert [b["num_heads"] for b in layout] == [1, 2, 2] + [4] * 11 + [8, 8]
    assert [(b["dim"], b["dim_out"]) for b in layout if b["dim"] != b["dim_out"]] == [(96, 192), (192, 384),
                                                                                        (384, 768)]
    with pytest.raises(ValueError, match="stage_starts"):
        block_layout(depth=4, stage_starts=(3, 1), embed_dim=8, num_heads=1, q_stride=(1, 2, 2),
                     kv_stride=(1, 2, 2))


def test_checkpoint_at_another_size_is_resampled_on_load(tmp_path):
    """A 4-frame 64-px checkpoint in an 8-frame 96-px model: tables resampled on load as in the forward."""
    torch.manual_seed(0)
    source = MViT(num_classes=NUM_CLASSES, **SMALL).eval()
    path = tmp_path / "small.pt"
    torch.save({"model": source.state_dict()}, path)
    target = create_model("mvit_v2_s", pretrained=path, num_classes=NUM_CLASSES,
                          **{**SMALL, "num_frames": 8, "img_size": 96}).eval()
    assert target.blocks[0].attn.rel_pos_t.shape == (7, 12) != source.blocks[0].attn.rel_pos_t.shape
    clip = _clip(frames=8, size=96, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(target(clip), source(clip), atol=1e-5, rtol=0)


def test_trains_with_drop_path_and_rejects_bad_input():
    torch.manual_seed(0)
    model = MViT(num_classes=NUM_CLASSES, num_frames=4, img_size=32, embed_dim=8, depth=3,
                 stage_starts=(1, 2), kv_stride=(1, 4, 4), drop_path_rate=0.3)
    model(_clip(size=32)).square().sum().backward()
    # Only the class token is classified, and in the last block it is a query without position
    # bias or residual pooling: that block's pooled patch queries and tables never reach the logits.
    unused = {f"blocks.2.attn.{name}" for name in ("pool_q.weight", "rel_pos_h", "rel_pos_w", "rel_pos_t")}
    trained = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == {name for name, _ in model.named_parameters()} - unused
    with pytest.raises(ValueError, match="B x C x T x H x W"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        MViT(embed_dim=10, num_heads=4)
