"""Clip transforms on the training device (``data.gpu_transforms=true``): workers ship uint8.

A loader worker's CPU time per clip is its decode plus the transform, and with a format made
for speed (``tools/prepare_videos.py --format fast``) the transform is half of it: resizing,
converting to float, normalising and copying four bytes per value to the main process. With
this module the work splits in two:

- **Worker** (:class:`DeferredTransform`, the dataset's transform): decode, then draw every
  random parameter exactly as :class:`~videocls.data.transforms.ClipTransform` would, from
  the same generator in the same order (scale jitter or RandomResizedCrop box, crop offset,
  flip, RandAugment's ops, erasing's boxes), and ship uint8 pixels with the parameters. A
  training clip ships the part of the frames its crop reads (the *canvas*: a fixed size per
  config, so clips of any resolution batch together), after a cheap uint8 short-side resize
  for frames larger than ``data.gpu_resize_short`` (default: the top of the scale jitter).
  A test view ships its uint8 crop: the short-side resize (once per clip, in the dataset)
  and the crop are the CPU path's own.
- **Device** (:class:`DeviceTransform`, applied by the trainer, evaluator and tester right
  after the batch reaches the device): bilinear resampling of the whole batch at once
  (resize, crop and flip are one gather and two interpolations, in float),
  RandAugment (clip by clip, with the CPU path's own kernels), normalisation, erasing,
  SlowFast's pathways; mixup/CutMix stays where it was, on the device batch in the trainer.

Repeated augmentation (``data.clips_per_video=k``) works alike: each of an item's k clips is
its own payload, drawn from that clip's generator as the CPU path draws it (frames the k
clips share, ``data.clips_share_frames``, are shrunk once for all of them), and the collate
flattens the k payloads of each video into k rows that the device finishes as any others.

What is the same as the CPU path, and what is not (``tests/data/test_gpu_transforms.py``):

- Test views are the same tensors, bit for bit: the uint8 crop is the CPU path's, and the
  device normalises through a 256-entry table per channel computed with the CPU path's own
  operations (a GPU's ``x / 255`` multiplies by the reciprocal and could differ in the last bit).
- Training clips draw the same parameters from the same ``(seed, epoch, index)`` generator
  as the CPU path, so crop boxes, flips and augmentation ops are identical clip for clip. The
  pixels are PyTorch's float bilinear resize of the same frames; the CPU path's uint8 resize
  (fixed-point weights, rounded to uint8) is up to one level away from it. Frames whose
  short side exceeds ``data.gpu_resize_short`` are resized twice (in the worker to that side,
  on the device to the drawn scale), which the CPU path does in one step. Erasing's
  per-pixel noise is drawn on the device from a seed drawn by the worker: the same N(0, 1)
  distribution, other values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from videocls.data.augment import RAND_AUGMENT_OPS, random_resized_crop_box
from videocls.data.sampling import pack_pathways
from videocls.data.transforms import (
    ClipTransform,
    jitter_short_side,
    normalize,
    short_side_resize,
    to_unit_float,
    uniform_crop,
)

_NO_OP = -1.0  # RandAugment rows of ops that were not drawn


def _short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The frame size ``short_side_resize`` gives (long side floored, as PySlowFast)."""
    if min(height, width) == size:
        return height, width
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def _source_coords(start: float, count: int, scale: float, low: float, high: float) -> np.ndarray:
    """Where bilinear resampling (``align_corners=False``) reads output pixels ``start ..
    start + count - 1`` of a frame resized by ``1 / scale``: ``(i + 0.5) * scale - 0.5``,
    clamped to ``[low, high]`` as PyTorch's interpolation clamps at the frame's edges."""
    return np.clip((start + np.arange(count) + 0.5) * scale - 0.5, low, high)


@dataclass(frozen=True, kw_only=True)
class DeferredTransform:
    """The worker's half of ``base`` (a :class:`ClipTransform`): parameters and uint8 pixels.

    ``__call__`` takes what the dataset gives a transform (uint8 ``T H W 3`` frames, the
    item's generator, the test crop index) and returns the payload :class:`DeviceTransform`
    finishes: for training a dict (``frames`` uint8 ``T x S x S x 3`` canvas, ``coords`` the
    resampling positions, ``rand_augment`` and ``erasing`` the drawn ops, ``seed``), for test
    the uint8 crop ``3 x T x crop x crop``. ``crop_size``, ``min_short_side`` and ``train``
    are the base transform's, which the dataset reads (test views: one resize per clip).
    """

    base: ClipTransform
    resize_short: int | None = None  # data.gpu_resize_short; None: the top of the scale jitter
    pathway_alpha: int | None = None  # SlowFast: the pathways are cut on the device
    canvas: int = field(init=False)

    def __post_init__(self) -> None:
        side = self.base.max_short_side if self.resize_short is None else self.resize_short
        if isinstance(side, bool) or not isinstance(side, int) or side < 1:
            raise ValueError(f"data.gpu_resize_short must be an integer >= 1 or null, got {side!r}")
        object.__setattr__(self, "resize_short", side)
        crop = self.base.resized_crop
        if crop is not None:  # the box: at most the frame, and within the aspect-ratio range
            bound = side * max(1.0, crop.ratio[1], 1.0 / crop.ratio[0])
        else:  # the crop, read from a frame scaled by short side / jitter (at most resize_short / min)
            low = self.base.min_short_side  # the long side's scale is larger by its flooring
            bound = self.base.crop_size * side / low / (1 - 1 / (low + 1))
        object.__setattr__(self, "canvas", int(math.ceil(bound)) + 3)

    @property
    def crop_size(self) -> int:
        return self.base.crop_size

    @property
    def min_short_side(self) -> int:
        return self.base.min_short_side

    @property
    def train(self) -> bool:
        return self.base.train

    @property
    def dtype(self) -> torch.dtype:
        """What a test view ships (the dataset's placeholder for an unreadable view matches it)."""
        return torch.uint8

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator, spatial_idx: int = 1):
        if not self.train:  # the CPU path up to its uint8 crop (the resize is skipped when done)
            clip = frames.permute(0, 3, 1, 2)  # T C H W, a view: channels-last in memory
            clip = uniform_crop(short_side_resize(clip, self.min_short_side), self.crop_size, spatial_idx)
            return clip.permute(1, 0, 2, 3).contiguous()
        frames = self.shrink(frames)  # T H W 3
        num_frames, height, width = frames.shape[:3]
        ys, xs = self._geometry(height, width, rng)
        if self.base.flip and rng.random() < 0.5:
            xs = xs[::-1]
        # Cut the pixels the resampling reads (numpy: no torch thread pool in a forked worker).
        y0, x0 = int(ys.min()), int(xs.min())
        y1 = min(int(ys.max()) + 2, height)
        x1 = min(int(xs.max()) + 2, width)
        if max(y1 - y0, x1 - x0) > self.canvas:  # a bound in __post_init__ is wrong: a bug
            raise AssertionError(f"region {y1 - y0}x{x1 - x0} exceeds the canvas {self.canvas}")
        canvas = np.zeros((num_frames, self.canvas, self.canvas, 3), dtype=np.uint8)
        canvas[:, : y1 - y0, : x1 - x0] = frames.numpy()[:, y0:y1, x0:x1]
        coords = np.stack([ys - y0, xs - x0]).clip(0, None)
        return {
            "frames": torch.from_numpy(canvas),
            "coords": torch.from_numpy(coords),
            "rand_augment": self._rand_augment_rows(rng),
            "erasing": self._erasing_rows(rng),
            # Drawn last, so every draw above is the CPU path's: erasing's noise on the device.
            "seed": torch.as_tensor(int(rng.integers(2**62)), dtype=torch.int64),
        }

    def shrink(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``T H W 3`` training frames with a short side above ``resize_short`` resized to
        it (the worker's cheap resize). It draws nothing, so the dataset resizes frames that k
        clips share once (``clips_share_frames``) and each clip then finds them at the size."""
        if min(frames.shape[1:3]) <= self.resize_short:
            return frames
        return short_side_resize(frames.permute(0, 3, 1, 2), self.resize_short).permute(0, 2, 3, 1)

    def _geometry(self, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Source rows and columns of the crop's pixels, drawn as ``ClipTransform`` draws them."""
        base, size = self.base, self.crop_size
        if base.resized_crop is not None:
            top, left, h, w = random_resized_crop_box(height, width, base.resized_crop.scale,
                                                      base.resized_crop.ratio, rng)
            # The box is cut first, then resized: resampling clamps at the box's edges.
            return (top + _source_coords(0, size, h / size, 0, h - 1),
                    left + _source_coords(0, size, w / size, 0, w - 1))
        side = jitter_short_side(base.min_short_side, base.max_short_side, rng,
                                 inverse_uniform=base.inverse_uniform_scale)
        new_h, new_w = _short_side_shape(height, width, side)
        y = int(rng.integers(0, new_h - size + 1))  # random_crop's draws, in its order
        x = int(rng.integers(0, new_w - size + 1))
        return (_source_coords(y, size, height / new_h, 0, height - 1),
                _source_coords(x, size, width / new_w, 0, width - 1))

    def _rand_augment_rows(self, rng: np.random.Generator) -> torch.Tensor:
        """``num_ops x 3`` (op index in ``RAND_AUGMENT_OPS``, level, sign); unused rows -1."""
        augment = self.base.rand_augment
        rows = np.full((augment.num_ops if augment else 0, 3), _NO_OP)
        for row, (op, level, sign) in enumerate(augment.draw(rng) if augment else []):
            rows[row] = (RAND_AUGMENT_OPS.index(op), level, sign)
        return torch.from_numpy(rows)

    def _erasing_rows(self, rng: np.random.Generator) -> torch.Tensor:
        """``max_count x 7`` (top, left, h, w, fill colour for ``rand``); unused rows -1."""
        erasing = self.base.erasing
        rows = np.full((erasing.max_count if erasing else 0, 7), -1.0)
        boxes = erasing.draw(rng, 3, self.crop_size, self.crop_size) if erasing else []
        for row, (top, left, h, w, fill) in enumerate(boxes):
            colour = fill.flatten()[:3].tolist() if erasing.mode == "rand" else [0.0] * 3
            rows[row] = (top, left, h, w, *colour)
        return torch.from_numpy(rows)

    def on_device(self) -> DeviceTransform:
        return DeviceTransform(base=self.base, pathway_alpha=self.pathway_alpha)


def device_transform_of(dataset) -> DeviceTransform | None:
    """What finishes ``dataset``'s batches on the device, or None when it ships finished clips."""
    transform = getattr(dataset, "transform", None)
    return transform.on_device() if isinstance(transform, DeferredTransform) else None


@dataclass(frozen=True, kw_only=True)
class DeviceTransform:
    """The device's half: a collated batch of :class:`DeferredTransform` payloads -> the model's
    input (``B 3 T H W`` float, or SlowFast's ``[slow, fast]``), on ``device``."""

    base: ClipTransform
    pathway_alpha: int | None = None

    def __call__(self, video, device: torch.device | str):
        device = torch.device(device)
        if isinstance(video, dict):
            clip = self._train(video, device)
        else:  # test views: uint8 B 3 T H W crops
            clip = _lookup(video.to(device, non_blocking=True), self._table(device))
        if not self.pathway_alpha:
            return clip
        # pack_pathways cuts a C T H W clip along dim 1: fold the batch into the channels.
        return [p.unflatten(0, clip.shape[:2]) for p in pack_pathways(clip.flatten(0, 1), self.pathway_alpha)]

    def _table(self, device: torch.device) -> torch.Tensor:
        """``3 x 256``: the CPU path's normalised value of every uint8 level, by its own ops."""
        levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
        return normalize(to_unit_float(levels), self.base.mean, self.base.std).view(3, 256).to(device)

    def _train(self, payload: dict, device: torch.device) -> torch.Tensor:
        frames = payload["frames"].to(device, non_blocking=True)  # B T S S 3 uint8
        coords = payload["coords"].to(device, non_blocking=True)  # B 2 crop (float64)
        clip = _resample(frames, coords[:, 0], coords[:, 1])  # B T crop crop 3, in 0-255
        clip = clip.permute(0, 1, 4, 2, 3).div_(255.0)  # B T C H W in [0, 1], as to_unit_float
        base = self.base
        if base.rand_augment is not None:
            rows = payload["rand_augment"].tolist()
            clip = torch.stack([self._rand_augment(c, r) for c, r in zip(clip, rows)])
        mean = torch.as_tensor(base.mean, dtype=clip.dtype, device=device).view(1, 1, -1, 1, 1)
        std = torch.as_tensor(base.std, dtype=clip.dtype, device=device).view(1, 1, -1, 1, 1)
        clip = (clip - mean) / std
        if base.erasing is not None:
            self._erase(clip, payload["erasing"].tolist(), payload["seed"].tolist())
        return clip.permute(0, 2, 1, 3, 4).contiguous()  # B C T H W

    def _rand_augment(self, clip: torch.Tensor, rows: list[list[float]]) -> torch.Tensor:
        for op, level, sign in rows:
            if op != _NO_OP:
                clip = self.base.rand_augment.apply_op(clip, RAND_AUGMENT_OPS[int(op)], level, sign)
        return clip

    def _erase(self, clip: torch.Tensor, rows: list[list[list[float]]], seeds: list[int]) -> None:
        """Paint each clip's boxes in place (``clip`` is this module's own tensor)."""
        mode = self.base.erasing.mode
        for b, (boxes, seed) in enumerate(zip(rows, seeds)):
            generator = None
            for top, left, h, w, *colour in boxes:
                if top < 0:
                    continue
                top, left, h, w = int(top), int(left), int(h), int(w)
                if mode == "pixel":
                    if generator is None:
                        generator = torch.Generator(device=clip.device).manual_seed(int(seed))
                    fill = torch.randn(3, h, w, generator=generator, device=clip.device)
                else:  # rand: the worker's colour; const: the mean (zero)
                    fill = torch.tensor(colour, device=clip.device).view(3, 1, 1)
                clip[b, :, :, top : top + h, left : left + w] = fill.to(clip.dtype)


def _resample(frames: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``frames`` (``B T H W C`` uint8) at rows ``ys`` and columns ``xs``
    (``B x n``, already clamped to the frame): ``B T n m C`` float, rows interpolated first as
    PyTorch's separable kernels do."""
    b, t, h, w, c = frames.shape
    y0 = ys.floor().long()
    x0 = xs.floor().long()
    wy = (ys - y0).float().view(b, 1, -1, 1, 1)
    wx = (xs - x0).float().view(b, 1, 1, -1, 1)
    y1, x1 = (y0 + 1).clamp_(max=h - 1), (x0 + 1).clamp_(max=w - 1)

    def rows(index: torch.Tensor) -> torch.Tensor:
        return torch.take_along_dim(frames, index.view(b, 1, -1, 1, 1), dim=2).float()

    top, bottom = rows(y0), rows(y1)
    band = top.mul_(1 - wy).add_(bottom.mul_(wy))  # B T n W C

    def cols(index: torch.Tensor) -> torch.Tensor:
        return torch.take_along_dim(band, index.view(b, 1, 1, -1, 1), dim=3)

    return cols(x0).mul_(1 - wx).add_(cols(x1).mul_(wx))


def _lookup(video: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """uint8 ``B 3 T H W`` -> float through the per-channel ``3 x 256`` table."""
    out = torch.empty(video.shape, dtype=table.dtype, device=video.device)
    for c in range(video.shape[1]):  # int32 indices, a channel at a time: no 8-byte copy of the batch
        index = video[:, c].reshape(-1).int()
        out[:, c] = table[c].index_select(0, index).view(out[:, c].shape)
    return out
