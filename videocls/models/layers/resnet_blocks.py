"""Building blocks shared by the 3D ResNets (C2D, I3D, Slow) and SlowFast.

The layout follows PySlowFast and pytorchvideo exactly, so that their checkpoints map one to
one: a bottleneck's temporal kernel sits in its first 1x1 conv (``conv_a``), its spatial stride
in the 3x3 conv (``conv_b``, "ResNet v1.5"), and every BatchNorm uses PyTorch's defaults
(eps 1e-5, momentum 0.1), as both reference implementations do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from videocls.models.layers.types import StateDict

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ConvBnAct3d(nn.Module):
    """Conv3d without bias, BatchNorm3d, optional ReLU; odd kernels are padded to keep the size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        act: bool = True,
    ) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ResNetStem3d(ConvBnAct3d):
    """ResNet conv1 + pool1 in 3D: a T x 7 x 7 conv with spatial stride 2, then a 1 x 3 x 3 max-pool
    with stride 2. The temporal size is kept; T is 1 for C2D/Slow, 5 for I3D and the Fast pathway.
    ``pool=False`` drops the max-pool (no parameters): twice the resolution for tiny inputs."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, pool: bool = True) -> None:
        super().__init__(in_channels, out_channels, (temporal_kernel, 7, 7), stride=(1, 2, 2))
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(super().forward(x))


class Bottleneck3d(nn.Module):
    """Residual bottleneck: T x 1 x 1 -> 1 x 3 x 3 (spatial stride) -> 1 x 1 x 1, plus the input.

    The shortcut is a strided 1 x 1 x 1 projection when the channel count or resolution changes.
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        temporal_kernel: int,
        spatial_stride: int,
    ) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        t_kernel, t_pad = (temporal_kernel, 1, 1), (temporal_kernel // 2, 0, 0)
        self.conv_a = nn.Conv3d(in_channels, inner_channels, t_kernel, padding=t_pad, bias=False)
        self.bn_a = nn.BatchNorm3d(inner_channels)
        self.conv_b = nn.Conv3d(inner_channels, inner_channels, (1, 3, 3), stride, (0, 1, 1), bias=False)
        self.bn_b = nn.BatchNorm3d(inner_channels)
        self.conv_c = nn.Conv3d(inner_channels, out_channels, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if in_channels != out_channels or spatial_stride != 1:
            self.shortcut = ConvBnAct3d(in_channels, out_channels, (1, 1, 1), stride=stride, act=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.relu(self.bn_b(self.conv_b(out)))
        out = self.bn_c(self.conv_c(out))
        return self.relu(out + self.shortcut(x))


def make_res_stage(
    in_channels: int,
    inner_channels: int,
    out_channels: int,
    *,
    num_blocks: int,
    temporal_kernels: Sequence[int],
    spatial_stride: int,
) -> nn.Sequential:
    """``num_blocks`` bottlenecks; block i uses ``temporal_kernels[i % len(temporal_kernels)]``
    (I3D alternates 3 and 1 this way), and only the first block strides or changes width."""
    return nn.Sequential(
        *(
            Bottleneck3d(
                in_channels if i == 0 else out_channels,
                inner_channels,
                out_channels,
                temporal_kernel=temporal_kernels[i % len(temporal_kernels)],
                spatial_stride=spatial_stride if i == 0 else 1,
            )
            for i in range(num_blocks)
        )
    )


def make_res_stages(
    width: int,
    stage_blocks: Sequence[int],
    temporal_kernels: Sequence[Sequence[int]],
    lateral_channels: Sequence[int] = (0, 0, 0, 0),
) -> list[nn.Sequential]:
    """res2..res5 behind a stem of ``width`` channels.

    Stage i has bottleneck width ``width * 2**i``, outputs four times that, and halves the
    resolution except in res2. ``lateral_channels[i]`` are extra input channels of stage i:
    SlowFast concatenates Fast-pathway features onto the Slow pathway before each stage.
    """
    for name, value in (("stage_blocks", stage_blocks), ("temporal_kernels", temporal_kernels)):
        if len(value) != len(STAGE_NAMES):
            raise ValueError(f"{name} needs one entry per stage (res2..res5), got {tuple(value)}")
    stages = []
    in_channels = width
    for i, (num_blocks, kernels, extra) in enumerate(zip(stage_blocks, temporal_kernels, lateral_channels)):
        inner = width * 2**i
        stride = 1 if i == 0 else 2
        stages.append(make_res_stage(in_channels + extra, inner, 4 * inner, num_blocks=num_blocks,
                                     temporal_kernels=kernels, spatial_stride=stride))
        in_channels = 4 * inner
    return stages


def init_resnet_weights(model: nn.Module, zero_init_residual: bool = True, *,
                        residual_block: type[nn.Module] | None = None) -> None:
    """PySlowFast/pytorchvideo initialisation: He-normal (fan-out) convs, BN scale 1 and shift 0,
    classifier N(0, 0.01).

    With ``zero_init_residual`` (their default) the last BN of each residual branch starts at
    zero, so every block starts as its shortcut (Goyal et al., 2017). That suits long schedules;
    in a short one with few blocks it stalls training, since Adam grows a zero scale by about
    the learning rate per step: the branches stay shut for hundreds of steps.
    ``residual_block``: the block class whose ``bn_c`` closes the branch (default
    :class:`Bottleneck3d`; X3D passes its own).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, residual_block or Bottleneck3d):
                nn.init.zeros_(m.bn_c.weight)


# Bottleneck3d's sub-modules as pytorchvideo and PySlowFast name them, as (regex, replacement)
# rules for ``rename_keys``; the family files add the rules for stems, stages and heads.
PYTORCHVIDEO_BLOCK_RULES = [
    (r"\.branch1_conv\.", ".shortcut.conv."),
    (r"\.branch1_norm\.", ".shortcut.bn."),
    (r"\.branch2\.conv_([abc])\.", r".conv_\1."),
    (r"\.branch2\.norm_([abc])\.", r".bn_\1."),
]
PYSLOWFAST_BLOCK_RULES = [
    (r"\.branch1\.", ".shortcut.conv."),
    (r"\.branch1_bn\.", ".shortcut.bn."),
    (r"\.branch2\.([abc])\.", r".conv_\1."),
    (r"\.branch2\.([abc])_bn\.", r".bn_\1."),
]


def rename_key(key: str, rules: Sequence[tuple[str, str]]) -> str:
    """Apply every ``(regex, replacement)`` rule, in order, to ``key``."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def rename_keys(state: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]]) -> StateDict:
    """``rename_key`` on every key. Keys no rule touches pass through unchanged, so the strict
    load that follows names them."""
    return {rename_key(key, rules): value for key, value in state.items()}


# timm / torchvision ResNet names -> ours. The 2D classifier ("fc") has no counterpart.
_RULES_2D = [
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.bn."),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.", r"layer\1.\2.shortcut.conv."),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.", r"layer\1.\2.shortcut.bn."),
    (r"\.conv1\.", ".conv_a."),
    (r"\.conv2\.", ".conv_b."),
    (r"\.conv3\.", ".conv_c."),
    (r"\.bn1\.", ".bn_a."),
    (r"\.bn2\.", ".bn_b."),
    (r"\.bn3\.", ".bn_c."),
    *[(rf"^layer{i + 1}\.", f"{name}.") for i, name in enumerate(STAGE_NAMES)],
]


@torch.no_grad()
def inflate_from_2d(model: nn.Module, state_2d: Mapping[str, torch.Tensor]) -> list[str]:
    """Initialise a 3D ResNet (or SlowFast's Slow pathway) from a 2D ImageNet ResNet state dict
    with timm/torchvision names (``conv1``, ``layer1.0.conv2``, ``layer1.0.downsample.0``...).

    Each k x k kernel is repeated along the temporal kernel T and divided by T (I3D inflation,
    as in PySlowFast), so a clip of identical frames gives the 2D network's activations
    wherever the temporal receptive field stays inside the clip (the zero temporal padding of
    T > 1 kernels changes the frames at the clip's borders). BN parameters and statistics
    are copied; the 2D classifier is dropped.

    SlowFast: the Slow pathway is inflated, and its input channels that receive the lateral
    (Fast) features get zero weights, so the Slow pathway starts as exactly the inflated 2D
    network. The Fast pathway and the laterals keep their initialisation: their widths match no
    2D ResNet. Returns the model's state-dict entries that were left as they were.
    """
    own = model.state_dict()
    prefix = "slow." if any(k.startswith("slow.") for k in own) else ""
    if "conv1.weight" not in state_2d or "layer1.0.conv1.weight" not in state_2d:
        raise ValueError(
            "state_2d is not a timm/torchvision ResNet state dict (no 'conv1.weight' / "
            f"'layer1.0.conv1.weight'); first keys: {list(state_2d)[:5]}"
        )
    problems, loaded = [], set()
    for key, src in state_2d.items():
        if key.startswith("fc."):
            continue
        name = prefix + rename_key(key, _RULES_2D)
        if name not in own:
            problems.append(f"{key}: no '{name}' in the model")
            continue
        dst = own[name]
        if src.ndim == 4 and dst.ndim == 5:  # out x in x k x k -> out x in' x T x k x k, in' >= in
            fits = src.shape[0] == dst.shape[0] and src.shape[1] <= dst.shape[1]
            fits = fits and src.shape[2:] == dst.shape[3:]
            if fits:
                dst.zero_()
                dst[:, : src.shape[1]] = src.unsqueeze(2) / dst.shape[2]
        else:
            fits = dst.shape == src.shape
            if fits:
                dst.copy_(src)
        if not fits:
            problems.append(f"{key}: 2D {tuple(src.shape)} does not inflate to {name} {tuple(dst.shape)}")
        loaded.add(name)
    if problems:
        raise ValueError(f"2D weights do not fit {type(model).__name__}:\n  " + "\n  ".join(problems[:20]))
    return [k for k in own if k not in loaded]
