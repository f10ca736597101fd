"""X3D: efficient video networks expanded from a tiny 2D base (Feichtenhofer, X3D: Expanding
Architectures for Efficient Video Recognition, CVPR 2020).

A ResNet of depthwise bottlenecks: every block is 1x1x1 -> depthwise 3x3x3 -> SE (every other
block) -> swish -> 1x1x1, with an inverted width (the inner width is 2.25x the block's). The
variants share the widths and differ in clip, crop and depth:

    model   frames x rate  crop  res2 res3 res4 res5 blocks  params  GFLOPs (one view, train crop)
    x3d_xs  4 x 12         160   3    5    11   7            3.79 M  0.60
    x3d_s   13 x 6         160   3    5    11   7            3.79 M  1.96
    x3d_m   16 x 5         224   3    5    11   7            3.79 M  4.73
    x3d_l   16 x 5         312   5    10   25   15           6.15 M  18.37

    stem  1x3x3 conv (stride 2) then depthwise 5x1x1, 24 channels
    res2..res5  24, 48, 96, 192 channels (inner 54, 108, 216, 432), each halving H and W
    head  1x1x1 conv to 432, pool, 1x1x1 conv to 2048 (no BN), ReLU, dropout, linear

X3D never pools in time: the head sees every frame. State dicts map one to one onto
pytorchvideo's hub models (``x3d_xs`` ... ``x3d_l``, ``blocks.N...``) and PySlowFast's ``X3D``
(``s1.pathway0_stem...``); ``checkpoint_filter`` renames either.

Differences from the references, and why:
- pytorchvideo has no BN on res2's first shortcut (its input and output widths are equal, and
  it adds the shortcut BN only where widths change: pytorchvideo issue #95); PySlowFast, whose
  checkpoints the paper's numbers come from, has one. Ours does (``res2_shortcut_bn=True``), and
  a pytorchvideo checkpoint loads with that BN set to the identity, so its logits are
  pytorchvideo's; ``res2_shortcut_bn=False`` builds pytorchvideo's layout exactly (48 fewer
  parameters) for fine-tuning as pytorchvideo does.
- Swish is ``nn.SiLU`` (the same function; pytorchvideo's autograd function saves memory).
- Test-time head: ``head_pool="global"`` (default) averages the whole res5 map; PySlowFast
  and pytorchvideo pool with the training window (``head_pool_frames`` x ``ceil(crop / 32)``^2)
  and average the softmax over the positions (``"window_softmax"``; pytorchvideo's hub head
  without its softmax is ``"window"``). All three agree at the training input. X3D's window pool
  precedes ``lin_5`` and its ReLU (see ``videocls.models.layers.x3d_blocks.X3DHead``).
- On CPU the clip enters the stem channels-last (``channels_last_3d``): oneDNN's depthwise 3D
  convolution is about twice as fast in that layout (a training step of X3D-XS at batch 2 took
  13.3 CPU-s contiguous, 7.6 with the input channels-last, 4.4 with the model too, where
  pytorchvideo's takes 11.8 / 7.1 / 6.0). Logits do not change. GPUs are left as the input comes.
- PySlowFast's ``BN_LIN5`` (a BN after ``lin_5``, off in every X3D config) is not supported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from videocls.models.layers import STAGE_NAMES, rename_keys
from videocls.models.layers.resnet_blocks import PYSLOWFAST_BLOCK_RULES, init_resnet_weights
from videocls.models.layers.types import StateDict
from videocls.models.layers.x3d_blocks import X3DBottleneck, X3DHead, X3DStem, head_window, round_width
from videocls.models.registry import ModelConfig, register_model

_PYTORCHVIDEO_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
_PYSLOWFAST_ZOO = "https://dl.fbaipublicfiles.com/pyslowfast/x3d_models"


class X3D(nn.Module):
    """Stem, res2..res5 of depthwise bottlenecks and the projected-pool head; takes B x 3 x T x H x W.

    ``width``: stem and res2 channels (PySlowFast's ``DIM_C1`` x ``WIDTH_FACTOR``, 12 x 2.0);
    stage i has ``width * 2**i`` channels and ``int(bottleneck_factor * width * 2**i)`` inside.
    ``stage_blocks``: blocks per stage (PySlowFast's 1, 2, 5, 3 times ``DEPTH_FACTOR``, rounded up).
    ``se_ratio``: SE width over the inner width (rounded to 8) in blocks 0, 2, 4... of each stage;
    0 disables SE. ``head_features``: ``lin_5``'s width (``DIM_C5``). ``res2_shortcut_bn``,
    ``head_pool``, ``head_pool_frames``, ``head_pool_crop``: module docstring.
    ``zero_init_residual``: the last BN of every block starts at zero (PySlowFast's
    ``ZERO_INIT_FINAL_BN``; see ``videocls.models.layers.init_resnet_weights``).
    """

    classifier_prefix = "head.proj"

    def __init__(
        self,
        *,
        stage_blocks: Sequence[int],
        num_classes: int = 400,
        width: int = 24,
        bottleneck_factor: float = 2.25,
        se_ratio: float = 0.0625,
        stem_temporal_kernel: int = 5,
        temporal_kernel: int = 3,
        head_features: int = 2048,
        dropout: float = 0.5,
        in_channels: int = 3,
        res2_shortcut_bn: bool = True,
        zero_init_residual: bool = True,
        head_pool: str = "global",
        head_pool_frames: int = 16,
        head_pool_crop: int = 224,
    ) -> None:
        super().__init__()
        if len(stage_blocks) != len(STAGE_NAMES):
            raise ValueError(f"stage_blocks needs one entry per stage (res2..res5): {tuple(stage_blocks)}")
        self.stem = X3DStem(in_channels, width, stem_temporal_kernel)
        channels = width
        for i, (name, num_blocks) in enumerate(zip(STAGE_NAMES, stage_blocks)):
            out = width * 2**i
            inner = int(bottleneck_factor * out)
            se = round_width(inner, se_ratio) if se_ratio > 0 else 0
            blocks = [
                X3DBottleneck(
                    channels if j == 0 else out, inner, out,
                    spatial_stride=2 if j == 0 else 1,
                    temporal_kernel=temporal_kernel,
                    se_channels=se if j % 2 == 0 else 0,
                    shortcut_bn=res2_shortcut_bn or i > 0,
                )
                for j in range(num_blocks)
            ]
            self.add_module(name, nn.Sequential(*blocks))
            channels = out
        self.num_features = head_features
        window = head_window(head_pool_frames, head_pool_crop) if head_pool != "global" else None
        self.head = X3DHead(channels, inner, head_features, num_classes, dropout,
                            pool=head_pool, window=window)
        _init_weights(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip -> res5 feature map, B x C x T x H/32 x W/32 (rounded up)."""
        if x.ndim != 5:
            raise ValueError(f"{type(self).__name__} expects B x C x T x H x W, got shape {tuple(x.shape)}")
        if x.device.type == "cpu":  # depthwise conv3d is ~2x faster channels-last on CPU (docstring)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.stem(x)
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits, or the pooled ``lin_5`` features the classifier sees if ``pre_logits``."""
        return self.head([x], pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@torch.no_grad()
def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """PySlowFast's X3D initialisation: the ResNets' (He-normal fan-out convs, BN 1 and 0, the
    classifier N(0, 0.01), each block's last BN scale 0 with ``zero_init_residual``), plus zero
    biases for the convolutions that have one (the squeeze-excitation's)."""
    init_resnet_weights(model, zero_init_residual, residual_block=X3DBottleneck)
    for m in model.modules():
        if isinstance(m, nn.Conv3d) and m.bias is not None:
            nn.init.zeros_(m.bias)


# Block sub-modules as each reference names them (the stage and block prefixes are added below).
_PYTORCHVIDEO_RULES = [
    (r"^blocks\.0\.conv\.conv_t\.", "stem.conv_xy."),  # pytorchvideo's names for these two are swapped:
    (r"^blocks\.0\.conv\.conv_xy\.", "stem.conv_t."),  # conv_t holds the 1x3x3 kernel (shapes prove it)
    (r"^blocks\.0\.norm\.", "stem.bn."),
    *[(rf"^blocks\.{i + 1}\.res_blocks\.", f"{name}.") for i, name in enumerate(STAGE_NAMES)],
    (r"\.branch1_conv\.", ".shortcut.conv."),
    (r"\.branch1_norm\.", ".shortcut.bn."),
    (r"\.branch2\.conv_([abc])\.", r".conv_\1."),
    (r"\.branch2\.norm_([ac])\.", r".bn_\1."),
    (r"\.branch2\.norm_b\.0\.", ".bn_b."),
    (r"\.branch2\.norm_b\.1\.block\.0\.", ".se.fc1."),
    (r"\.branch2\.norm_b\.1\.block\.2\.", ".se.fc2."),
    (r"^blocks\.5\.pool\.pre_conv\.", "head.conv_5.conv."),
    (r"^blocks\.5\.pool\.pre_norm\.", "head.conv_5.bn."),
    (r"^blocks\.5\.pool\.post_conv\.", "head.lin_5."),
    (r"^blocks\.5\.proj\.", "head.proj."),
]
_PYSLOWFAST_RULES = [
    (r"^s1\.pathway0_stem\.conv_xy\.", "stem.conv_xy."),
    (r"^s1\.pathway0_stem\.conv\.", "stem.conv_t."),
    (r"^s1\.pathway0_stem\.bn\.", "stem.bn."),
    (r"^s(\d)\.pathway0_res(\d+)\.", r"res\1.\2."),
    *PYSLOWFAST_BLOCK_RULES,  # the bottleneck's names are the ResNets'
    (r"\.branch2\.se\.", ".se."),
    (r"^head\.conv_5\.", "head.conv_5.conv."),
    (r"^head\.conv_5_bn\.", "head.conv_5.bn."),
    (r"^head\.projection\.", "head.proj."),
]
_RES2_SHORTCUT_BN = "res2.0.shortcut.bn."


def checkpoint_filter(state: StateDict, model: nn.Module) -> StateDict:
    """pytorchvideo (``blocks.N...``) or PySlowFast (``s1.pathway0_stem...``) keys -> ours.

    A pytorchvideo file has no BN on res2's first shortcut; for a model with one
    (``res2_shortcut_bn=True``, the default) it is filled in as the identity (scale 1, shift 0,
    mean 0, variance 1 - eps), so the model computes pytorchvideo's function. A file with that
    BN (PySlowFast's) cannot load into a model without it: an error says which to build.
    """
    if any(k.startswith(("blocks.", "model.blocks.")) for k in state):
        state = rename_keys(state, [(r"^model\.blocks\.", "blocks."), *_PYTORCHVIDEO_RULES])
    elif any(re.match(r"s\d\.pathway0_", k) for k in state):
        state = rename_keys(state, _PYSLOWFAST_RULES)
    else:
        return state
    own = model.state_dict()
    has_bn = any(k.startswith(_RES2_SHORTCUT_BN) for k in state)
    wants_bn = f"{_RES2_SHORTCUT_BN}weight" in own
    if has_bn and not wants_bn:
        raise ValueError("the checkpoint has a BN on res2's first shortcut (PySlowFast's layout): "
                         "build the model with res2_shortcut_bn=True")
    if wants_bn and not has_bn and "res2.0.shortcut.conv.weight" in state:
        bn = model.res2[0].shortcut.bn
        identity = {"weight": torch.ones_like(bn.weight), "bias": torch.zeros_like(bn.bias),
                    "running_mean": torch.zeros_like(bn.running_mean),
                    "running_var": torch.full_like(bn.running_var, 1.0 - bn.eps),
                    "num_batches_tracked": torch.zeros_like(bn.num_batches_tracked)}
        state = {**state, **{_RES2_SHORTCUT_BN + k: v for k, v in identity.items()}}
    return state


def _config(frames: int, rate: int, crop: int, *, params_m: float, gflops: float, size: str) -> ModelConfig:
    """PySlowFast's recipe for one size; GFLOPs (fvcore) of one view at the training crop, as its
    model zoo and the paper's Table 3 give them."""
    return ModelConfig(
        num_frames=frames,
        sampling_rate=rate,
        crop_size=crop,
        paper=f"Feichtenhofer, X3D: Expanding Architectures for Efficient Video Recognition, CVPR 2020 "
              f"(X3D-{size})",
        reference_params_m=params_m,
        reference_gflops=gflops,
        flops_input=(frames, crop, crop),
        extra={"checkpoint_url": f"{_PYTORCHVIDEO_ZOO}/X3D_{size}.pyth",
               "pyslowfast_checkpoint_url": f"{_PYSLOWFAST_ZOO}/x3d_{size.lower()}.pyth"},
    )


# Parameters: pytorchvideo's model zoo table (PySlowFast's has 3.8 / 6.2, the paper 3.8 / 6.1).
_XS = _config(4, 12, 160, params_m=3.79, gflops=0.60, size="XS")
_S = _config(13, 6, 160, params_m=3.79, gflops=1.96, size="S")
_M = _config(16, 5, 224, params_m=3.79, gflops=4.73, size="M")
_L = _config(16, 5, 312, params_m=6.15, gflops=18.37, size="L")
_BLOCKS = (3, 5, 11, 7)  # 1, 2, 5, 3 x depth factor 2.2, rounded up
_BLOCKS_L = (5, 10, 25, 15)  # depth factor 5.0


# The architecture is spelled out as the builders' keyword defaults, so that
# ``registry.builder_kwargs`` lists every key a stored config may set, with its value.


@register_model("x3d_xs", _XS, checkpoint_filter)
def x3d_xs(num_classes: int = 400, *, stage_blocks: Sequence[int] = _BLOCKS, head_pool_frames: int = 4,
           head_pool_crop: int = 160, **overrides) -> X3D:
    """X3D-XS: 4 frames at 160 px."""
    return X3D(num_classes=num_classes, stage_blocks=stage_blocks, head_pool_frames=head_pool_frames,
               head_pool_crop=head_pool_crop, **overrides)


@register_model("x3d_s", _S, checkpoint_filter)
def x3d_s(num_classes: int = 400, *, stage_blocks: Sequence[int] = _BLOCKS, head_pool_frames: int = 13,
          head_pool_crop: int = 160, **overrides) -> X3D:
    """X3D-S: X3D-XS's network on 13 frames."""
    return X3D(num_classes=num_classes, stage_blocks=stage_blocks, head_pool_frames=head_pool_frames,
               head_pool_crop=head_pool_crop, **overrides)


@register_model("x3d_m", _M, checkpoint_filter)
def x3d_m(num_classes: int = 400, *, stage_blocks: Sequence[int] = _BLOCKS, head_pool_frames: int = 16,
          head_pool_crop: int = 224, **overrides) -> X3D:
    """X3D-M: the same network on 16 frames at 224 px."""
    return X3D(num_classes=num_classes, stage_blocks=stage_blocks, head_pool_frames=head_pool_frames,
               head_pool_crop=head_pool_crop, **overrides)


@register_model("x3d_l", _L, checkpoint_filter)
def x3d_l(num_classes: int = 400, *, stage_blocks: Sequence[int] = _BLOCKS_L, head_pool_frames: int = 16,
          head_pool_crop: int = 312, **overrides) -> X3D:
    """X3D-L: about twice as deep (depth factor 5.0), 16 frames at 312 px."""
    return X3D(num_classes=num_classes, stage_blocks=stage_blocks, head_pool_frames=head_pool_frames,
               head_pool_crop=head_pool_crop, **overrides)
