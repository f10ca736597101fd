"""tools/convert_checkpoint.py: foreign checkpoints become plain videocls files with identical logits."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorchvideo.models import hub
from safetensors.torch import load_file

from tests.models.resnet_helpers import calibrate_bn, save_pyth
from videocls.models.checkpoints import load_numpy_pickle
from videocls.models.registry import convert_checkpoint, create_model

REPO = Path(__file__).resolve().parents[2]
I3D_WEIGHTS = REPO.parent / "shared" / "weights" / "i3d-kinetics-400.ckpt"
TINY_RESNET = {"width": 8}  # pytorchvideo's stem_dim_out=8: every stage 8x narrower, R50 depth


def _logits(model: torch.nn.Module, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(clip)


@pytest.fixture(scope="module")
def tiny_pyth(tmp_path_factory) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    """A pytorchvideo-format I3D-R50 with 7 classes, its reference module and a clip it fits."""
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 4, 32, 32)
    reference = hub.i3d_r50(stem_dim_out=8, head_pool_kernel_size=(2, 1, 1), model_num_class=7)
    calibrate_bn(reference, clip)
    path = save_pyth(tmp_path_factory.mktemp("pyth") / "I3D_tiny.pyth", reference.state_dict())
    return path, reference, clip


@pytest.mark.skipif(not I3D_WEIGHTS.is_file(), reason=f"DeepMind I3D weights not found at {I3D_WEIGHTS}")
def test_deepmind_i3d_converts_to_safetensors_and_pt_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    clip = torch.rand(1, 3, 8, 64, 64) * 2 - 1  # I3D's [-1, 1] range; 'SAME' padding takes any size
    expected = _logits(create_model("i3d_inception_v1", pretrained=I3D_WEIGHTS), clip)

    for dst in ("i3d.safetensors", "i3d.pt"):
        result = convert_checkpoint(I3D_WEIGHTS, tmp_path / dst, "i3d_inception_v1")
        # 344 = 57 convs (weights) + 57 BNs (5 tensors each) + the classifier's weight and bias
        assert (result.path, result.num_tensors, result.num_classes) == (tmp_path / dst, 344, 400)
    for dst in ("i3d.safetensors", "i3d.pt"):
        got = _logits(create_model("i3d_inception_v1", pretrained=tmp_path / dst), clip)
        assert torch.equal(got, expected), dst

    plain = torch.load(tmp_path / "i3d.pt", weights_only=True)
    assert type(plain) is dict and all(isinstance(v, torch.Tensor) for v in plain.values())
    safetensors = load_file(str(tmp_path / "i3d.safetensors"))
    assert plain.keys() == safetensors.keys() == create_model("i3d_inception_v1").state_dict().keys()
    assert all(torch.equal(plain[k], safetensors[k]) for k in plain)
    # Independently of the key mapping: the classifier bias is DeepMind's, untouched.
    raw = load_numpy_pickle(I3D_WEIGHTS)
    assert torch.equal(plain["head.proj.bias"], raw["params/Logits/Conv3d_0c_1x1/Conv_0/bias"])


def test_pytorchvideo_resnet_converts_with_classes_from_checkpoint(tiny_pyth, tmp_path):
    src, reference, clip = tiny_pyth
    dst = tmp_path / "i3d_tiny.pt"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), str(src), str(dst),
         "--model", "i3d_r50", "--override", "width=8"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    state = torch.load(dst, weights_only=True)
    params = sum(p.numel() for p in reference.parameters())
    summary = f"wrote {dst}: {len(reference.state_dict())} tensors, {params:,} parameters, num_classes=7"
    assert proc.stdout == summary + "\n"
    assert state.keys() == create_model("i3d_r50", num_classes=7, **TINY_RESNET).state_dict().keys()
    assert state["head.proj.weight"].shape == (7, 256)

    from_src = _logits(create_model("i3d_r50", pretrained=src, num_classes=7, **TINY_RESNET), clip)
    from_dst = _logits(create_model("i3d_r50", pretrained=dst, num_classes=7, **TINY_RESNET), clip)
    assert torch.equal(from_dst, from_src)
    assert (from_dst - _logits(reference, clip)).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "model, overrides, num_classes, message",
    [
        ("i3d_inception_v1", {}, None, "missing keys"),  # another family altogether
        ("i3d_r50", {}, None, r"shape mismatches \(\d+\): \['res2"),  # the right family, too wide
        ("i3d_r50", TINY_RESNET, 5, r"head\.proj\.weight: checkpoint \(7, 256\) vs model \(5, 256\)"),
    ],
)
def test_checkpoint_that_does_not_fit_is_an_error_naming_it(
    tiny_pyth, tmp_path, model, overrides, num_classes, message
):
    src = tiny_pyth[0]
    with pytest.raises(RuntimeError, match=message) as info:
        convert_checkpoint(src, tmp_path / "out.safetensors", model, num_classes, **overrides)
    assert str(src) in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_filter_failure_names_the_file(tmp_path):
    """A pytorchvideo file without ResNet stages: the ResNet filter's own error gets the file name added."""
    src = save_pyth(tmp_path / "not_a_resnet.pyth", {"blocks.0.conv.weight": torch.zeros(8, 3, 1, 7, 7)})
    with pytest.raises(ValueError, match=r"not_a_resnet\.pyth does not map onto ResNet3d: .*not 4"):
        convert_checkpoint(src, tmp_path / "out.pt", "i3d_r50", **TINY_RESNET)


def test_cli_wrong_model_exits_with_an_error_naming_the_file(tiny_pyth, tmp_path, monkeypatch, capsys):
    """The tool's argument parsing and exit status, in-process: another interpreter start is slow."""
    src = tiny_pyth[0]
    argv = [str(src), str(tmp_path / "out.pt"), "--model", "slowfast_r50", "--override", "width=8"]
    monkeypatch.setattr(sys, "argv", ["convert_checkpoint.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "tools" / "convert_checkpoint.py"), run_name="__main__")
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1 and out == ""
    assert err.startswith(f"error: checkpoint {src} does not fit SlowFast:\n  missing keys (")
    assert "'fast.res2.0.bn_a.bias'" in err and "unexpected keys" in err and "'blocks.0.conv.weight'" in err
    assert not (tmp_path / "out.pt").exists()


def _run_tool(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["convert_checkpoint.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "tools" / "convert_checkpoint.py"), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("force", [False, True])
def test_destination_that_is_the_source_is_refused_before_any_work(tmp_path, monkeypatch, capsys, force):
    """SRC SRC, and DST a symlink to SRC: refused even with --force, the file untouched. The model
    name is bogus: the destination is checked before anything else is read or built."""
    src = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "epoch": 3}, src)
    before = src.read_bytes()
    (tmp_path / "link.pt").symlink_to(src)
    for dst in (src, tmp_path / "link.pt", tmp_path / "." / "last.pt"):
        code, err = _run_tool([src, dst, "--model", "no_such_model", *(["--force"] if force else [])],
                              monkeypatch, capsys)
        assert code == 1 and err == f"error: destination {dst} is the source checkpoint {src}: " \
                                    "write the conversion elsewhere\n"
        assert src.read_bytes() == before


def test_existing_destination_needs_force(tiny_pyth, tmp_path, monkeypatch, capsys):
    src = tiny_pyth[0]
    dst = tmp_path / "last.pt"  # a training checkpoint of another run
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "epoch": 3}, dst)
    before = dst.read_bytes()
    code, err = _run_tool([src, dst, "--model", "i3d_r50", "--override", "width=8"], monkeypatch, capsys)
    assert code == 1 and err.startswith(f"error: destination {dst} is an existing file")
    assert "--force" in err and dst.read_bytes() == before

    code, err = _run_tool([src, dst, "--model", "i3d_r50", "--override", "width=8", "--force"],
                          monkeypatch, capsys)
    assert code == 0, err
    assert torch.load(dst, weights_only=True).keys() == create_model("i3d_r50", num_classes=7,
                                                                      **TINY_RESNET).state_dict().keys()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_failed_conversion_leaves_an_existing_destination_as_it_was(tiny_pyth, tmp_path):
    dst = tmp_path / "out.pt"
    dst.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="does not fit"):
        convert_checkpoint(tiny_pyth[0], dst, "slowfast_r50", overwrite=True, width=8)
    assert dst.read_bytes() == b"previous"
    with pytest.raises(ValueError, match="is a directory"):
        convert_checkpoint(tiny_pyth[0], tmp_path, "i3d_r50", overwrite=True, width=8)
