"""The ResNet/SlowFast classifier head, with the three test-time poolings in use.

PySlowFast and pytorchvideo pool res5 with a fixed ``AvgPool3d`` whose kernel is sized for the
*training* input (``T' x crop/32 x crop/32``, stride 1), apply the classifier at every position
of the pooled map, and average over the positions ("fully convolutional" testing). At the
training size the map has one position and this is a global average. At a larger test crop it
is not: at 256 px an 8 x 8 res5 map pooled with the 7 x 7 training window has 2 x 2 positions,
so the centre of the map counts more than its border. ``head_pool`` selects:

``"global"``   mean over the whole map, then the classifier (videocls's default; torchvision,
               timm and MMAction2 do this). Same as the others at the training size.
``"window"``   pytorchvideo's hub models (``create_res_basic_head``, no activation): the
               classifier at every window position, logits averaged. Since the classifier is
               linear this is the classifier applied to the mean of the windowed averages.
``"window_softmax"``  PySlowFast (``head_helper.ResNetBasicHead`` in eval mode, ``HEAD_ACT:
               softmax``): softmax at every position, probabilities averaged. The head returns
               ``log`` of that mean, so any later softmax (the test-time view aggregation,
               calibration, the loss) sees exactly PySlowFast's probabilities; with one
               position the plain logits are returned (same softmax, same loss).
               Use it with the ``mean_softmax`` view aggregation (PySlowFast's ensemble);
               ``mean_logits`` would average log-probabilities instead.

A window larger than the feature map (a shorter clip or a smaller crop than in training)
covers the whole map along that axis, as a global pool would; PySlowFast would fail there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HEAD_POOLS = ("global", "window", "window_softmax")


class ClassifierHead(nn.Module):
    """Pool every pathway, concatenate the channels, dropout, then a linear classifier.

    ``windows`` (per pathway, ``T x H x W`` in res5 cells) is needed by the window poolings:
    the models derive it from the clip length and crop they train at (``head_pool_frames``,
    ``head_pool_crop``).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        dropout: float,
        *,
        pool: str = "global",
        windows: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        if pool not in HEAD_POOLS:
            raise ValueError(f"head_pool must be one of {HEAD_POOLS}, got {pool!r}")
        if pool != "global" and (not windows or any(min(w) < 1 for w in windows)):
            raise ValueError(f"head_pool={pool!r} needs a positive T x H x W window per pathway: {windows}")
        self.pool = pool
        self.windows = [tuple(int(v) for v in w) for w in windows] if windows else None
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, num_classes)

    def _pooled(self, pathways: Sequence[torch.Tensor]) -> torch.Tensor:
        """B x C x t x h x w: each pathway averaged over its window (stride 1), concatenated."""
        pooled = []
        for x, window in zip(pathways, self.windows):
            kernel = tuple(min(k, size) for k, size in zip(window, x.shape[2:]))
            pooled.append(F.avg_pool3d(x, kernel, stride=1))
        grids = {tuple(p.shape[2:]) for p in pooled}
        if len(grids) != 1:
            raise ValueError(
                f"the head's windows {self.windows} leave the pathways with different position grids "
                f"{sorted(grids)}: their clips' lengths or sizes do not match the window's training input"
            )
        return torch.cat(pooled, dim=1)

    def forward(self, pathways: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        if self.pool == "global":
            x = torch.cat([p.mean(dim=(2, 3, 4)) for p in pathways], dim=1)
            return x if pre_logits else self.proj(self.dropout(x))
        grid = self._pooled(pathways)
        if pre_logits or self.pool == "window":
            x = grid.mean(dim=(2, 3, 4))  # the classifier is linear: mean of logits = logits of mean
            return x if pre_logits else self.proj(self.dropout(x))
        logits = self.proj(self.dropout(grid.flatten(2).transpose(1, 2)))  # B x positions x classes
        if logits.shape[1] == 1:
            return logits[:, 0]
        log_probs = logits.log_softmax(dim=-1)
        return log_probs.logsumexp(dim=1) - math.log(logits.shape[1])  # log of the mean probability


def head_windows(
    pool: str, *, frames: Sequence[int], crop: int, stride: int
) -> list[tuple[int, int, int]] | None:
    """Per-pathway pooling windows: ``frames`` res5 frames per pathway at a ``crop``-pixel training
    input that the network downsamples ``stride`` times (32; 16 without the stem's max-pool)."""
    if pool == "global":
        return None
    if crop < stride or any(f < 1 for f in frames):
        raise ValueError(f"the head's training input ({list(frames)} frames, {crop} px) leaves no res5 cell")
    return [(f, crop // stride, crop // stride) for f in frames]
