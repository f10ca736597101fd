"""C2D / I3D / Slow ResNet-50: parity with pytorchvideo, checkpoint formats, inflation, shapes."""

from __future__ import annotations

import pytest
import timm
import torch
from pytorchvideo.models import hub
from pytorchvideo.models.resnet import create_resnet

from tests.models.resnet_helpers import calibrate_bn, pytorchvideo_to_pyslowfast, save_pyth
from videocls.models import create_model, get_model_config
from videocls.models.layers import inflate_from_2d
from videocls.models.resnet3d import checkpoint_filter  # importing registers the models

TINY = {"width": 8, "stage_blocks": (1, 1, 1, 1)}


def _tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=5, **TINY, **kwargs)


# pytorchvideo's heads average-pool with a fixed kernel; size it for the 1 x 3 x 4 x 32 x 32 test
# clip (res5: T=2 after the temporal pool for C2D/I3D, T=4 for Slow; 1 x 1 spatially).
REFERENCES = {
    "c2d_r50": lambda: hub.c2d_r50(head_pool_kernel_size=(2, 1, 1)),
    "i3d_r50": lambda: hub.i3d_r50(head_pool_kernel_size=(2, 1, 1)),
    # hub.slow_r50 fixes its head pool; these are its arguments with the pool resized.
    "slow_r50": lambda: create_resnet(stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(4, 1, 1)),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_pytorchvideo_checkpoint_gives_same_logits(name, tmp_path):
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 4, 32, 32)
    reference = calibrate_bn(REFERENCES[name](), clip)
    path = save_pyth(tmp_path / f"{name}.pyth", reference.state_dict())

    model = create_model(name, pretrained=path).eval()
    with torch.no_grad():
        expected, got = reference(clip), model(clip)
    assert expected.shape == (1, 400)
    assert (got - expected).abs().max() <= 1e-4


def test_pyslowfast_checkpoint_gives_same_logits(tmp_path):
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 4, 32, 32)
    reference = calibrate_bn(hub.i3d_r50(stem_dim_out=8, head_pool_kernel_size=(2, 1, 1)), clip)
    state = pytorchvideo_to_pyslowfast(reference.state_dict())
    assert "s2.pathway0_res0.branch2.a_bn.running_var" in state and "head.projection.weight" in state
    path = save_pyth(tmp_path / "I3D_8x8_R50_tiny.pyth", state)

    model = create_model("i3d_r50", pretrained=path, width=8).eval()
    with torch.no_grad():
        assert (model(clip) - reference(clip)).abs().max() <= 1e-4


def test_checkpoint_filter_names():
    state = {
        k: torch.zeros(1)
        for k in ["s1.pathway0_stem.bn.running_mean", "s3.pathway0_res0.branch1_bn.weight",
                  "s5.pathway0_res2.branch2.c.weight", "head.projection.bias"]
    }
    renamed = checkpoint_filter(state, model=None)
    assert sorted(renamed) == ["head.proj.bias", "res3.0.shortcut.bn.weight", "res5.2.conv_c.weight",
                               "stem.bn.running_mean"]


@pytest.mark.parametrize(
    "name, params_m", [("c2d_r50", 24.33), ("i3d_r50", 28.04), ("slow_r50", 32.45)]
)
def test_parameter_count_matches_reference(name, params_m):
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(params_m, rel=0.005)
    assert get_model_config(name).reference_params_m == pytest.approx(params_m, rel=0.005)


def test_new_num_classes_reinitialises_only_the_classifier(tmp_path):
    torch.manual_seed(0)
    reference = hub.c2d_r50(stem_dim_out=8)  # 400 classes
    path = save_pyth(tmp_path / "c2d.pyth", reference.state_dict())
    model = create_model("c2d_r50", pretrained=path, num_classes=7, width=8)
    expected = checkpoint_filter(reference.state_dict(), model)

    assert model.head.proj.weight.shape == (7, 256)
    own = model.state_dict()
    assert set(own) == set(expected)
    for key, value in own.items():
        if key.startswith("head.proj."):
            assert value.shape != expected[key].shape
        else:
            assert torch.equal(value, expected[key]), key


@pytest.fixture(scope="module")
def resnet50_2d():
    """timm's ResNet-50 (random weights, calibrated BN) and an image."""
    torch.manual_seed(0)
    images = torch.randn(1, 3, 32, 32)
    return calibrate_bn(timm.create_model("resnet50", pretrained=False), images), images


@torch.no_grad()
def test_inflated_c2d_on_a_still_clip_pools_the_2d_features(resnet50_2d):
    net2d, images = resnet50_2d
    model = create_model("c2d_r50").eval()
    left = inflate_from_2d(model, net2d.state_dict())
    assert left == ["head.proj.weight", "head.proj.bias"]

    clip = images.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # temporal max-pool included
    features = model.forward_head(model.forward_features(clip), pre_logits=True)
    expected = net2d.forward_head(net2d.forward_features(images), pre_logits=True)
    assert features.shape == expected.shape == (1, 2048)
    assert (features - expected).abs().max() <= 1e-4


@torch.no_grad()
def test_inflated_i3d_on_a_still_clip_gives_the_2d_features_inside_the_clip(resnet50_2d):
    net2d, images = resnet50_2d
    model = create_model("i3d_r50").eval()
    inflate_from_2d(model, net2d.state_dict())
    # Zero temporal padding changes the frames near the clip's borders. The 5-tap stem and the
    # 3-tap kernels of 3 res2 blocks (at T), then of 2 + 3 + 1 blocks (at T/2, after the pool),
    # give res5 frame t the input frames 2t - 17 .. 2t + 18: of 40 frames, res5 frames 9 and 10
    # see no padding.
    maps = model.forward_features(images.unsqueeze(2).expand(-1, -1, 40, -1, -1))
    expected = net2d.forward_features(images)
    assert maps.shape == (1, 2048, 20, 1, 1)
    assert (maps[:, :, 9:11] - expected.unsqueeze(2)).abs().max() <= 1e-4
    assert (maps[:, :, 0] - expected).abs().max() > 1e-2  # the border effect is real


def test_inflation_rejects_a_state_dict_that_is_not_a_resnet():
    with pytest.raises(ValueError, match="not a timm/torchvision ResNet"):
        inflate_from_2d(_tiny("c2d_r50"), {"weight": torch.zeros(1)})


def test_inflation_rejects_a_resnet_of_another_width(resnet50_2d):
    with pytest.raises(ValueError, match="does not inflate"):
        inflate_from_2d(_tiny("i3d_r50"), resnet50_2d[0].state_dict())


@pytest.mark.parametrize("name", ["c2d_r50", "i3d_r50", "slow_r50"])
def test_tiny_model_trains_on_any_clip_size(name):
    model = _tiny(name)
    for shape in [(2, 3, 8, 56, 56), (1, 3, 6, 40, 48)]:
        logits = model(torch.randn(shape))
        assert logits.shape == (shape[0], 5)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_rejects_a_clip_without_time_axis():
    with pytest.raises(ValueError, match="B x C x T x H x W"):
        _tiny("c2d_r50")(torch.randn(1, 3, 32, 32))


@torch.no_grad()
def test_c2d_ignores_frame_order_and_i3d_does_not():
    clip = torch.randn(2, 3, 8, 32, 32)
    c2d = calibrate_bn(_tiny("c2d_r50"), clip)
    i3d = calibrate_bn(_tiny("i3d_r50"), clip)
    # C2D: temporal kernels 1, max-pool over aligned frame pairs, global average: order-free.
    assert (c2d(clip) - c2d(clip.flip(2))).abs().max() <= 1e-5
    assert (i3d(clip) - i3d(clip.flip(2))).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["i3d_r50", "slowfast_r50"])
def test_zero_init_residual_opens_or_shuts_every_residual_branch(name):
    def final_bn_scales(model):
        return [m.bn_c.weight for m in model.modules() if hasattr(m, "bn_c")]

    extra = {"beta_inv": 4} if name == "slowfast_r50" else {}
    shut, open_ = _tiny(name, **extra), _tiny(name, zero_init_residual=False, **extra)
    assert len(final_bn_scales(shut)) == (8 if name == "slowfast_r50" else 4)
    assert all(torch.equal(w, torch.zeros_like(w)) for w in final_bn_scales(shut))
    assert all(torch.equal(w, torch.ones_like(w)) for w in final_bn_scales(open_))
    if name == "i3d_r50":
        # With every branch shut, a block is its shortcut: the branch's own convs get no gradient.
        clip = torch.randn(2, 3, 4, 32, 32)
        shut(clip).sum().backward()
        assert shut.res2[0].conv_a.weight.grad.abs().max() == 0
        open_(clip).sum().backward()
        assert open_.res2[0].conv_a.weight.grad.abs().max() > 0


@pytest.mark.parametrize("name", ["i3d_r50", "slowfast_r50"])
def test_stem_pool_off_doubles_the_feature_map(name):
    extra = {"beta_inv": 4} if name == "slowfast_r50" else {}
    clip = torch.randn(1, 3, 8, 64, 64)
    inputs = [clip[:, :, ::4], clip] if name == "slowfast_r50" else clip
    pooled, unpooled = _tiny(name, **extra).eval(), _tiny(name, stem_pool=False, **extra).eval()
    assert sum(p.numel() for p in pooled.parameters()) == sum(p.numel() for p in unpooled.parameters())
    with torch.no_grad():
        a, b = pooled.forward_features(inputs), unpooled.forward_features(inputs)
    for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        assert x.shape[-2:] == (2, 2) and y.shape[-2:] == (4, 4)
