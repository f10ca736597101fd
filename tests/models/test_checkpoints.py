"""Untrusted weight files: wrong dtypes are refused, unparsable files are a ValueError naming the
file and the expected format, and nothing inside a file is executed."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from videocls.models import create_model
from videocls.models.checkpoints import load_numpy_pickle, load_state_dict_any

TINY = {"width": 8, "stage_blocks": (1, 1, 1, 1)}


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("c2d_r50", num_classes=5, **TINY).state_dict()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_safetensors_is_refused_naming_file_and_key(tmp_path, dtype):
    """Cast to int64 every weight of a freshly initialised network rounds to 0: it would load as a
    model of zeros with no error."""
    state = {k: (v * 100).to(dtype) if v.is_floating_point() else v for k, v in _tiny_state().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as info:
        create_model("c2d_r50", pretrained=path, num_classes=5, **TINY)
    message = str(info.value)
    assert str(path) in message and f"dtype {dtype}" in message and "'head.proj.bias'" in message


def test_float64_and_float16_files_load_as_the_model_dtype(tmp_path):
    """Other float dtypes are weights all the same: they are cast, exactly where representable."""
    state = _tiny_state()
    for dtype in (torch.float64, torch.float16):
        path = tmp_path / f"{dtype}.safetensors"
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, str(path))
        model = create_model("c2d_r50", pretrained=path, num_classes=5, **TINY)
        expected = state["head.proj.weight"].to(dtype).float()
        assert torch.equal(model.head.proj.weight, expected)


def test_batchnorm_step_counters_stay_integers(tmp_path):
    state = _tiny_state()
    assert state["stem.bn.num_batches_tracked"].dtype == torch.int64
    path = tmp_path / "ok.safetensors"
    save_file(state, str(path))
    create_model("c2d_r50", pretrained=path, num_classes=5, **TINY)  # no error


@pytest.mark.parametrize(
    "content",
    [b"garbage, not a safetensors header" * 4, b"\xff" * 8 + b"{}", b""],
    ids=["text", "huge-header-length", "empty"],
)
def test_unreadable_safetensors_is_a_value_error_naming_file_and_format(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}: not a readable safetensors file"):
        load_state_dict_any(path)


def test_truncated_safetensors_is_a_value_error(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file(_tiny_state(), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{path}: not a readable safetensors file"):
        create_model("c2d_r50", pretrained=path, num_classes=5, **TINY)


def test_broken_torch_zip_is_a_value_error_naming_the_format(tmp_path):
    path = tmp_path / "broken.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(ValueError, match=rf"{path}: .*expected a torch.save checkpoint"):
        load_state_dict_any(path)


class _Payload:
    """Pickles as a call to ``print``: harmless, and visible if it ran."""

    def __reduce__(self):
        return (print, ("PAYLOAD RAN",))


@pytest.mark.parametrize("wrap", ["pickle", "torch"])
def test_a_pickle_with_code_is_refused_and_nothing_runs(tmp_path, capsys, wrap):
    path = tmp_path / "evil.pt"
    payload = {"conv1.weight": _Payload()}
    if wrap == "torch":
        torch.save(payload, path)  # a zip: weights_only refuses the global
    else:
        path.write_bytes(pickle.dumps(payload))  # a bare pickle: the numpy-only unpickler refuses it
    with pytest.raises(ValueError, match=rf"{path}: not a checkpoint that can be loaded safely \(expected"):
        load_state_dict_any(path)
    assert "PAYLOAD RAN" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        (pickle.dumps({"a": np.zeros(3)})[:-5], "not a pickle of numpy arrays"),  # truncated
        (pickle.dumps({"a": np.array(["x"], dtype=object)}), "numeric numpy arrays"),
        (b"\x80\x04garbage", "not a pickle of numpy arrays"),
    ],
    ids=["truncated", "object-array", "garbage"],
)
def test_numpy_pickle_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}: .*({message})"):
        load_numpy_pickle(path)
    with pytest.raises(ValueError, match=rf"{path}: not a checkpoint that can be loaded safely .*numpy"):
        load_state_dict_any(path)
