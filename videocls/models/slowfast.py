"""SlowFast networks (Feichtenhofer et al., ICCV 2019).

Two ResNet pathways see the same clip: Slow at T frames with full width, Fast at alpha*T
frames with 1/beta of the width and temporal kernels everywhere. After the stem, res2, res3
and res4 a lateral connection (a strided temporal conv, BN, ReLU: ``lateral.<stage>``) brings
Fast features to the Slow frame rate and concatenates them onto the Slow pathway. The head
pools both pathways and concatenates them (2048 + 256 = 2304 channels for R50).

The model takes ``[slow, fast]``, two B x 3 x T x H x W clips with T_fast = alpha * T_slow.
State dicts map one to one onto pytorchvideo's ``slowfast_r50``/``slowfast_r101`` and
PySlowFast's ``SlowFast``; ``checkpoint_filter`` renames either.

Test-time head: ``head_pool="global"`` (default) averages each pathway over its whole res5 map;
``"window"`` (pytorchvideo's hub head) and ``"window_softmax"`` (PySlowFast's) pool with the
windows of the training input, ``head_pool_frames`` Fast frames at ``head_pool_crop`` px (32 x 224:
8 x 7 x 7 Slow, 32 x 7 x 7 Fast, pytorchvideo's ``head_pool_kernel_sizes``). They differ only at
a larger test input (the recipes test at 256): see ``videocls.models.layers.heads``.
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
    ConvBnAct3d,
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
_LATERAL_NAMES = ("stem", "res2", "res3", "res4")  # lateral connections follow these stages

# Temporal kernels of the bottlenecks' first conv, per stage; stem kernels are 1 (Slow) and 5 (Fast).
_SLOW_KERNELS = ((1,), (1,), (3,), (3,))
_FAST_KERNELS = ((3,), (3,), (3,), (3,))


class SlowFast(nn.Module):
    """Slow and Fast ResNet pathways with Fast->Slow lateral connections.

    ``width`` is the Slow stem width (64); the Fast pathway has ``width // beta_inv``. Each
    lateral is a ``fusion_kernel`` x 1 x 1 conv with temporal stride ``alpha`` from C Fast
    channels to ``fusion_channel_ratio`` * C. ``zero_init_residual``: see ``init_resnet_weights``.
    ``stem_pool=False`` drops both stems' max-pool, as in ``ResNet3d``. ``head_pool``,
    ``head_pool_frames`` (Fast frames), ``head_pool_crop``: the test-time head (module docstring).
    """

    classifier_prefix = "head.proj"

    def __init__(
        self,
        *,
        num_classes: int = 400,
        width: int = 64,
        stage_blocks: Sequence[int] = STAGE_BLOCKS[50],
        alpha: int = 4,
        beta_inv: int = 8,
        fusion_kernel: int = 7,
        fusion_channel_ratio: int = 2,
        dropout: float = 0.5,
        in_channels: int = 3,
        zero_init_residual: bool = True,
        stem_pool: bool = True,
        head_pool: str = "global",
        head_pool_frames: int = 32,
        head_pool_crop: int = 224,
    ) -> None:
        super().__init__()
        if width % beta_inv:
            raise ValueError(f"width ({width}) must be divisible by beta_inv ({beta_inv})")
        self.alpha = alpha
        fast_width = width // beta_inv
        # Fast channels entering each lateral: the stem's output, then res2..res4's outputs.
        fast_channels = [fast_width] + [4 * fast_width * 2**i for i in range(len(STAGE_NAMES) - 1)]
        lateral_channels = [fusion_channel_ratio * c for c in fast_channels]

        slow_stages = make_res_stages(width, stage_blocks, _SLOW_KERNELS, lateral_channels)
        fast_stages = make_res_stages(fast_width, stage_blocks, _FAST_KERNELS)
        self.slow = nn.ModuleDict({"stem": ResNetStem3d(in_channels, width, 1, stem_pool)})
        self.slow.update(zip(STAGE_NAMES, slow_stages))
        self.fast = nn.ModuleDict({"stem": ResNetStem3d(in_channels, fast_width, 5, stem_pool)})
        self.fast.update(zip(STAGE_NAMES, fast_stages))
        self.lateral = nn.ModuleDict(
            {
                name: ConvBnAct3d(c_in, c_out, (fusion_kernel, 1, 1), stride=(alpha, 1, 1))
                for name, c_in, c_out in zip(_LATERAL_NAMES, fast_channels, lateral_channels)
            }
        )
        self.num_features = 32 * width + 32 * fast_width
        windows = head_windows(
            head_pool, frames=[head_pool_frames // alpha, head_pool_frames], crop=head_pool_crop,
            stride=32 if stem_pool else 16,
        )
        self.head = ClassifierHead(self.num_features, num_classes, dropout, pool=head_pool, windows=windows)
        init_resnet_weights(self, zero_init_residual)

    def forward_features(self, x: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[slow, fast]`` clips -> ``[slow, fast]`` res5 feature maps."""
        if not isinstance(x, (list, tuple)) or len(x) != 2:
            raise TypeError(f"SlowFast expects a list [slow, fast] of two clips, got {type(x).__name__}")
        slow, fast = x
        if slow.ndim != 5 or fast.ndim != 5 or fast.shape[2] != self.alpha * slow.shape[2]:
            raise ValueError(
                f"SlowFast expects B x C x T x H x W clips with T_fast = {self.alpha} * T_slow, "
                f"got slow {tuple(slow.shape)} and fast {tuple(fast.shape)}"
            )
        for name in ("stem", *STAGE_NAMES):
            slow, fast = self.slow[name](slow), self.fast[name](fast)
            if name in self.lateral:
                slow = torch.cat([slow, self.lateral[name](fast)], dim=1)
        return [slow, fast]

    def forward_head(self, x: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """Both feature maps -> logits, or the pooled, concatenated features if ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter(state: StateDict, model: nn.Module) -> StateDict:
    """pytorchvideo (``blocks.N.multipathway_blocks...``) or PySlowFast (``s1.pathway0_stem...``,
    ``s1_fuse.conv_f2s...``) keys -> ours. Pathway 0 is Slow, pathway 1 is Fast in both."""
    pathways = ("slow", "fast")
    if any(k.startswith(("blocks.", "model.blocks.")) for k in state):
        rules = [(r"^model\.blocks\.", "blocks.")]  # PySlowFast's PTV wrappers
        for p, path in enumerate(pathways):
            rules += [
                (rf"^blocks\.0\.multipathway_blocks\.{p}\.conv\.", f"{path}.stem.conv."),
                (rf"^blocks\.0\.multipathway_blocks\.{p}\.norm\.", f"{path}.stem.bn."),
                *[
                    (rf"^blocks\.{i + 1}\.multipathway_blocks\.{p}\.res_blocks\.", f"{path}.{stage}.")
                    for i, stage in enumerate(STAGE_NAMES)
                ],
            ]
        for i, name in enumerate(_LATERAL_NAMES):
            rules += [
                (rf"^blocks\.{i}\.multipathway_fusion\.conv_fast_to_slow\.", f"lateral.{name}.conv."),
                (rf"^blocks\.{i}\.multipathway_fusion\.norm\.", f"lateral.{name}.bn."),
            ]
        rules += [(r"^blocks\.\d+\.proj\.", "head.proj."), *PYTORCHVIDEO_BLOCK_RULES]
        return rename_keys(state, rules)
    if any(re.match(r"s\d(\.pathway\d_|_fuse\.)", k) for k in state):
        rules = []
        for p, path in enumerate(pathways):
            rules += [
                (rf"^s1\.pathway{p}_stem\.conv\.", f"{path}.stem.conv."),
                (rf"^s1\.pathway{p}_stem\.bn\.", f"{path}.stem.bn."),
                (rf"^s(\d)\.pathway{p}_res(\d+)\.", rf"{path}.res\1.\2."),
            ]
        rules += [
            (r"^s1_fuse\.conv_f2s\.", "lateral.stem.conv."),
            (r"^s1_fuse\.bn\.", "lateral.stem.bn."),
            (r"^s(\d)_fuse\.conv_f2s\.", r"lateral.res\1.conv."),
            (r"^s(\d)_fuse\.bn\.", r"lateral.res\1.bn."),
            (r"^head\.projection\.", "head.proj."),
            *PYSLOWFAST_BLOCK_RULES,
        ]
        return rename_keys(state, rules)
    return state


def _config(alpha: int, params_m: float, gflops: float, paper: str, checkpoint: str) -> ModelConfig:
    """32 Fast frames, one every 2nd (Slow: every alpha-th of them); GFLOPs of one 32 x 256 x 256 view."""
    return ModelConfig(
        num_frames=32,
        sampling_rate=2,
        crop_size=224,
        input_layout="[slow, fast] of B C T H W",
        paper=f"Feichtenhofer et al., SlowFast Networks for Video Recognition, ICCV 2019 ({paper})",
        reference_params_m=params_m,
        reference_gflops=gflops,
        flops_input=(32, 256, 256),
        extra={"alpha": alpha, "checkpoint_url": f"{_PYTORCHVIDEO_ZOO}/{checkpoint}"},
    )


_R50_8X8 = _config(4, params_m=34.57, gflops=66.1, paper="8x8 R50", checkpoint="SLOWFAST_8x8_R50.pyth")
_R101_8X8 = _config(4, params_m=62.83, gflops=126.4, paper="8x8 R101", checkpoint="SLOWFAST_8x8_R101.pyth")
_R50_4X16 = _config(8, params_m=34.48, gflops=36.69, paper="4x16 R50", checkpoint="SLOWFAST_4x16_R50.pyth")


# The architecture is spelled out as the builders' keyword defaults, so that
# ``registry.builder_kwargs`` lists every key a stored config may set, with its value.


@register_model("slowfast_r50", _R50_8X8, checkpoint_filter, init_2d=inflate_from_2d)
def slowfast_r50(num_classes: int = 400, *, alpha: int = 4, fusion_kernel: int = 7, **overrides) -> SlowFast:
    """SlowFast 8x8 R50: Slow 8 frames, Fast 32 (alpha 4), laterals with temporal kernel 7."""
    return SlowFast(num_classes=num_classes, alpha=alpha, fusion_kernel=fusion_kernel, **overrides)


@register_model("slowfast_r101", _R101_8X8, checkpoint_filter, init_2d=inflate_from_2d)
def slowfast_r101(
    num_classes: int = 400,
    *,
    alpha: int = 4,
    fusion_kernel: int = 5,
    stage_blocks: Sequence[int] = STAGE_BLOCKS[101],
    **overrides,
) -> SlowFast:
    """SlowFast 8x8 R101: as R50 with 23 blocks in res4 and lateral temporal kernel 5."""
    arch = {"alpha": alpha, "fusion_kernel": fusion_kernel, "stage_blocks": stage_blocks}
    return SlowFast(num_classes=num_classes, **arch, **overrides)


@register_model("slowfast_r50_4x16", _R50_4X16, checkpoint_filter, init_2d=inflate_from_2d)
def slowfast_r50_4x16(
    num_classes: int = 400, *, alpha: int = 8, fusion_kernel: int = 5, **overrides
) -> SlowFast:
    """SlowFast 4x16 R50 (PySlowFast SLOWFAST_4x16_R50): Slow 4 frames, Fast 32 (alpha 8),
    lateral temporal kernel 5."""
    return SlowFast(num_classes=num_classes, alpha=alpha, fusion_kernel=fusion_kernel, **overrides)
