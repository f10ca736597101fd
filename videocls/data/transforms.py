"""Clip transforms on tensors: one random draw per clip, applied identically to every frame.

Input is what readers return (uint8 ``T x H x W x 3``); output is what models take
(normalised float ``3 x T x H x W``). Resizing follows PySlowFast (bilinear,
``align_corners=False``), so numbers are comparable with its recipes, but runs on the uint8
frames and converts only the crop to float: converting whole frames first cost ten times
the resize itself at 720p. Rounding to uint8 moves a pixel by at most one level (1/255)
from PySlowFast's float resize.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from videocls.data.augment import RandAugment, RandomErasing, RandomResizedCrop


def to_unit_float(clip: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]; a float clip is already there."""
    return clip.float().div_(255.0) if clip.dtype == torch.uint8 else clip


def short_side_resize(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``T C H W`` (uint8 or float) so its short side is ``size`` (long side floored, as
    PySlowFast). uint8 frames in channels-last memory (a permuted ``T H W C``) take PyTorch's
    vectorised uint8 path."""
    h, w = clip.shape[-2:]
    if min(h, w) == size:
        return clip
    if w < h:
        new_h, new_w = int(math.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(w / h * size))
    return F.interpolate(clip, size=(new_h, new_w), mode="bilinear", align_corners=False)


def jitter_short_side(
    min_size: int, max_size: int, rng: np.random.Generator, inverse_uniform: bool = False
) -> int:
    """PySlowFast's training scale jitter: a short side uniform in ``[min_size, max_size]``, or
    with ``inverse_uniform`` the reciprocal of a value uniform in ``[1 / max_size, 1 / min_size]``
    (``DATA.INV_UNIFORM_SAMPLE``, used by the SSv2 recipes: it favours the smaller sizes, so
    crops cover more of the frame). Rounded to the nearest integer, as PySlowFast."""
    if inverse_uniform:
        return int(round(1.0 / rng.uniform(1.0 / max_size, 1.0 / min_size)))
    return int(round(rng.uniform(min_size, max_size)))


def random_crop(clip: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    h, w = clip.shape[-2:]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return clip[..., y : y + size, x : x + size]


def uniform_crop(clip: torch.Tensor, size: int, spatial_idx: int) -> torch.Tensor:
    """PySlowFast's test crops: 0/1/2 = start/centre/end along the long side."""
    if spatial_idx not in (0, 1, 2):
        raise ValueError(f"spatial_idx must be 0, 1 or 2, got {spatial_idx}")
    h, w = clip.shape[-2:]
    y, x = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    if h > w:
        y = {0: 0, 1: y, 2: h - size}[spatial_idx]
    else:
        x = {0: 0, 1: x, 2: w - size}[spatial_idx]
    return clip[..., y : y + size, x : x + size]


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on ``T C H W``."""
    mean_t = torch.as_tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=clip.dtype).view(1, -1, 1, 1)
    return (clip - mean_t) / std_t


@dataclass(frozen=True, kw_only=True)  # seven values of one type: no positional calls
class ClipTransform:
    """Training: scale jitter (uniform or inverse-uniform in the short side) + random crop (or
    RandomResizedCrop), flip, RandAugment, erasing.

    Test: short-side resize + uniform crop. Horizontal flip is off by default: it turns
    "moving left" into "moving right", which is wrong for direction-sensitive datasets (SSv2,
    the built-in one). RandAugment runs after the crop (timm's order, and cheaper); random
    erasing on the normalised clip.
    """

    crop_size: int
    min_short_side: int
    max_short_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: bool
    flip: bool = False
    resized_crop: RandomResizedCrop | None = None
    rand_augment: RandAugment | None = None
    erasing: RandomErasing | None = None
    inverse_uniform_scale: bool = False  # see jitter_short_side

    def __call__(
        self, frames: torch.Tensor, rng: np.random.Generator, spatial_idx: int = 1
    ) -> torch.Tensor:
        clip = frames.permute(0, 3, 1, 2)  # T C H W, a view: still channels-last in memory
        if not self.train:
            clip = uniform_crop(short_side_resize(clip, self.min_short_side), self.crop_size, spatial_idx)
            return normalize(to_unit_float(clip), self.mean, self.std).permute(1, 0, 2, 3).contiguous()
        if self.resized_crop is not None:
            clip = self.resized_crop(clip, rng)
        else:
            lo, hi = self.min_short_side, self.max_short_side
            size = jitter_short_side(lo, hi, rng, inverse_uniform=self.inverse_uniform_scale)
            clip = random_crop(short_side_resize(clip, size), self.crop_size, rng)
        clip = to_unit_float(clip)
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        if self.rand_augment is not None:
            clip = self.rand_augment(clip, rng)
        clip = normalize(clip, self.mean, self.std)
        if self.erasing is not None:
            clip = self.erasing(clip, rng)
        return clip.permute(1, 0, 2, 3).contiguous()
