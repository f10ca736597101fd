"""Test-time heads of the 3D ResNets and SlowFast: the fully convolutional ("window") heads equal
pytorchvideo's hub heads (logits) and PySlowFast's (softmax per position, then the mean) at a test
crop larger than the training crop; the global head does not."""

from __future__ import annotations

import pytest
import torch
from pytorchvideo.models import hub
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.slowfast import create_slowfast
from torch import nn

from tests.models.resnet_helpers import calibrate_bn, save_pyth
from videocls.models import create_model
from videocls.models.layers import ClassifierHead


def _reference_heads(reference: nn.Module, example) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorchvideo's logits (its hub head: no activation) and PySlowFast's test output (softmax
    at every position, then the mean: pytorchvideo's head with ``activation=Softmax``), from one
    pass through the backbone."""
    head = reference.blocks[-1]
    with torch.no_grad():
        x = list(example) if isinstance(example, list) else example  # pytorchvideo edits lists in place
        for block in reference.blocks[:-1]:
            x = block(x)
        logits = head(list(x) if isinstance(x, list) else x)
        head.activation = nn.Softmax(dim=1)
        probs = head(list(x) if isinstance(x, list) else x)
        head.activation = None
    return logits, probs


def _our_heads(model: nn.Module, example) -> dict[str, torch.Tensor]:
    """Our logits with each head pooling, from one pass through the backbone."""
    out = {}
    with torch.no_grad():
        features = model.forward_features(example)
        for pool in ("global", "window", "window_softmax"):
            model.head.pool = pool  # the windows were fixed at construction; only the mode changes
            out[pool] = model.forward_head(features)
    return out


def _check(ours: dict[str, torch.Tensor], logits: torch.Tensor, probs: torch.Tensor) -> None:
    assert (ours["window"] - logits).abs().max() <= 1e-4
    assert (ours["window_softmax"].softmax(-1) - probs).abs().max() <= 1e-5
    # The test is able to fail: the global mean weighs the map's border as much as its centre.
    assert (ours["global"] - logits).abs().max() > 1e-3


@torch.no_grad()
def test_i3d_window_heads_equal_pytorchvideo_and_pyslowfast_at_256():
    """The recipe's case: trained at 224 (window 7 x 7), tested at 256 (8 x 8 res5 map, 2 x 2
    positions). Two frames (one after the temporal pool) keep it fast."""
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 2, 256, 256)
    reference = calibrate_bn(hub.i3d_r50(stem_dim_out=8, head_pool_kernel_size=(1, 7, 7)), clip)
    logits, probs = _reference_heads(reference, clip)
    model = create_model(
        "i3d_r50", width=8, head_pool="window", head_pool_frames=2, head_pool_crop=224
    ).eval()
    model.load_state_dict(_converted(reference, "i3d_r50", width=8))
    _check(_our_heads(model, clip), logits, probs)


@torch.no_grad()
def test_slowfast_window_heads_equal_pytorchvideo_and_pyslowfast_at_256():
    torch.manual_seed(0)
    clips = [torch.randn(1, 3, 2, 256, 256), torch.randn(1, 3, 8, 256, 256)]
    reference = create_slowfast(
        model_depth=18, stem_dim_outs=(16, 2), head_pool_kernel_sizes=((2, 7, 7), (8, 7, 7))
    )
    calibrate_bn(reference, list(clips))
    logits, probs = _reference_heads(reference, clips)
    tiny = {"width": 16, "stage_blocks": (1, 1, 1, 1)}
    model = create_model(
        "slowfast_r50", **tiny, head_pool="window", head_pool_frames=8, head_pool_crop=224
    ).eval()
    model.load_state_dict(_converted(reference, "slowfast_r50", **tiny))
    _check(_our_heads(model, clips), logits, probs)


# Slow and C2D at the same geometry scaled down: trained at 64 px (2 x 2 window), tested at 96
# (3 x 3 map, 2 x 2 positions). Slow keeps its 4 frames to res5, C2D pools its 2 to 1.
SCALED = {
    "slow_r50": (lambda: create_resnet(stem_conv_kernel_size=(1, 7, 7), stem_dim_out=8,
                                       head_pool_kernel_size=(4, 2, 2))),
    "c2d_r50": lambda: hub.c2d_r50(stem_dim_out=8, head_pool_kernel_size=(1, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(SCALED))
@torch.no_grad()
def test_resnet_window_heads_equal_pytorchvideo_at_a_larger_test_crop(name):
    torch.manual_seed(0)
    frames = 4 if name == "slow_r50" else 2
    clip = torch.randn(1, 3, frames, 96, 96)
    reference = calibrate_bn(SCALED[name](), clip)
    logits, probs = _reference_heads(reference, clip)
    model = create_model(name, width=8, head_pool="window", head_pool_frames=frames, head_pool_crop=64).eval()
    model.load_state_dict(_converted(reference, name, width=8))
    _check(_our_heads(model, clip), logits, probs)


def _converted(reference: nn.Module, name: str, **overrides) -> dict[str, torch.Tensor]:
    """The reference's weights in our names, through the registered checkpoint filter."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = save_pyth(Path(tmp) / "ref.pyth", reference.state_dict())
        return create_model(name, pretrained=path, **overrides).state_dict()


def test_window_head_weights_positions_as_overlapping_windows_do():
    """Hand-computed: a 3 x 3 map and a 2 x 2 window give 4 windows; the centre cell is in all
    4, edge cells in 2, corners in 1, so the pooled feature is sum(count * cell) / 16."""
    head = ClassifierHead(1, 1, dropout=0.0, pool="window", windows=[(1, 2, 2)])
    counts = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])
    for cells in (torch.arange(9.0).reshape(3, 3), torch.tensor([[0.0, 0, 0], [0, 16, 0], [0, 0, 5]])):
        expected = (counts * cells).sum().item() / 16
        assert head([cells.reshape(1, 1, 1, 3, 3)], pre_logits=True).item() == pytest.approx(expected)
    assert expected != pytest.approx(cells.mean().item())  # 21/16 vs 21/9: not the global mean


def test_window_softmax_is_the_log_of_the_mean_probability():
    torch.manual_seed(0)
    head = ClassifierHead(3, 4, dropout=0.0, pool="window_softmax", windows=[(1, 1, 1)]).eval()
    grid = torch.randn(2, 3, 1, 2, 2)
    per_position = [head.proj(grid[:, :, 0, i, j]).softmax(-1) for i in range(2) for j in range(2)]
    expected = torch.stack(per_position).mean(0)
    with torch.no_grad():
        out = head([grid])
    torch.testing.assert_close(out.exp(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.softmax(-1), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["i3d_r50", "slowfast_r50"])
@torch.no_grad()
def test_at_the_training_size_every_head_gives_the_same_logits(name):
    """One window position (and windows larger than the map): all three heads are the global mean."""
    torch.manual_seed(0)
    tiny = {"width": 16, "stage_blocks": (1, 1, 1, 1)}
    clip = torch.randn(1, 3, 8, 64, 64)
    example = [clip[:, :, ::4], clip] if name == "slowfast_r50" else clip
    model = create_model(name, **tiny, head_pool="window", head_pool_frames=8, head_pool_crop=64)
    calibrate_bn(model, example)
    heads = _our_heads(model, example)
    torch.testing.assert_close(heads["window"], heads["global"], atol=1e-6, rtol=0)
    torch.testing.assert_close(heads["window_softmax"], heads["global"], atol=1e-6, rtol=0)
    # A smaller clip than the window (4 frames, 32 px): the window covers the whole map.
    small = [example[0][:, :, :1, :32, :32], example[1][:, :, :4, :32, :32]] if name == "slowfast_r50" \
        else clip[:, :, :4, :32, :32]
    heads = _our_heads(model, small)
    torch.testing.assert_close(heads["window"], heads["global"], atol=1e-6, rtol=0)


def test_bad_head_settings_are_refused():
    with pytest.raises(ValueError, match="head_pool must be one of"):
        create_model("i3d_r50", width=8, head_pool="windowed")
    with pytest.raises(ValueError, match="leaves no res5 cell"):
        create_model("i3d_r50", width=8, head_pool="window", head_pool_crop=16)
    with pytest.raises(ValueError, match="leaves no res5 cell"):
        create_model("slowfast_r50", width=16, head_pool="window", head_pool_frames=2)
