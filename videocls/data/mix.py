"""Mixup, CutMix and label smoothing on training batches (timm's batch mode).

Every clip is mixed with the clip at the mirrored position in the batch (``batch.flip(0)``),
with one mixing weight ``lam`` and, for CutMix, one box for the whole batch: the same box in
every frame and in every SlowFast pathway.

Randomness comes from an ``np.random.Generator`` that the caller makes per batch, so a resumed
run mixes its batches exactly as the uninterrupted run would; ``batch_generator`` builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Video = torch.Tensor | list[torch.Tensor]

_MIX_STREAM = 0x6D6978  # keeps these generators apart from the dataset's (seed, epoch, index, attempt) ones


def batch_generator(seed: int, epoch: int, batch_index: int, rank: int) -> np.random.Generator:
    """The generator for one batch's mixing: a function of the batch's place in training only."""
    return np.random.default_rng([_MIX_STREAM, seed, epoch, batch_index, rank])


def soft_targets(
    label: torch.Tensor, num_classes: int, lam: float = 1.0, smoothing: float = 0.0
) -> torch.Tensor:
    """``lam * y + (1 - lam) * y.flip(0)`` for smoothed one-hot ``y``.

    Smoothing puts ``smoothing / num_classes`` on every class and the rest on the true one
    (the convention of timm and ``nn.CrossEntropyLoss(label_smoothing=...)``).
    """
    off = smoothing / num_classes
    one_hot = F.one_hot(label.long(), num_classes).float() * (1.0 - smoothing) + off
    return one_hot.flip(0).lerp(one_hot, lam)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a box with ``1 - lam`` of the area, centred at a uniform
    random pixel and clipped to the frame (timm's ``rand_bbox``)."""
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


@dataclass(frozen=True)
class Mixup:
    """Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019) with label smoothing, per batch.

    With probability ``prob`` the batch is mixed; when both alphas are positive, CutMix is
    chosen with probability ``switch_prob`` and Mixup otherwise. ``lam ~ Beta(alpha, alpha)``.
    CutMix's target weight is the area actually kept after the box is clipped to the frame.

    ``__call__(video, label, rng)`` takes float clips ``B C T H W`` (or a list of pathways, all
    with the same batch size) and integer labels ``B``; it returns the mixed clips (the input
    tensors are never modified) and soft targets ``B x num_classes`` for ``SoftTargetCrossEntropy``.
    """

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or self.mixup_alpha + self.cutmix_alpha == 0:
            raise ValueError(
                "Mixup needs non-negative alphas, at least one positive, got "
                f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha} "
                "(for label smoothing alone use the loss's label_smoothing)"
            )
        if not (0 <= self.prob <= 1 and 0 <= self.switch_prob <= 1 and 0 <= self.label_smoothing < 1):
            raise ValueError(f"Mixup probabilities and label_smoothing must lie in [0, 1]: {self}")
        if self.num_classes < 1:
            raise ValueError(f"Mixup num_classes must be positive, got {self.num_classes}")

    def __call__(
        self, video: Video, label: torch.Tensor, rng: np.random.Generator
    ) -> tuple[Video, torch.Tensor]:
        pathways = [video] if isinstance(video, torch.Tensor) else list(video)
        self._check(pathways, label)
        lam, cutmix = self._draw(rng)
        if lam == 1.0:
            mixed = pathways
        elif cutmix:
            mixed, lam = _cutmix(pathways, lam, rng)
        else:
            mixed = [x.flip(0).lerp(x, lam) for x in pathways]
        target = soft_targets(label, self.num_classes, lam, self.label_smoothing)
        return (mixed[0] if isinstance(video, torch.Tensor) else mixed), target

    def _draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """``(lam, use_cutmix)`` in timm's draw order."""
        if rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = bool(rng.random() < self.switch_prob)
        else:
            cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), cutmix

    def _check(self, pathways: Sequence[torch.Tensor], label: torch.Tensor) -> None:
        if label.ndim != 1 or label.is_floating_point():
            raise ValueError(
                f"Mixup takes integer class labels of shape (B,), got {label.dtype} {tuple(label.shape)}"
            )
        for x in pathways:
            if x.ndim != 5 or not x.is_floating_point() or x.shape[0] != label.shape[0]:
                raise ValueError(
                    f"Mixup takes float clips B C T H W with B = {label.shape[0]} labels, "
                    f"got {x.dtype} {tuple(x.shape)}"
                )


def _cutmix(
    pathways: Sequence[torch.Tensor], lam: float, rng: np.random.Generator
) -> tuple[list[torch.Tensor], float]:
    """Paste the same box from the flipped batch into every frame of every pathway.

    The box is drawn on the first pathway's frame size and scaled to the others' (SlowFast
    pathways share it, so the box is the same); ``lam`` becomes the kept area of the first.
    """
    height, width = pathways[0].shape[-2:]
    top, bottom, left, right = cutmix_box(height, width, lam, rng)
    mixed = []
    for x in pathways:
        sy, sx = x.shape[-2] / height, x.shape[-1] / width
        y0, y1, x0, x1 = round(top * sy), round(bottom * sy), round(left * sx), round(right * sx)
        out = x.clone()
        out[..., y0:y1, x0:x1] = x[..., y0:y1, x0:x1].flip(0)
        mixed.append(out)
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)
