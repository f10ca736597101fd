"""X3D: parity with pytorchvideo's hub models, PySlowFast checkpoints, the test-time heads, and
parameters and GFLOPs against the published tables."""

from __future__ import annotations

import math

import pytest
import torch
from pytorchvideo.models import hub
from pytorchvideo.models.x3d import create_x3d

from tests.models.resnet_helpers import calibrate_bn, save_pyth
from videocls.models import create_model, get_model_config
from videocls.models.complexity import count_gflops
from videocls.models.x3d import checkpoint_filter  # importing registers the models

# pytorchvideo's hub builders are ``create_x3d`` with a clip length and crop (which only size the
# head's pool) and, for L, depth factor 5.0; the same network at a 32-px crop is cheap to run.
HUB = {"x3d_xs": {}, "x3d_s": {}, "x3d_m": {}, "x3d_l": {"depth_factor": 5.0}}
SHALLOW = {"depth_factor": 1.0}  # 1, 2, 5, 3 blocks: the tests of heads and formats need no more
SHALLOW_BLOCKS = (1, 2, 5, 3)


@torch.no_grad()
def _reference(name: str, *, frames: int, crop: int, clip: torch.Tensor, **kwargs) -> torch.nn.Module:
    """pytorchvideo's X3D with random BN statistics and a classifier scaled to unit-size logits."""
    torch.manual_seed(0)
    model = create_x3d(input_clip_length=frames, input_crop_size=crop, **{**HUB[name], **kwargs})
    calibrate_bn(model, clip)
    proj = model.blocks[5].proj
    proj.weight.normal_(std=0.2)
    proj.bias.normal_(std=0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["x3d_xs"])  # L: the same blocks, deeper (key/shape test below)
def test_pytorchvideo_checkpoint_gives_same_logits(name, tmp_path):
    clip = torch.randn(2, 3, 4, 32, 32)
    reference = _reference(name, frames=4, crop=32, clip=clip, head_activation=None)
    path = save_pyth(tmp_path / f"{name}.pyth", reference.state_dict())
    with torch.no_grad():
        expected = reference(clip)
        assert expected.shape == (2, 400) and expected.std() > 0.3  # logits that see every weight
        for bn in (True, False):  # PySlowFast's res2 shortcut (an identity BN here), pytorchvideo's
            model = create_model(name, pretrained=path, res2_shortcut_bn=bn).eval()
            assert (model(clip) - expected).abs().max() <= 1e-4


def test_test_time_heads_match_pytorchvideo_at_a_larger_input(tmp_path):
    """Trained for 2 frames at 32 px, tested on 4 x 64 x 64: 3 x 2 x 2 window positions, pooled before
    lin_5 and its ReLU. pytorchvideo's hub head averages softmax probabilities ("window_softmax",
    as PySlowFast); without its activation it averages logits ("window")."""
    clip = torch.randn(1, 3, 4, 64, 64)
    for pool, activation in (("window_softmax", torch.nn.Softmax), ("window", None)):
        reference = _reference("x3d_xs", frames=2, crop=32, clip=clip, head_activation=activation, **SHALLOW)
        path = save_pyth(tmp_path / "x3d.pyth", reference.state_dict())
        model = create_model("x3d_xs", pretrained=path, head_pool=pool, head_pool_frames=2, head_pool_crop=32,
                             stage_blocks=SHALLOW_BLOCKS)
        with torch.no_grad():
            expected, got = reference(clip), model.eval()(clip)
            global_pool = create_model("x3d_xs", pretrained=path, stage_blocks=SHALLOW_BLOCKS).eval()(clip)
        if pool == "window_softmax":  # our head returns the log of pytorchvideo's mean probabilities
            expected, global_pool = expected.log(), global_pool.log_softmax(-1)
        assert (got - expected).abs().max() <= 1e-4
        assert (global_pool - expected).abs().max() > 1e-3  # the whole-map mean is another function


# Written from PySlowFast's module names (stem_helper.X3DStem, resnet_helper.ResBlock/X3DTransform,
# operators.SE, head_helper.X3DHead), independently of the filter under test.
_PTV_TO_PYSLOWFAST = {
    "branch1_conv": "branch1", "branch1_norm": "branch1_bn",
    "branch2.conv_a": "branch2.a", "branch2.norm_a": "branch2.a_bn",
    "branch2.conv_b": "branch2.b", "branch2.norm_b.0": "branch2.b_bn",
    "branch2.norm_b.1.block.0": "branch2.se.fc1", "branch2.norm_b.1.block.2": "branch2.se.fc2",
    "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn",
    "pool.pre_conv": "conv_5", "pool.pre_norm": "conv_5_bn", "pool.post_conv": "lin_5", "proj": "projection",
}


def _pyslowfast_state(state: dict[str, torch.Tensor], res2_shortcut_bn: dict[str, torch.Tensor]):
    """A pytorchvideo X3D state dict in PySlowFast's names, with the res2 shortcut BN it lacks."""
    out = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        parts = module.split(".")
        block = int(parts[1])
        if block == 0:  # pytorchvideo's conv_t is the 1x3x3 conv, PySlowFast's conv_xy
            name = {"conv.conv_t": "conv_xy", "conv.conv_xy": "conv", "norm": "bn"}[".".join(parts[2:])]
            name = f"s1.pathway0_stem.{name}"
        elif parts[2] == "res_blocks":
            name = f"s{block + 1}.pathway0_res{parts[3]}.{_PTV_TO_PYSLOWFAST['.'.join(parts[4:])]}"
        else:
            name = f"head.{_PTV_TO_PYSLOWFAST['.'.join(parts[2:])]}"
        out[f"{name}.{leaf}"] = value
    out.update({f"s2.pathway0_res0.branch1_bn.{k}": v for k, v in res2_shortcut_bn.items()})
    return out


def _bn(channels: int, *, identity: bool) -> dict[str, torch.Tensor]:
    if identity:
        return {"weight": torch.ones(channels), "bias": torch.zeros(channels),
                "running_mean": torch.zeros(channels), "running_var": torch.full((channels,), 1 - 1e-5),
                "num_batches_tracked": torch.tensor(0)}
    return {"weight": torch.rand(channels) + 0.5, "bias": torch.randn(channels),
            "running_mean": torch.randn(channels), "running_var": torch.rand(channels) + 0.5,
            "num_batches_tracked": torch.tensor(7)}


def test_pyslowfast_checkpoint_gives_same_logits(tmp_path):
    clip = torch.randn(2, 3, 4, 32, 32)
    reference = _reference("x3d_xs", frames=4, crop=32, clip=clip, head_activation=None, **SHALLOW)
    state = _pyslowfast_state(reference.state_dict(), _bn(24, identity=True))
    assert {"s1.pathway0_stem.conv_xy.weight", "s5.pathway0_res2.branch2.c_bn.running_var",
            "s4.pathway0_res4.branch2.se.fc2.bias", "head.conv_5_bn.weight",
            "head.lin_5.weight"} <= set(state)
    model = create_model("x3d_xs", pretrained=save_pyth(tmp_path / "x3d_xs.pyth", state),
                         stage_blocks=SHALLOW_BLOCKS).eval()
    with torch.no_grad():
        assert (model(clip) - reference(clip)).abs().max() <= 1e-4

    # A BN that is not the identity lands on res2's shortcut; a model without one refuses the file.
    bn = _bn(24, identity=False)
    path = save_pyth(tmp_path / "x3d_xs_bn.pyth", _pyslowfast_state(reference.state_dict(), bn))
    loaded = create_model("x3d_xs", pretrained=path, stage_blocks=SHALLOW_BLOCKS).res2[0].shortcut.bn
    loaded = loaded.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in bn.items())
    with pytest.raises(ValueError, match="res2_shortcut_bn=True"):
        create_model("x3d_xs", pretrained=path, res2_shortcut_bn=False, stage_blocks=SHALLOW_BLOCKS)


@pytest.mark.parametrize("name", list(HUB))
def test_full_size_state_dicts_map_key_for_key_and_parameters_match(name):
    """The hub's full-size models, in pytorchvideo's and PySlowFast's names, fit ours shape for
    shape; parameter counts equal the hub's (plus res2's shortcut BN) and the published tables."""
    with torch.device("meta"):
        reference = getattr(hub, name)(pretrained=False)
        ours = create_model(name)
        pytorchvideo_layout = create_model(name, res2_shortcut_bn=False)
    state = reference.state_dict()
    for model, source in ((pytorchvideo_layout, state), (ours, state),
                          (ours, _pyslowfast_state(state, _bn(24, identity=True)))):
        mapped = {k: tuple(v.shape) for k, v in checkpoint_filter(source, model).items()}
        assert mapped == {k: tuple(v.shape) for k, v in model.state_dict().items()}

    count = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in pytorchvideo_layout.parameters()) == count
    assert sum(p.numel() for p in ours.parameters()) == count + 2 * 24
    assert round(count / 1e6, 2) == get_model_config(name).reference_params_m  # pytorchvideo's zoo
    assert round(count / 1e6, 1) == (6.2 if name == "x3d_l" else 3.8)  # PySlowFast's zoo


def _conv_gflops(model: torch.nn.Module, frames: int, crop: int) -> tuple[float, float]:
    """The project's count of one ``frames`` x ``crop``^2 clip, less BN (fvcore: 2 FLOPs an element in
    eval mode) and the classifier, both counted by hand; and the part that runs after a global
    pool (lin_5, SE), which does not grow with the clip."""
    bn_elements = {}
    hooks = [m.register_forward_pre_hook(lambda m, x: bn_elements.__setitem__(m, int(x[0].numel())))
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    total = float(count_gflops(model, torch.zeros(1, 3, frames, crop, crop)))
    for hook in hooks:
        hook.remove()
    proj = model.head.proj
    pooled = model.head.lin_5.weight.numel() + sum(
        m.fc1.weight.numel() + m.fc2.weight.numel() for m in model.modules() if hasattr(m, "fc1"))
    return total - (2 * sum(bn_elements.values()) + proj.in_features * proj.out_features) / 1e9, pooled / 1e9


def test_gflops_match_the_published_table():
    """PySlowFast's model zoo (the paper's Table 3): 0.60 / 1.96 / 4.73 / 18.37 GFLOPs at the
    training clip and crop. They count convolutions (their fvcore counted neither BN nor the
    classifier; the project's counter does: ~4% more, in the README). X3D never strides in time,
    so a clip of T frames costs T times one frame, less what runs after a global pool: counted at
    one frame (proved at a small crop), no model needs a full-clip forward."""
    torch.manual_seed(0)
    xs = create_model("x3d_xs").eval()
    four_frames, pooled = _conv_gflops(xs, 4, 64)
    one_frame, _ = _conv_gflops(xs, 1, 64)
    assert math.isclose(four_frames, 4 * (one_frame - pooled) + pooled, rel_tol=1e-9)
    for name, published in (("x3d_xs", 0.60), ("x3d_s", 1.96), ("x3d_m", 4.73), ("x3d_l", 18.37)):
        frames, crop, _ = get_model_config(name).flops_input
        one_frame, pooled = _conv_gflops(create_model(name).eval(), 1, crop)
        clip = frames * (one_frame - pooled) + pooled
        assert round(clip, 2) == get_model_config(name).reference_gflops == published


def test_shapes_and_pre_logits():
    model = create_model("x3d_s", num_classes=7, width=8, stage_blocks=(1, 2, 1, 1), head_features=32).eval()
    clip = torch.randn(2, 3, 5, 40, 40)
    with torch.no_grad():
        features = model.forward_features(clip)
        assert features.shape == (2, 64, 5, 2, 2)  # no temporal stride; 40 px -> ceil(40 / 32)
        assert model.forward_head(features, pre_logits=True).shape == (2, 32)
        assert model(clip).shape == (2, 7)
    assert [type(b.se).__name__ for b in model.res3] == ["SqueezeExcite3d", "Identity"]  # every other block
    with pytest.raises(ValueError, match="B x C x T x H x W"):
        model(torch.randn(3, 5, 40, 40))
