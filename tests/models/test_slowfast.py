"""SlowFast: parity with pytorchvideo, checkpoint formats, inflation of the Slow pathway, shapes."""

from __future__ import annotations

import pytest
import timm
import torch
from pytorchvideo.models import hub
from pytorchvideo.models.slowfast import create_slowfast

from tests.models.resnet_helpers import calibrate_bn, pytorchvideo_to_pyslowfast, save_pyth
from videocls.models import create_model, get_model_config
from videocls.models.layers import inflate_from_2d
from videocls.models.slowfast import checkpoint_filter  # importing registers the models

TINY = {"width": 16, "stage_blocks": (1, 1, 1, 1)}  # Fast pathway: 16 / 8 = 2 channels


def _clips(alpha: int, slow_frames: int = 4, size: int = 32, batch: int = 1) -> list[torch.Tensor]:
    slow = torch.randn(batch, 3, slow_frames, size, size)
    return [slow, torch.randn(batch, 3, alpha * slow_frames, size, size)]


def _tiny_reference(**kwargs) -> torch.nn.Module:
    """pytorchvideo SlowFast with one block per stage (its "depth 18") and a 16-channel stem."""
    return create_slowfast(model_depth=18, stem_dim_outs=(16, 2), **kwargs)


# pytorchvideo's heads average-pool with a fixed kernel; sized for 2 + 8 frames of 32 x 32. R101
# at full width takes half a minute on a 2-core CPU: its 23 res4 blocks and fusion kernel 5 are
# checked at half width (the parameter-count test covers the full-size shapes).
@pytest.mark.parametrize("name, width", [("slowfast_r50", 64), ("slowfast_r101", 32)])
def test_pytorchvideo_checkpoint_gives_same_logits(name, width, tmp_path):
    torch.manual_seed(0)
    clips = _clips(alpha=4, slow_frames=2)
    reference = getattr(hub, name)(
        stem_dim_outs=(width, width // 8), head_pool_kernel_sizes=((2, 1, 1), (8, 1, 1))
    )
    calibrate_bn(reference, list(clips))
    path = save_pyth(tmp_path / f"{name}.pyth", reference.state_dict())

    model = create_model(name, pretrained=path, width=width).eval()
    with torch.no_grad():
        expected, got = reference(list(clips)), model(clips)
    assert expected.shape == (1, 400)
    assert (got - expected).abs().max() <= 1e-4


def test_4x16_matches_pytorchvideo_with_alpha_8_and_fusion_kernel_5(tmp_path):
    torch.manual_seed(0)
    clips = _clips(alpha=8)
    reference = _tiny_reference(
        slowfast_fusion_conv_kernel_size=(5, 1, 1),
        slowfast_fusion_conv_stride=(8, 1, 1),
        head_pool_kernel_sizes=((4, 1, 1), (32, 1, 1)),
    )
    calibrate_bn(reference, list(clips))
    path = save_pyth(tmp_path / "SLOWFAST_4x16_R50_tiny.pyth", reference.state_dict())

    model = create_model("slowfast_r50_4x16", pretrained=path, **TINY).eval()
    assert model.lateral.stem.conv.kernel_size == (5, 1, 1) and model.lateral.stem.conv.stride == (8, 1, 1)
    with torch.no_grad():
        assert (model(clips) - reference(list(clips))).abs().max() <= 1e-4


def test_pyslowfast_checkpoint_gives_same_logits(tmp_path):
    torch.manual_seed(0)
    clips = _clips(alpha=4)
    reference = calibrate_bn(_tiny_reference(head_pool_kernel_sizes=((4, 1, 1), (16, 1, 1))), list(clips))
    state = pytorchvideo_to_pyslowfast(reference.state_dict())
    assert {"s1_fuse.conv_f2s.weight", "s4_fuse.bn.weight", "s5.pathway1_res0.branch2.c.weight"} <= set(state)
    path = save_pyth(tmp_path / "SLOWFAST_8x8_R50_tiny.pyth", state)

    model = create_model("slowfast_r50", pretrained=path, **TINY).eval()
    with torch.no_grad():
        assert (model(clips) - reference(list(clips))).abs().max() <= 1e-4


def test_checkpoint_filter_names():
    pyslowfast = ["s1_fuse.bn.running_var", "s4_fuse.conv_f2s.weight", "s1.pathway1_stem.conv.weight",
                  "s5.pathway1_res2.branch2.b_bn.bias", "s3.pathway0_res0.branch1.weight"]
    pytorchvideo = ["blocks.3.multipathway_fusion.norm.weight", "blocks.6.proj.weight",
                    "blocks.2.multipathway_blocks.0.res_blocks.0.branch1_conv.weight",
                    "blocks.0.multipathway_blocks.1.norm.running_mean"]

    def rename(keys: list[str]) -> list[str]:
        return sorted(checkpoint_filter(dict.fromkeys(keys, torch.zeros(1)), model=None))

    assert rename(pyslowfast) == [
        "fast.res5.2.bn_b.bias",
        "fast.stem.conv.weight",
        "lateral.res4.conv.weight",
        "lateral.stem.bn.running_var",
        "slow.res3.0.shortcut.conv.weight",
    ]
    assert rename(pytorchvideo) == [
        "fast.stem.bn.running_mean",
        "head.proj.weight",
        "lateral.res4.bn.weight",
        "slow.res3.0.shortcut.conv.weight",
    ]


@pytest.mark.parametrize(
    "name, params_m", [("slowfast_r50", 34.57), ("slowfast_r101", 62.83), ("slowfast_r50_4x16", 34.48)]
)
def test_parameter_count_matches_reference(name, params_m):
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(params_m, rel=0.005)
    assert model.head.proj.in_features == 2048 + 256
    assert get_model_config(name).reference_params_m == pytest.approx(params_m, rel=0.005)


def test_new_num_classes_reinitialises_only_the_classifier(tmp_path):
    torch.manual_seed(0)
    reference = _tiny_reference()  # 400 classes
    path = save_pyth(tmp_path / "slowfast.pyth", reference.state_dict())
    model = create_model("slowfast_r50", pretrained=path, num_classes=7, **TINY)
    expected = checkpoint_filter(reference.state_dict(), model)

    assert model.head.proj.weight.shape == (7, 16 * 32 + 2 * 32)
    own = model.state_dict()
    assert set(own) == set(expected)
    for key, value in own.items():
        if key.startswith("head.proj."):
            assert value.shape != expected[key].shape
        else:
            assert torch.equal(value, expected[key]), key


@torch.no_grad()
def test_inflation_fills_the_slow_pathway_and_cuts_it_off_from_the_laterals():
    torch.manual_seed(0)
    state_2d = timm.create_model("resnet50", pretrained=False).state_dict()
    model = create_model("slowfast_r50").eval()
    fast_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("slow.")}

    left = inflate_from_2d(model, state_2d)
    assert sorted(left) == sorted(fast_before)  # Fast pathway, laterals, classifier
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in fast_before.items())
    # res2's first block sees 64 stem channels + 16 lateral channels; res4 has temporal kernel 3.
    conv = own["slow.res2.0.conv_a.weight"]
    assert conv.shape == (64, 80, 1, 1, 1)
    assert torch.equal(conv[:, :64, 0], state_2d["layer1.0.conv1.weight"])
    assert not conv[:, 64:].any()
    conv = own["slow.res4.0.conv_a.weight"]
    assert conv.shape == (256, 512 + 128, 3, 1, 1)
    for t in range(3):
        assert torch.allclose(conv[:, :512, t], state_2d["layer3.0.conv1.weight"] / 3)
    assert torch.equal(own["slow.res5.2.bn_c.running_var"], state_2d["layer4.2.bn3.running_var"])

    slow, fast = _clips(alpha=4, slow_frames=2)
    pooled = [model.forward_head(model.forward_features([slow, f]), pre_logits=True) for f in (fast, -fast)]
    assert torch.equal(pooled[0][:, :2048], pooled[1][:, :2048])  # Slow features ignore the Fast clip
    assert not torch.equal(pooled[0][:, 2048:], pooled[1][:, 2048:])


@pytest.mark.parametrize("name", ["slowfast_r50", "slowfast_r101", "slowfast_r50_4x16"])
def test_tiny_model_trains_on_any_clip_size(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **TINY)
    for slow_frames, size in [(4, 32), (3, 40)]:
        logits = model(_clips(model.alpha, slow_frames, size, batch=2))
        assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_rejects_bad_inputs_and_widths():
    model = create_model("slowfast_r50", num_classes=5, **TINY)
    with pytest.raises(TypeError, match=r"\[slow, fast\]"):
        model(torch.randn(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="T_fast = 4 \\* T_slow"):
        model([torch.randn(1, 3, 4, 32, 32), torch.randn(1, 3, 8, 32, 32)])
    with pytest.raises(ValueError, match="divisible by beta_inv"):
        create_model("slowfast_r50", width=12)


@torch.no_grad()
def test_compiled_model_matches_eager():
    # One compile check for both families (SlowFast's blocks are ResNet3d's). aot_eager traces
    # with Dynamo and AOTAutograd (fullgraph: any graph break fails) but skips Inductor's C++
    # codegen, which takes over a minute on a 2-core CPU.
    torch.manual_seed(0)
    model = create_model("slowfast_r50", num_classes=5, **TINY).eval()
    clips = _clips(alpha=4)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert (compiled(clips) - model(clips)).abs().max() <= 1e-4
