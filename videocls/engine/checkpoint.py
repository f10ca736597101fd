"""Checkpoints that survive preemption: atomic writes, full resume state, signal handling."""

from __future__ import annotations

import logging
import os
import random
import signal
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A kill at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load a videocls training checkpoint (tensors, numbers, strings, RNG states only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """Every generator a training step can draw from (the data pipeline seeds its own)."""
    _, py_internal, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": list(py_internal),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_rest": [int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PreemptionFlag:
    """Sets a flag on SIGTERM/SIGUSR1 (what Slurm sends before preemption).

    The loop checks the flag at each optimiser-step boundary, saves ``last.pt`` and exits,
    so no step is half-applied and no work since the last step is lost.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> "PreemptionFlag":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = signum
        log.warning("received %s: will save a checkpoint and exit at the next step", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.received is not None
