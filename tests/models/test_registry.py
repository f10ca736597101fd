"""create_model's contract: class-count mismatch (refused for evaluation, announced for
fine-tuning), builder_kwargs, and initialisation from 2D ImageNet networks (init_2d)."""

from __future__ import annotations

import inspect
import logging

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from tests.models.resnet_helpers import calibrate_bn
from videocls.models import create_model, list_models
from videocls.models.layers import inflate_from_2d
from videocls.models.registry import builder_kwargs

TINY = {"width": 8, "stage_blocks": (1, 1, 1, 1)}


@pytest.fixture(scope="module")
def checkpoint_10(tmp_path_factory):
    """A 10-class tiny C2D saved as videocls saves runs' weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "run10.pt"
    torch.save({"model": create_model("c2d_r50", num_classes=10, **TINY).state_dict()}, path)
    return path


def test_strict_head_refuses_another_class_count_naming_file_and_counts(checkpoint_10):
    with pytest.raises(ValueError) as info:
        create_model("c2d_r50", pretrained=checkpoint_10, num_classes=20, strict_head=True, **TINY)
    message = str(info.value)
    assert str(checkpoint_10) in message and "10 classes" in message and "for 20" in message
    # Same count: loads, and the classifier is the file's.
    model = create_model("c2d_r50", pretrained=checkpoint_10, num_classes=10, strict_head=True, **TINY)
    saved = torch.load(checkpoint_10, weights_only=True)["model"]
    assert torch.equal(model.head.proj.weight, saved["head.proj.weight"])


def test_fine_tuning_says_it_makes_a_new_classifier(checkpoint_10, caplog):
    with caplog.at_level(logging.WARNING, logger="videocls.models.registry"):
        model = create_model("c2d_r50", pretrained=checkpoint_10, num_classes=20, **TINY)
    assert model.head.proj.weight.shape == (20, 256)
    expected = f"{checkpoint_10}: new 20-way classifier (checkpoint has 10 classes), randomly initialised"
    assert [r.getMessage() for r in caplog.records] == [expected]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videocls.models.registry"):
        create_model("c2d_r50", pretrained=checkpoint_10, num_classes=10, **TINY)
    assert not caplog.records  # nothing re-initialised, nothing said


@pytest.mark.parametrize("name", list_models())
def test_builder_kwargs_are_every_keyword_with_the_registered_defaults(name):
    kwargs = builder_kwargs(name)
    assert all(default is not inspect.Parameter.empty for default in kwargs.values()), kwargs
    assert kwargs["num_classes"] == 400 and "_target_" not in kwargs and "pretrained" not in kwargs
    # Passing every default back builds the registered model, parameter for parameter.
    with torch.device("meta"):
        default, explicit = create_model(name), create_model(name, **kwargs)
    assert {k: v.shape for k, v in default.state_dict().items()} == {
        k: v.shape for k, v in explicit.state_dict().items()
    }


def test_builder_kwargs_values_are_the_architectures():
    """Independent of the code: PySlowFast's _TEMPORAL_KERNEL_BASIS and the SlowFast paper."""
    assert builder_kwargs("i3d_r50")["temporal_kernels"] == ((3,), (3, 1), (3, 1), (1, 3))
    assert builder_kwargs("i3d_r50")["stem_temporal_kernel"] == 5
    assert builder_kwargs("slow_r50")["temporal_pool"] is False
    assert builder_kwargs("slowfast_r101")["stage_blocks"] == (3, 4, 23, 3)
    sf = builder_kwargs("slowfast_r50_4x16")
    assert (sf["alpha"], sf["beta_inv"], sf["fusion_kernel"]) == (8, 8, 5)
    assert builder_kwargs("timesformer_base")["embed_dim"] == 768
    assert builder_kwargs("i3d_r50")["head_pool"] == "global"
    with pytest.raises(KeyError, match="unknown model"):
        builder_kwargs("resnet50")


# ------------------------------------------------------------------------------ init_2d


@pytest.fixture(scope="module")
def torchvision_resnet50(tmp_path_factory):
    """torchvision's ResNet-50 (random weights, calibrated BN) saved as torchvision ships it."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    net = calibrate_bn(torchvision.models.resnet50(weights=None, num_classes=400), images)
    path = tmp_path_factory.mktemp("tv") / "resnet50-imagenet.pth"
    torch.save(net.state_dict(), path)
    return net, images, path


@torch.no_grad()
def test_c2d_from_a_torchvision_resnet_gives_its_logits_on_a_still_clip(torchvision_resnet50):
    net, images, path = torchvision_resnet50
    model = create_model("c2d_r50", init_2d=path).eval()
    assert not torch.equal(model.head.proj.weight, net.fc.weight)  # the 2D classifier is never taken over
    model.head.proj.load_state_dict(net.fc.state_dict())  # to compare logits, not only features
    clip = images.unsqueeze(2).expand(-1, -1, 4, -1, -1)
    expected = net(images)
    assert (model(clip) - expected).abs().max() <= 1e-4
    assert expected.abs().max() > 1e-2  # not a comparison of zeros


@torch.no_grad()
def test_i3d_from_a_torchvision_resnet_is_mean_inflated(torchvision_resnet50):
    """PySlowFast's inflation: the 2D kernel repeated over T and divided by T."""
    net, _, path = torchvision_resnet50
    model = create_model("i3d_r50", init_2d=path)
    stem = model.stem.conv.weight  # 64 x 3 x 5 x 7 x 7
    assert stem.shape[2] == 5
    for t in range(5):
        torch.testing.assert_close(stem[:, :, t], net.conv1.weight / 5, atol=0, rtol=0)
    torch.testing.assert_close(model.res3[0].conv_a.weight[:, :, 1], net.layer2[0].conv1.weight / 3)
    torch.testing.assert_close(model.res5[0].bn_c.running_var, net.layer4[0].bn3.running_var)


@torch.no_grad()
def test_slowfast_from_a_timm_safetensors_inflates_the_slow_pathway(torchvision_resnet50, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    state = timm.create_model("resnet50", pretrained=False).state_dict()
    path = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model("slowfast_r50", init_2d=path)
    torch.manual_seed(2)
    expected = create_model("slowfast_r50")
    inflate_from_2d(expected, state)
    for key, value in expected.state_dict().items():
        if key.startswith("slow."):
            assert torch.equal(model.state_dict()[key], value), key


def _tiny_vit(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    with torch.no_grad():
        for param in vit.parameters():  # away from the identity-like init, so every weight matters
            param.add_(torch.randn_like(param) * 0.2)
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return vit.eval(), path


@torch.no_grad()
def test_timesformer_from_a_timm_vit_gives_its_logits_on_a_still_clip(tmp_path):
    vit, path = _tiny_vit(tmp_path)
    tiny = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=16, depth=2, num_heads=2)
    model = create_model("timesformer_base", init_2d=path, num_classes=5, **tiny).eval()
    assert not torch.equal(model.head.weight, vit.head.weight)  # the classifier stays fresh
    model.head.load_state_dict(vit.head.state_dict())
    image = torch.randn(2, 3, 32, 32)
    clip = image[:, :, None].expand(-1, -1, 4, -1, -1)
    expected = vit(image)
    torch.testing.assert_close(model(clip), expected, atol=1e-5, rtol=0)
    assert expected.abs().max() > 1e-1


def test_init_2d_errors_name_the_file(tmp_path, torchvision_resnet50):
    _, vit_path = _tiny_vit(tmp_path)
    prefix = f"init_2d {vit_path} does not initialise c2d_r50: "
    with pytest.raises(ValueError, match=rf"{prefix}.*not a timm/torchvision"):
        create_model("c2d_r50", init_2d=vit_path, **TINY)
    with pytest.raises(ValueError, match=r"i3d_inception_v1 has no 2D initialisation .*'c2d_r50'"):
        create_model("i3d_inception_v1", init_2d=vit_path)
    resnet_path = torchvision_resnet50[2]
    prefix = f"init_2d {resnet_path} does not initialise c2d_r50: "
    with pytest.raises(ValueError, match=rf"(?s){prefix}.*does not inflate"):
        create_model("c2d_r50", init_2d=resnet_path, **TINY)  # width 8 is no ResNet-50
    as_int = tmp_path / "int.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 7, 7, dtype=torch.int64)}, str(as_int))
    message = rf"{as_int}: 1 weight tensors are not floating point, e.g. 'conv1.weight' has dtype torch.int64"
    with pytest.raises(ValueError, match=message):
        create_model("c2d_r50", init_2d=as_int, **TINY)


def test_pretrained_wins_over_init_2d_which_is_not_read(checkpoint_10, tmp_path):
    """Evaluating a run whose recipe names a 2D file needs no 2D file: the strict load replaces
    every weight init_2d would set."""
    model = create_model(
        "c2d_r50", pretrained=checkpoint_10, num_classes=10, init_2d=tmp_path / "absent.pth", **TINY
    )
    saved = torch.load(checkpoint_10, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_new_classifier_from_a_model_without_one_is_still_an_error(tmp_path):
    state = create_model("c2d_r50", num_classes=10, **TINY).state_dict()
    del state["head.proj.weight"]
    path = tmp_path / "no_head.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"missing keys \(1\): \['head.proj.weight'\]"):
        create_model("c2d_r50", pretrained=path, num_classes=10, **TINY)



def test_model_info_lists_the_config_keys(monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "model_info.py"
    monkeypatch.setattr(sys, "argv", ["model_info.py", "i3d_r50", "--kwargs"])
    runpy.run_path(str(tool), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "i3d_r50:"
    assert "  temporal_kernels: ((3,), (3, 1), (3, 1), (1, 3))" in lines
    assert "  head_pool: 'global'" in lines and len(lines) == 1 + len(builder_kwargs("i3d_r50"))
