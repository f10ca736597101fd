"""Corruptions of decoded clips at five severities: transforms of uint8 frames.

Clips are ``T x H x W x 3`` uint8 tensors, the layout the video reader returns, and come back
in the same shape and dtype. Appearance corruptions follow Hendrycks & Dietterich (2019),
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"
(ImageNet-C), with their parameters in pixels of ~224 px frames:

================  ===========================  ============================================
corruption        parameter                    severity 1 .. 5
================  ===========================  ============================================
gaussian_noise    std on the [0, 1] scale      0.08, 0.12, 0.18, 0.26, 0.38
motion_blur       (radius, sigma) in px        (10, 3), (15, 5), (15, 8), (15, 12), (20, 15)
defocus_blur      (disk radius, alias sigma)   (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)
jpeg_compression  JPEG quality                 25, 18, 15, 10, 7
brightness        added to HSV value           0.1, 0.2, 0.3, 0.4, 0.5
contrast          factor towards frame mean    0.4, 0.3, 0.2, 0.1, 0.05
frame_drop        % of frames 2..T dropped     10, 20, 30, 45, 60
temporal_jitter   max frame offset             1, 2, 3, 5, 8
================  ===========================  ============================================

Randomness (noise, blur angle, which frames) comes only from the ``rng`` argument, and each
corruption draws the same numbers at every severity, so one seed gives corruptions that are
nested across severities: the same noise pattern scaled up, the same blur direction, a growing
set of dropped frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

Corruption = Callable[[torch.Tensor, int, np.random.Generator], torch.Tensor]

NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
MOTION_BLUR = ((10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0))
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
JPEG_QUALITY = (25, 18, 15, 10, 7)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
FRAME_DROP_PERCENT = (10, 20, 30, 45, 60)
JITTER_MAX_OFFSET = (1, 2, 3, 5, 8)


def _level(table: tuple, severity: int):
    """The parameter of ``severity`` 1..5 in a table, refusing anything else (0 is not a level)."""
    if severity not in range(1, len(table) + 1):
        raise ValueError(f"severity must be an integer 1..{len(table)}, got {severity!r}")
    return table[severity - 1]


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """``T x H x W x 3`` uint8 -> ``T x 3 x H x W`` float32 in [0, 1], the layout conv2d needs."""
    return frames.permute(0, 3, 1, 2).float() / 255


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter every channel of ``T x 3 x H x W`` with one odd-sized 2-D kernel, edges replicated."""
    t, c, h, w = images.shape
    pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    flat = F.pad(images.reshape(t * c, 1, h, w), (pad_x, pad_x, pad_y, pad_y), mode="replicate")
    return F.conv2d(flat, kernel.to(images)[None, None]).view(t, c, h, w)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    half = max(1, math.ceil(3 * sigma))
    g = torch.exp(-torch.arange(-half, half + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def gaussian_noise(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Additive white noise, independent per pixel, channel and frame."""
    images = _to_float(frames)
    noise = torch.from_numpy(rng.standard_normal(images.shape, dtype=np.float32)).to(images.device)
    return _to_uint8(images + _level(NOISE_STD, severity) * noise)


def motion_blur(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Camera-shake blur: each pixel averages the ``2 * radius + 1`` pixels behind it along one
    direction, with Gaussian weights falling off with distance (ImageMagick's motion blur, which
    ImageNet-C uses). One random direction in [-45, 45] degrees per clip."""
    radius, sigma = _level(MOTION_BLUR, severity)
    angle = math.radians(rng.uniform(-45, 45))
    steps = np.arange(2 * radius + 1)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    weights /= weights.sum()
    images = _to_float(frames)
    _, _, h, w = images.shape
    pad = 2 * radius
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    out = torch.zeros_like(images)
    for step, weight in zip(steps, weights):
        dx, dy = round(step * math.cos(angle)), round(step * math.sin(angle))
        out += float(weight) * padded[:, :, pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    return _to_uint8(out)


def defocus_blur(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Out-of-focus blur: a uniform disk kernel, softened by a small Gaussian against aliasing."""
    radius, alias_sigma = _level(DEFOCUS_BLUR, severity)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).double()
    smooth = _gaussian_kernel(alias_sigma)
    half = smooth.shape[0] // 2
    # Full (not same-size) convolution of the disk with the Gaussian keeps the soft rim.
    padded = F.pad(disk, (half, half, half, half))
    kernel = F.conv2d(padded[None, None], smooth[None, None], padding=half)[0, 0]
    return _to_uint8(_filter(_to_float(frames), kernel / kernel.sum()))


def jpeg_compression(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Encode and decode every frame as a JPEG at low quality (blocking and ringing)."""
    chw = [frame.permute(2, 0, 1).contiguous() for frame in frames]
    decoded = decode_jpeg(encode_jpeg(chw, quality=_level(JPEG_QUALITY, severity)))
    return torch.stack(decoded).permute(0, 2, 3, 1).contiguous()


def brightness(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Raise the HSV value V = max(R, G, B) by a constant, clipped at 1, keeping hue and saturation.

    With H and S fixed, RGB is proportional to V, so this scales each pixel by V' / V; black
    (V = 0, no hue) becomes grey V', as the HSV round trip in ImageNet-C does.
    """
    images = _to_float(frames)
    value = images.amax(dim=1, keepdim=True)
    new_value = (value + _level(BRIGHTNESS, severity)).clamp(max=1)
    scaled = images * (new_value / value.clamp(min=1e-12))
    return _to_uint8(torch.where(value > 0, scaled, new_value.expand_as(images)))


def contrast(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Pull every pixel towards its frame's per-channel mean by a constant factor."""
    images = _to_float(frames)
    mean = images.mean(dim=(2, 3), keepdim=True)
    return _to_uint8((images - mean) * _level(CONTRAST, severity) + mean)


def frame_drop(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Drop ``ceil(percent / 100 * (T - 1))`` random frames (never the first) and repeat the
    previous kept frame in their place, as a stalling stream shows them; T stays the same."""
    num_frames = frames.shape[0]
    # ceil in integers: in floats 0.3 * 10 is 3.0000000000000004, which would drop one frame too many
    num_dropped = -(-_level(FRAME_DROP_PERCENT, severity) * (num_frames - 1) // 100)
    order = torch.from_numpy(rng.permutation(num_frames - 1)) + 1
    keep = torch.ones(num_frames, dtype=torch.bool)
    keep[order[:num_dropped]] = False
    positions = torch.arange(num_frames)
    source = torch.where(keep, positions, torch.zeros_like(positions)).cummax(dim=0).values
    return frames[source]


def temporal_jitter(frames: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Replace frame t by frame t + d_t, d_t a random offset of at most the severity's maximum
    (clamped to the clip), so frames repeat, vanish and swap locally; T stays the same."""
    num_frames = frames.shape[0]
    unit = torch.from_numpy(rng.uniform(-1, 1, num_frames))
    offsets = (unit * _level(JITTER_MAX_OFFSET, severity)).round().long()
    return frames[(torch.arange(num_frames) + offsets).clamp(0, num_frames - 1)]


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "jpeg_compression": jpeg_compression,
    "brightness": brightness,
    "contrast": contrast,
    "frame_drop": frame_drop,
    "temporal_jitter": temporal_jitter,
}

SEVERITIES = (1, 2, 3, 4, 5)


def corrupt(frames: torch.Tensor, name: str, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` 1..5 to a uint8 clip; severity 0 returns a copy
    of the clean clip, so clean and corrupted evaluation can share one code path."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be an integer 0..5, got {severity!r}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected a T x H x W x 3 uint8 clip, got {frames.dtype} {tuple(frames.shape)}")
    if severity == 0:
        return frames.clone()
    return CORRUPTIONS[name](frames, severity, rng)
