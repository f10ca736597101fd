"""Single-pathway 3D ResNets: C2D, I3D and Slow (ResNet-50 8x8 baselines of PySlowFast).

The three differ only in where the temporal kernels are and in a temporal max-pool:

    model   stem  res2  res3   res4   res5   temporal max-pool after res2
    c2d     1     1     1      1      1      yes (2x)
    i3d     5     3     3,1    3,1    1,3    yes (2x)   "3,1": alternating per block
    slow    1     1     1      3      3      no

Structure and state dicts map one to one onto pytorchvideo's hub models (``c2d_r50``,
``i3d_r50``, ``slow_r50``) and PySlowFast's ``ResNet``; ``checkpoint_filter`` renames either.

Test-time head: ``head_pool="global"`` (default) averages res5 over the whole map;
``"window"`` is pytorchvideo's hub head and ``"window_softmax"`` PySlowFast's, both pooling with
the window of the training input (``head_pool_frames`` frames at ``head_pool_crop`` px: 8 x 224
gives 4 x 7 x 7 for C2D/I3D, 8 x 7 x 7 for Slow). They differ only when the test input is larger
than the training input (the recipes test at 256): see ``videocls.models.layers.heads``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from videocls.models.layers import (
    PYSLOWFAST_BLOCK_RULES,
    PYTORCHVIDEO_BLOCK_RULES,
    STAGE_BLOCKS,
    STAGE_NAMES,
    ClassifierHead,
    ResNetStem3d,
    head_windows,
    inflate_from_2d,
    init_resnet_weights,
    make_res_stages,
    rename_keys,
)
from videocls.models.layers.types import StateDict
from videocls.models.registry import ModelConfig, register_model

_PYTORCHVIDEO_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


class ResNet3d(nn.Module):
    """Stem, res2..res5 and a global-average-pool classifier; takes B x 3 x T x H x W.

    ``temporal_kernels`` gives, per stage, the temporal kernel sizes of the bottlenecks' first
    conv, cycled over the blocks. ``temporal_pool`` halves T after res2 with a max-pool
    (PySlowFast's pool1 for C2D and I3D). ``zero_init_residual``: see ``init_resnet_weights``.
    ``stem_pool=False`` keeps twice the resolution after the stem, for inputs far below 224 px.
    ``head_pool``, ``head_pool_frames``, ``head_pool_crop``: the test-time head (module docstring).
    """

    classifier_prefix = "head.proj"

    def __init__(
        self,
        *,
        stem_temporal_kernel: int,
        temporal_kernels: Sequence[Sequence[int]],
        temporal_pool: bool,
        num_classes: int = 400,
        width: int = 64,
        stage_blocks: Sequence[int] = STAGE_BLOCKS[50],
        dropout: float = 0.5,
        in_channels: int = 3,
        zero_init_residual: bool = True,
        stem_pool: bool = True,
        head_pool: str = "global",
        head_pool_frames: int = 8,
        head_pool_crop: int = 224,
    ) -> None:
        super().__init__()
        self.stem = ResNetStem3d(in_channels, width, stem_temporal_kernel, stem_pool)
        self.res2, self.res3, self.res4, self.res5 = make_res_stages(width, stage_blocks, temporal_kernels)
        self.temporal_pool = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1)) if temporal_pool else nn.Identity()
        self.num_features = 4 * width * 2 ** (len(STAGE_NAMES) - 1)
        res5_frames = head_pool_frames // 2 if temporal_pool else head_pool_frames
        stride = 32 if stem_pool else 16
        windows = head_windows(head_pool, frames=[res5_frames], crop=head_pool_crop, stride=stride)
        self.head = ClassifierHead(self.num_features, num_classes, dropout, pool=head_pool, windows=windows)
        init_resnet_weights(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip -> res5 feature map, B x C x T' x H' x W'."""
        if x.ndim != 5:
            raise ValueError(f"{type(self).__name__} expects B x C x T x H x W, got shape {tuple(x.shape)}")
        x = self.res2(self.stem(x))
        x = self.temporal_pool(x)
        return self.res5(self.res4(self.res3(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits, or the pooled features the classifier sees if ``pre_logits``."""
        return self.head([x], pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter(state: StateDict, model: nn.Module) -> StateDict:
    """pytorchvideo (``blocks.N...``) or PySlowFast (``s1.pathway0_stem...``) keys -> ours."""
    if any(k.startswith(("blocks.", "model.blocks.")) for k in state):
        state = rename_keys(state, [(r"^model\.blocks\.", "blocks.")])  # PySlowFast's PTV wrappers
        # Stage i is the i-th block with residual blocks: C2D/I3D have the temporal pool in between.
        stage_indices = sorted({int(k.split(".")[1]) for k in state if ".res_blocks." in k})
        if len(stage_indices) != len(STAGE_NAMES):
            raise ValueError(f"pytorchvideo checkpoint has residual stages at blocks {stage_indices}, not 4")
        rules = [
            (r"^blocks\.0\.conv\.", "stem.conv."),
            (r"^blocks\.0\.norm\.", "stem.bn."),
            *[(rf"^blocks\.{b}\.res_blocks\.", f"{name}.") for b, name in zip(stage_indices, STAGE_NAMES)],
            (r"^blocks\.\d+\.proj\.", "head.proj."),
            *PYTORCHVIDEO_BLOCK_RULES,
        ]
        return rename_keys(state, rules)
    if any(re.match(r"s\d\.pathway0_", k) for k in state):
        rules = [
            (r"^s1\.pathway0_stem\.conv\.", "stem.conv."),
            (r"^s1\.pathway0_stem\.bn\.", "stem.bn."),
            (r"^s(\d)\.pathway0_res(\d+)\.", r"res\1.\2."),
            (r"^head\.projection\.", "head.proj."),
            *PYSLOWFAST_BLOCK_RULES,
        ]
        return rename_keys(state, rules)
    return state


def _config(params_m: float, gflops: float, paper: str, checkpoint: str) -> ModelConfig:
    """The 8x8 recipe: 8 frames, one every 8th; fvcore GFLOPs of one 8 x 256 x 256 view."""
    return ModelConfig(
        num_frames=8,
        sampling_rate=8,
        crop_size=224,
        paper=paper,
        reference_params_m=params_m,
        reference_gflops=gflops,
        flops_input=(8, 256, 256),
        extra={"checkpoint_url": f"{_PYTORCHVIDEO_ZOO}/{checkpoint}"},
    )


_C2D = _config(
    params_m=24.33,
    gflops=25.6,
    paper="Wang et al., Non-local Neural Networks, CVPR 2018 (C2D baseline)",
    checkpoint="C2D_8x8_R50.pyth",
)
_I3D = _config(
    params_m=28.04,
    gflops=37.3,
    paper="Carreira & Zisserman, Quo Vadis, Action Recognition?, CVPR 2017 (ResNet-50 I3D of Wang et al.)",
    checkpoint="I3D_8x8_R50.pyth",
)
_SLOW = _config(
    params_m=32.45,
    gflops=54.8,
    paper="Feichtenhofer et al., SlowFast Networks for Video Recognition, ICCV 2019 (Slow 8x8)",
    checkpoint="SLOW_8x8_R50.pyth",
)


# The architecture is spelled out as the builders' keyword defaults, so that
# ``registry.builder_kwargs`` lists every key a stored config may set, with its value.


@register_model("c2d_r50", _C2D, checkpoint_filter, init_2d=inflate_from_2d)
def c2d_r50(
    num_classes: int = 400,
    *,
    stem_temporal_kernel: int = 1,
    temporal_kernels: Sequence[Sequence[int]] = ((1,), (1,), (1,), (1,)),
    temporal_pool: bool = True,
    **overrides,
) -> ResNet3d:
    """ResNet-50 applied frame by frame (all temporal kernels 1) with a 2x temporal max-pool.

    For an even number of frames the max-pool's pairs are the same forwards and backwards, so
    the logits do not depend on the frame order: a baseline with no temporal modelling."""
    return ResNet3d(
        num_classes=num_classes,
        stem_temporal_kernel=stem_temporal_kernel,
        temporal_kernels=temporal_kernels,
        temporal_pool=temporal_pool,
        **overrides,
    )


@register_model("i3d_r50", _I3D, checkpoint_filter, init_2d=inflate_from_2d)
def i3d_r50(
    num_classes: int = 400,
    *,
    stem_temporal_kernel: int = 5,
    temporal_kernels: Sequence[Sequence[int]] = ((3,), (3, 1), (3, 1), (1, 3)),
    temporal_pool: bool = True,
    **overrides,
) -> ResNet3d:
    """Inflated ResNet-50: 5x7x7 stem, temporal kernels 3 in alternating bottlenecks."""
    return ResNet3d(
        num_classes=num_classes,
        stem_temporal_kernel=stem_temporal_kernel,
        temporal_kernels=temporal_kernels,
        temporal_pool=temporal_pool,
        **overrides,
    )


@register_model("slow_r50", _SLOW, checkpoint_filter, init_2d=inflate_from_2d)
def slow_r50(
    num_classes: int = 400,
    *,
    stem_temporal_kernel: int = 1,
    temporal_kernels: Sequence[Sequence[int]] = ((1,), (1,), (3,), (3,)),
    temporal_pool: bool = False,
    **overrides,
) -> ResNet3d:
    """SlowFast's Slow pathway alone: temporal kernels 3 only in res4 and res5, no temporal pooling."""
    return ResNet3d(
        num_classes=num_classes,
        stem_temporal_kernel=stem_temporal_kernel,
        temporal_kernels=temporal_kernels,
        temporal_pool=temporal_pool,
        **overrides,
    )
