"""Clip augmentations: RandomResizedCrop, RandAugment and random erasing for ``T C H W`` clips.

Each takes the clip and the sample's ``np.random.Generator`` (seeded by ``(seed, epoch, index)``
in the dataset) and makes one random draw per clip that is applied to every frame: a crop box,
an op with its magnitude, an erased box. Per-frame draws would make the augmentation itself a
temporal signal (jittering crops, flickering colours) that has nothing to do with the action.

The frame dimension is the leading dimension, which torchvision's v2 kernels treat as a batch,
so one call transforms every frame with the same parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode


def _check_range(name: str, value: tuple[float, float], upper: float = math.inf) -> None:
    if not 0 < value[0] <= value[1] <= upper:
        bound = "" if upper == math.inf else f" <= {upper}"
        raise ValueError(f"{name} must satisfy 0 < low <= high{bound}, got {tuple(value)}")


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` by torchvision's RandomResizedCrop rule.

    Up to 10 tries of an area fraction uniform in ``scale`` and an aspect ratio (w / h)
    log-uniform in ``ratio``; if none fits, the largest centred box whose ratio is within range.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class RandomResizedCrop:
    """One random box (area fraction in ``scale``, aspect ratio in ``ratio``) for the whole clip,
    resized to ``size x size``.

    Resizing is bilinear without antialiasing, the same resampling as ``transforms.short_side_resize``
    and PySlowFast's ``random_resized_crop``. Works on uint8 or float ``T C H W``.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        _check_range("RandomResizedCrop scale", self.scale)
        _check_range("RandomResizedCrop ratio", self.ratio)

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(clip.shape[-2], clip.shape[-1], self.scale, self.ratio, rng)
        return TF.resized_crop(
            clip,
            top,
            left,
            h,
            w,
            [self.size, self.size],
            interpolation=InterpolationMode.BILINEAR,
            antialias=False,
        )


# --------------------------------------------------------------------------------------------
# RandAugment
# --------------------------------------------------------------------------------------------

RAND_AUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
"""timm's RandAugment op set (``_RAND_TRANSFORMS``); ``increasing`` switches six of them to the
variants whose strength grows with magnitude, as timm's ``inc1`` does."""

_CONFIG_SECTIONS = {  # timm's config-string keys -> (field, type)
    "m": ("magnitude", float),
    "n": ("num_ops", int),
    "mstd": ("magnitude_std", float),
    "mmax": ("magnitude_max", float),
    "inc": ("increasing", lambda v: bool(int(v))),
    "p": ("prob", float),
}
_LEVEL_DENOM = 10.0  # magnitude M10 is the strongest setting of an op


def _bad_section(config: str, section: str) -> ValueError:
    return ValueError(
        f"RandAugment config {config!r}: cannot read section {section!r}; known sections are "
        "m<magnitude>, n<int ops>, mstd<std>, mmax<max magnitude>, inc<0|1>, p<probability>"
    )


def _as_one_image(clip: torch.Tensor) -> torch.Tensor:
    """``T C H W`` -> ``C (T H) W``: the frames stacked into one tall image."""
    t, c, h, w = clip.shape
    return clip.transpose(0, 1).reshape(c, t * h, w)


def _as_frames(image: torch.Tensor, num_frames: int) -> torch.Tensor:
    c, th, w = image.shape
    return image.view(c, num_frames, th // num_frames, w).transpose(0, 1)


def _per_clip(op: Callable[..., torch.Tensor], clip: torch.Tensor, *args: float) -> torch.Tensor:
    """Apply a statistics-based op (auto-contrast, equalize, contrast) with the statistics of the
    whole clip, so every frame gets the same intensity mapping; torchvision's kernels would use
    each frame's own histogram or mean, and the mapping would flicker from frame to frame."""
    return _as_frames(op(_as_one_image(clip), *args), clip.shape[0])


_ENHANCE_OPS = {  # op name -> f(clip, factor); factor 1 leaves the clip unchanged
    "Color": TF.adjust_saturation,
    "Contrast": partial(_per_clip, TF.adjust_contrast),
    "Brightness": TF.adjust_brightness,
    "Sharpness": TF.adjust_sharpness,  # a 3x3 filter: frame by frame, no statistics involved
}


@dataclass(frozen=True)
class RandAugment:
    """RandAugment (Cubuk et al. 2020) with timm's op set and magnitude rules, one draw per clip.

    Each call picks ``num_ops`` ops (with replacement), and applies each with probability ``prob``
    at a magnitude ``magnitude`` (or ``N(magnitude, magnitude_std)``, uniform in ``[0, magnitude]``
    when ``magnitude_std`` is infinite) clamped to ``[0, magnitude_max]``. The op, its magnitude
    and its random sign are drawn once and applied to every frame.

    Ops run on tensors through torchvision's v2 kernels, not on PIL images as in timm: a whole
    clip goes through one kernel call instead of ``T`` PIL round trips, and the randomness comes
    from the clip's generator rather than the global ``random``/``np.random`` state. Differences
    from timm: geometric ops resample bilinearly (timm picks bilinear or bicubic at random);
    AutoContrast, Equalize and Contrast use statistics of the whole clip (see ``_per_clip``).

    Input and output: ``T C H W``, uint8 in [0, 255] or float in [0, 1] (same dtype out).
    ``fill`` (0-255 per channel) paints the area uncovered by rotations, shears and translations;
    timm and PySlowFast use the dataset mean, ``round(255 * mean)``.
    """

    magnitude: float = 10.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    increasing: bool = False
    prob: float = 0.5
    fill: tuple[int, int, int] = (128, 128, 128)
    ops: tuple[str, ...] = RAND_AUGMENT_OPS

    def __post_init__(self) -> None:
        unknown = set(self.ops) - set(RAND_AUGMENT_OPS)
        if unknown or not self.ops:
            raise ValueError(
                f"RandAugment ops must be a non-empty subset of {RAND_AUGMENT_OPS}, got {self.ops}"
            )
        if self.num_ops < 0 or not 0.0 <= self.prob <= 1.0 or self.magnitude_std < 0:
            raise ValueError(f"RandAugment needs num_ops >= 0, 0 <= prob <= 1, magnitude_std >= 0: {self}")

    @classmethod
    def from_string(cls, config: str, fill: Sequence[int] = (128, 128, 128)) -> RandAugment:
        """Parse a timm config string such as ``rand-m9-mstd0.5-inc1``.

        Sections after ``rand``: ``m`` magnitude (default 10), ``n`` number of ops (2), ``mstd``
        magnitude std (0; above 100 means uniform), ``mmax`` magnitude upper bound (10), ``inc``
        0/1 increasing ops (0), ``p`` probability of each op (0.5).
        """
        sections = config.split("-")
        if sections[0] != "rand":
            raise ValueError(f"RandAugment config {config!r} must start with 'rand-'")
        kwargs: dict = {"fill": tuple(fill)}
        for section in sections[1:]:
            match = re.fullmatch(r"([a-z]+)([0-9.]+)", section)
            if match is None or match.group(1) not in _CONFIG_SECTIONS:
                raise _bad_section(config, section)
            name, convert = _CONFIG_SECTIONS[match.group(1)]
            try:
                value = convert(match.group(2))
            except ValueError:
                raise _bad_section(config, section) from None
            kwargs[name] = math.inf if name == "magnitude_std" and value > 100 else value
        return cls(**kwargs)

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if clip.ndim != 4:
            raise ValueError(f"RandAugment expects a T C H W clip, got shape {tuple(clip.shape)}")
        for op, level, sign in self.draw(rng):
            clip = self.apply_op(clip, op, level, sign)
        return clip

    def draw(self, rng: np.random.Generator) -> list[tuple[str, float, float]]:
        """The clip's ops as ``(op, level, sign)``, with ``level`` = magnitude / 10; the ops whose
        probability draw failed are left out. Drawing everything first and applying after takes
        the same values from ``rng`` as drawing while applying (ops draw nothing themselves),
        which lets :mod:`videocls.data.gpu_transforms` draw in the worker and apply on the device."""
        drawn = []
        for index in rng.integers(0, len(self.ops), size=self.num_ops):
            if rng.random() >= self.prob:
                continue
            level = self._sample_magnitude(rng) / _LEVEL_DENOM
            sign = -1.0 if rng.random() < 0.5 else 1.0  # drawn for every op to keep the sequence simple
            drawn.append((self.ops[index], level, sign))
        return drawn

    def _sample_magnitude(self, rng: np.random.Generator) -> float:
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = rng.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.normal(magnitude, self.magnitude_std)
        return min(max(magnitude, 0.0), self.magnitude_max)

    def apply_op(self, clip: torch.Tensor, op: str, level: float, sign: float) -> torch.Tensor:
        """One op at ``level`` = magnitude / 10 with the direction ``sign`` (+-1) on ``T C H W``;
        the argument mappings are timm's."""
        bound = 1.0 if clip.is_floating_point() else 255.0  # pixel thresholds below are in 0-255 units
        if op == "AutoContrast":
            return _per_clip(TF.autocontrast, clip)
        if op == "Equalize":
            return _per_clip(TF.equalize, clip)
        if op == "Invert":
            return TF.invert(clip)
        if op == "Posterize":
            bits = int(level * 4)
            bits = 4 - bits if self.increasing else bits
            return TF.posterize(clip, min(max(bits, 0), 8))
        if op == "Solarize":
            threshold = min(256, int(level * 256))
            threshold = 256 - threshold if self.increasing else threshold
            return clip if threshold > 255 else TF.solarize(clip, threshold * bound / 255)
        if op == "SolarizeAdd":
            add = min(128, int(level * 110)) * bound / 255
            shifted = (clip.float() + add).clamp_(max=bound).to(clip.dtype)
            return torch.where(clip < 128 * bound / 255, shifted, clip)
        if op in _ENHANCE_OPS:
            factor = max(0.1, 1.0 + sign * 0.9 * level) if self.increasing else 1.8 * level + 0.1
            return _ENHANCE_OPS[op](clip, factor)
        fill = [v * bound / 255 for v in self.fill]
        if op == "Rotate":
            return TF.rotate(clip, sign * 30.0 * level, interpolation=InterpolationMode.BILINEAR, fill=fill)
        translate, shear = [0.0, 0.0], [0.0, 0.0]
        if op == "ShearX":
            shear[0] = math.degrees(math.atan(sign * 0.3 * level))
        elif op == "ShearY":
            shear[1] = math.degrees(math.atan(sign * 0.3 * level))
        elif op == "TranslateXRel":
            translate[0] = sign * 0.45 * level * clip.shape[-1]
        else:  # TranslateYRel
            translate[1] = sign * 0.45 * level * clip.shape[-2]
        # Shears about the top-left corner, as PIL's affine transform used by timm does.
        return TF.affine(
            clip,
            angle=0.0,
            translate=translate,
            scale=1.0,
            shear=shear,
            interpolation=InterpolationMode.BILINEAR,
            fill=fill,
            center=[0.0, 0.0],
        )


# --------------------------------------------------------------------------------------------
# Random erasing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomErasing:
    """Random erasing (Zhong et al. 2020) with timm's sampling rule, one box for the whole clip.

    With probability ``prob``, erases 1 to ``max_count`` boxes; each takes up to 10 tries at an
    area fraction uniform in ``area`` (divided by the box count) and an aspect ratio log-uniform
    in ``aspect``. The fill is in normalised units: ``const`` zeros (the dataset mean), ``rand``
    one N(0, 1) colour, ``pixel`` N(0, 1) noise per pixel. The noise is the same in every frame:
    a static occluder, like a real one, rather than a flickering patch.

    Input and output: normalised float ``T C H W``; the input is not modified.
    """

    prob: float = 0.25
    area: tuple[float, float] = (0.02, 1 / 3)
    aspect: tuple[float, float] = (0.3, 1 / 0.3)
    mode: str = "pixel"
    max_count: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("const", "rand", "pixel"):
            raise ValueError(f"RandomErasing mode must be 'const', 'rand' or 'pixel', got {self.mode!r}")
        if not 0.0 <= self.prob <= 1.0 or self.max_count < 1:
            raise ValueError(
                f"RandomErasing needs 0 <= prob <= 1 and max_count >= 1, got {self.prob}, {self.max_count}"
            )
        _check_range("RandomErasing area", self.area, upper=1.0)
        _check_range("RandomErasing aspect", self.aspect)

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if not clip.is_floating_point() or clip.ndim != 4:
            raise ValueError(
                f"RandomErasing expects a normalised float T C H W clip, got {clip.dtype} {tuple(clip.shape)}"
            )
        boxes = self.draw(rng, *clip.shape[-3:])
        if not boxes:
            return clip
        clip = clip.clone()
        for top, left, h, w, fill in boxes:
            clip[:, :, top : top + h, left : left + w] = fill.to(clip)
        return clip

    def draw(
        self, rng: np.random.Generator, channels: int, height: int, width: int
    ) -> list[tuple[int, int, int, int, torch.Tensor]]:
        """The erased boxes of one clip as ``(top, left, h, w, fill)`` (``fill`` broadcasts to
        ``channels x h x w``); empty when the probability draw fails."""
        if rng.random() >= self.prob:
            return []
        boxes = []
        count = int(rng.integers(1, self.max_count + 1))
        log_aspect = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        for _ in range(count):
            for _ in range(10):
                target_area = rng.uniform(*self.area) * height * width / count
                aspect = math.exp(rng.uniform(*log_aspect))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if h < height and w < width:
                    top = int(rng.integers(0, height - h + 1))
                    left = int(rng.integers(0, width - w + 1))
                    boxes.append((top, left, h, w, self._fill(channels, h, w, rng)))
                    break
        return boxes

    def _fill(self, channels: int, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
        if self.mode == "pixel":
            return torch.from_numpy(rng.standard_normal((channels, h, w), dtype=np.float32))
        if self.mode == "rand":
            return torch.from_numpy(rng.standard_normal((channels, 1, 1), dtype=np.float32))
        return torch.zeros(channels, 1, 1)
