"""Where a run computes: the device, the precision, the memory format and the seed, in one place.

Training, evaluation, testing, prediction and benchmarking all move clips to a device and run
the model under ``trainer.precision``. Each used to carry the four settings as loose positional
arguments and some kept their own copy of the move-to-device helper, so a setting could be
honoured in one loop and dropped in another (channels_last in training but not in testing).
This module is the one home of those facts: ``to_device``, ``autocast`` (re-exported from
``engine/amp.py``, which holds the CPU bf16 guard), ``seed_everything``, and a frozen
``Runtime`` built once from the trainer config and handed to whoever runs the model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from videocls.engine.amp import PRECISIONS, autocast

__all__ = ["PRECISIONS", "Runtime", "autocast", "seed_everything", "to_device"]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device); ``deterministic`` also refuses
    non-deterministic kernels (``torch.use_deterministic_algorithms``) and cuDNN autotuning."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def to_device(video, device: torch.device, channels_last: bool = False):
    """Move a clip (or a SlowFast ``[slow, fast]`` list) to ``device``."""
    if isinstance(video, (list, tuple)):
        return [to_device(v, device, channels_last) for v in video]
    video = video.to(device, non_blocking=True)
    return video.contiguous(memory_format=torch.channels_last_3d) if channels_last else video


@dataclass(frozen=True)
class Runtime:
    """How to run a model: built once per run (``from_config``) and passed by keyword."""

    device: torch.device
    precision: str = "32"  # 32 | bf16 | 16, as trainer.precision
    channels_last: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: YAML gives 32 as an int, and a
        # "cuda" string would otherwise compare unequal to torch.device("cuda").
        object.__setattr__(self, "device", torch.device(self.device))
        object.__setattr__(self, "precision", str(self.precision))
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")

    @classmethod
    def from_config(cls, trainer_cfg, device: torch.device) -> Runtime:
        """From a ``trainer`` config section; ``device`` is the resolved one (``DistEnv.device``),
        since ``trainer.device`` may say ``auto``."""
        return cls(device=device, precision=str(trainer_cfg.get("precision", "32")),
                   channels_last=bool(trainer_cfg.get("channels_last", False)),
                   seed=int(trainer_cfg.get("seed", 0)))

    def to_device(self, video):
        """``to_device`` with this runtime's device and memory format."""
        return to_device(video, self.device, self.channels_last)

    def autocast(self):
        """``autocast`` with this runtime's device and precision."""
        return autocast(self.device, self.precision)
