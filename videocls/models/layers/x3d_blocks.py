"""X3D's building blocks: the (2+1)D stem, the depthwise bottleneck with squeeze-excitation, and
the projected-pool head (Feichtenhofer, X3D, CVPR 2020).

The layout follows PySlowFast (``stem_helper.X3DStem``, ``resnet_helper.X3DTransform``,
``operators.SE``, ``head_helper.X3DHead``) and pytorchvideo (``models/x3d.py``), which agree
except where ``videocls.models.x3d`` says. Every BatchNorm uses PyTorch's defaults (eps 1e-5,
momentum 0.1), as both do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from videocls.models.layers.heads import ClassifierHead
from videocls.models.layers.resnet_blocks import ConvBnAct3d


def round_width(width: float, multiplier: float, *, divisor: int = 8, min_width: int = 8) -> int:
    """``width * multiplier`` to the nearest multiple of ``divisor`` (at least ``min_width``), one
    ``divisor`` more where rounding lost over 10%: X3D's channel rule, used for the SE widths."""
    scaled = width * multiplier
    rounded = max(min_width, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class X3DStem(nn.Module):
    """A 1 x 3 x 3 conv with spatial stride 2, then a depthwise T x 1 x 1 conv, BN, ReLU; no pooling."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(in_channels, out_channels, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(out_channels, out_channels, (temporal_kernel, 1, 1),
                                padding=(temporal_kernel // 2, 0, 0), groups=out_channels, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_t(self.conv_xy(x))))


class SqueezeExcite3d(nn.Module):
    """Channel gates from the clip's mean: 1x1x1 conv, ReLU, 1x1x1 conv, sigmoid (both convs with bias)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, reduced, 1)
        self.fc2 = nn.Conv3d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3, 4), keepdim=True))))
        return x * gate.sigmoid()


class X3DBottleneck(nn.Module):
    """1x1x1 -> depthwise T x 3 x 3 (spatial stride) -> [SE] -> swish -> 1x1x1, plus the input.

    ReLU after the first conv and after the sum; swish (SiLU) after the depthwise conv.
    ``se_channels`` 0 means no SE. The shortcut is a strided 1x1x1 projection when the channel
    count or resolution changes, with a BN unless ``shortcut_bn=False`` (pytorchvideo's res2).
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        spatial_stride: int,
        temporal_kernel: int = 3,
        se_channels: int = 0,
        shortcut_bn: bool = True,
    ) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        kernel = (temporal_kernel, 3, 3)
        self.conv_a = nn.Conv3d(in_channels, inner_channels, 1, bias=False)
        self.bn_a = nn.BatchNorm3d(inner_channels)
        self.conv_b = nn.Conv3d(inner_channels, inner_channels, kernel, stride, tuple(k // 2 for k in kernel),
                                groups=inner_channels, bias=False)
        self.bn_b = nn.BatchNorm3d(inner_channels)
        self.se = SqueezeExcite3d(inner_channels, se_channels) if se_channels else nn.Identity()
        self.conv_c = nn.Conv3d(inner_channels, out_channels, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.swish = nn.SiLU()
        if in_channels != out_channels or spatial_stride != 1:
            self.shortcut = ConvBnAct3d(in_channels, out_channels, (1, 1, 1), stride=stride, act=False)
            if not shortcut_bn:
                self.shortcut.bn = nn.Identity()
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.swish(self.se(self.bn_b(self.conv_b(out))))
        out = self.bn_c(self.conv_c(out))
        return self.relu(out + self.shortcut(x))


class X3DHead(ClassifierHead):
    """1x1x1 conv + BN + ReLU (``conv_5``), average pool, 1x1x1 conv + ReLU (``lin_5``), then the
    shared classifier (dropout, ``proj``).

    The pool comes before ``lin_5`` and its ReLU, so unlike a ResNet head the test-time pooling
    changes the features, not only the logits' average. ``pool="global"`` averages the whole map;
    ``"window"`` / ``"window_softmax"`` pool with ``window`` (T x H x W cells, stride 1), apply
    ``lin_5`` and the classifier at every position, and average the logits (pytorchvideo without
    its softmax) or the softmax probabilities (pytorchvideo's hub default and PySlowFast), as
    ``videocls.models.layers.heads`` describes.
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        features: int,
        num_classes: int,
        dropout: float,
        *,
        pool: str = "global",
        window: Sequence[int] | None = None,
    ) -> None:
        # The classifier's own windows are 1 x 1 x 1: the pooling happened before lin_5.
        windows = None if pool == "global" else [(1, 1, 1)]
        super().__init__(features, num_classes, dropout, pool=pool, windows=windows)
        if pool != "global" and (window is None or min(window) < 1):
            raise ValueError(f"head_pool={pool!r} needs a positive T x H x W window, got {window}")
        self.window = tuple(int(w) for w in window) if pool != "global" else None
        self.conv_5 = ConvBnAct3d(in_channels, inner_channels, (1, 1, 1))
        self.lin_5 = nn.Conv3d(inner_channels, features, 1, bias=False)

    def forward(self, pathways: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        (x,) = pathways
        x = self.conv_5(x)
        if self.window is None:
            x = x.mean(dim=(2, 3, 4), keepdim=True)
        else:  # a window larger than the map covers the map along that axis, as a global pool would
            x = F.avg_pool3d(x, tuple(min(k, s) for k, s in zip(self.window, x.shape[2:])), stride=1)
        x = F.relu(self.lin_5(x))
        return super().forward([x], pre_logits=pre_logits)


def head_window(frames: int, crop: int, *, stride: int = 32) -> tuple[int, int, int]:
    """The res5 map of a ``frames`` x ``crop`` x ``crop`` clip: X3D never strides in time, and each
    of its five stride-2 layers (kernel 3, padding 1) rounds up, hence ``ceil(crop / 32)``."""
    if frames < 1 or crop < 1:
        raise ValueError(f"the head's training input ({frames} frames, {crop} px) leaves no res5 cell")
    return frames, math.ceil(crop / stride), math.ceil(crop / stride)
