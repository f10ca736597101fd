"""MViTv2: "MViTv2: Improved Multiscale Vision Transformers for Classification and Detection"
(Li et al., CVPR 2022), on top of "Multiscale Vision Transformers" (Fan et al., ICCV 2021).

A transformer whose token grid shrinks while its width grows, like a CNN's stages: a 3x7x7 conv
cuts the clip into overlapping cubes, and the first block of every later stage pools its queries
(depthwise conv3d, stride 1x2x2) so the grid halves in space, and doubles the channels and
heads. Keys and values are pooled in every block (stride 1x8x8 at the first stage, halved at
each stage down to 1x1x1), so attention stays affordable at 56x56 tokens. MViTv2's two changes
to MViTv1 are both here: a decomposed relative position bias (one table per axis, T, H, W,
instead of absolute position embeddings) and a residual connection around the attention that
adds the pooled queries back to its output (``residual_pooling``). Attention runs through
``F.scaled_dot_product_attention`` with the position bias as its additive mask.

=====================  ======  =====  =====  =================  ==========  ============
stage (MViTv2-S 16x4)  blocks  dim    heads  tokens T x H x W   Q stride    K/V stride
=====================  ======  =====  =====  =================  ==========  ============
patch embed 3x7x7/2x4x4  -     96     -      8 x 56 x 56        -           -
scale 1                1       96     1      8 x 56 x 56        1           1 x 8 x 8
scale 2                2       192    2      8 x 28 x 28        1 x 2 x 2   1 x 4 x 4
scale 3                11      384    4      8 x 14 x 14        1 x 2 x 2   1 x 2 x 2
scale 4                2       768    8      8 x 7 x 7          1 x 2 x 2   1 x 1 x 1
=====================  ======  =====  =====  =================  ==========  ============

MViTv2-B (32x3) has 2 / 3 / 16 / 3 blocks on a 16 x 56 x 56 grid (PySlowFast
``MVITv2_B_32x3.yaml``). The Q stride is that of each stage's first block; every block pools
Q, K and V with a 3x3x3 kernel. A class token is prepended; it takes part in attention but is
never pooled, and the final normalised class token is classified.

Parameter names are PySlowFast's (``slowfast/models/video_model_builder.py`` MViT), so its
checkpoints load after renaming ``head.projection`` only; torchvision's ``mvit_v2_s`` weights
(the same network, ported from PySlowFast) map through ``checkpoint_filter``. Differences from
PySlowFast, on purpose:
- logits in eval mode too (PySlowFast's head applies a softmax when not training; torchvision's
  does not), so calibration, the loss and the view aggregation see the usual logits;
- any clip length and crop: the token grid is read from the patch embedding, not asserted to be
  the training size, and the position tables are resampled to it as PySlowFast's ``get_rel_pos``
  does when query and key grids differ;
- fresh Linear and LayerNorm biases start at 0 (torchvision) rather than 0.02 (PySlowFast's
  newer code); a loaded checkpoint replaces them;
- heads double with the channels (``HEAD_MUL == DIM_MUL`` in every released MViTv2 config).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from videocls.models.layers import rename_keys
from videocls.models.layers.attention import decomposed_rel_pos_bias, resize_rel_pos
from videocls.models.layers.types import StateDict
from videocls.models.registry import KINETICS_MEAN, KINETICS_STD, ModelConfig, register_model

Triple = tuple[int, int, int]


def _pool_tokens(
    x: torch.Tensor, thw: Triple, pool: nn.Module | None, norm: nn.Module | None = None
) -> tuple[torch.Tensor, Triple]:
    """Pool ``B x heads x (1 + t*h*w) x d`` tokens on their grid; the class token (first) skips the
    pooling and joins the pooled tokens for ``norm`` (PySlowFast's ``attention_pool``)."""
    if pool is None:
        return x, thw
    cls, patches = x[:, :, :1], x[:, :, 1:]
    batch, heads, _, dim = patches.shape
    grid = pool(patches.reshape(batch * heads, *thw, dim).permute(0, 4, 1, 2, 3))
    new_thw = tuple(grid.shape[2:])
    patches = grid.flatten(2).transpose(1, 2).reshape(batch, heads, -1, dim)
    x = torch.cat([cls, patches], dim=2)
    return (norm(x) if norm is not None else x), new_thw


class PatchEmbed(nn.Module):
    """Overlapping cubes of the clip (a strided conv3d): ``B x C x T x H x W -> B x D x t x h x w``."""

    def __init__(
        self, in_chans: int, embed_dim: int, *, kernel: Triple, stride: Triple, padding: Triple
    ) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MultiScaleAttention(nn.Module):
    """Pooling attention: Q, K and V pooled by depthwise conv3d + LayerNorm per head, then SDPA with
    the decomposed relative position bias, the pooled queries added back (``residual_pooling``).

    ``input_thw`` is the token grid the block is built for: it sizes the position tables.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        input_thw: Triple,
        pool_kernel: Triple,
        q_stride: Triple,
        kv_stride: Triple,
        qkv_bias: bool = True,
        residual_pooling: bool = True,
    ) -> None:
        super().__init__()
        if dim_out % num_heads != 0:
            raise ValueError(f"attention width {dim_out} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim_out // num_heads
        self.residual_pooling = residual_pooling
        self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        self.pool_q, self.norm_q = self._pool(pool_kernel, q_stride)
        self.pool_k, self.norm_k = self._pool(pool_kernel, kv_stride)
        self.pool_v, self.norm_v = self._pool(pool_kernel, kv_stride)

        # Table lengths as PySlowFast: 2 * the larger of the query and key grids - 1 (floor sizes).
        size_t, size_s = input_thw[0], input_thw[1]
        spatial = 2 * max(size_s // q_stride[1], size_s // kv_stride[1]) - 1
        self.rel_pos_h = nn.Parameter(torch.zeros(spatial, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(spatial, self.head_dim))
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * size_t - 1, self.head_dim))
        for table in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
            nn.init.trunc_normal_(table, std=0.02)

    def _pool(self, kernel: Triple, stride: Triple) -> tuple[nn.Module | None, nn.Module | None]:
        if math.prod(kernel) == 1 and math.prod(stride) == 1:
            return None, None
        padding = tuple(k // 2 for k in kernel)
        conv = nn.Conv3d(self.head_dim, self.head_dim, kernel, stride=stride, padding=padding,
                         groups=self.head_dim, bias=False)
        return conv, nn.LayerNorm(self.head_dim, eps=1e-6)

    def forward(self, x: torch.Tensor, thw: Triple) -> tuple[torch.Tensor, Triple]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, q_thw = _pool_tokens(q, thw, self.pool_q, self.norm_q)
        k, k_thw = _pool_tokens(k, thw, self.pool_k, self.norm_k)
        v, _ = _pool_tokens(v, thw, self.pool_v, self.norm_v)

        tables = (self.rel_pos_t, self.rel_pos_h, self.rel_pos_w)
        bias = decomposed_rel_pos_bias(q[:, :, 1:], q_thw, k_thw, tables)
        bias = F.pad(bias, (1, 0, 1, 0))  # the class token gets no position bias, as a query or a key
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        if self.residual_pooling:  # the class token's output is left out, as PySlowFast with a class token
            x = torch.cat([x[:, :, :1], x[:, :, 1:] + q[:, :, 1:]], dim=2)
        x = x.transpose(1, 2).reshape(batch, -1, self.num_heads * self.head_dim)
        return self.proj(x), q_thw


class MultiScaleBlock(nn.Module):
    """Pre-norm block: pooling attention, then the MLP. Where the width grows, ``proj`` maps the
    normalised input to the new width for the shortcut (PySlowFast's ``DIM_MUL_IN_ATT``); where the
    queries are pooled, the shortcut is max-pooled to the same grid (kernel stride + 1)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        input_thw: Triple,
        pool_kernel: Triple,
        q_stride: Triple,
        kv_stride: Triple,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        residual_pooling: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(
            dim, dim_out, num_heads, input_thw=input_thw, pool_kernel=pool_kernel, q_stride=q_stride,
            kv_stride=kv_stride, qkv_bias=qkv_bias, residual_pooling=residual_pooling,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), dim_out)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.pool_skip = None
        if math.prod(q_stride) > 1:
            kernel = tuple(s + 1 if s > 1 else s for s in q_stride)
            self.pool_skip = nn.MaxPool3d(kernel, stride=q_stride, padding=tuple(k // 2 for k in kernel))

    def forward(self, x: torch.Tensor, thw: Triple) -> tuple[torch.Tensor, Triple]:
        x_norm = self.norm1(x)
        attn, new_thw = self.attn(x_norm, thw)
        shortcut = self.proj(x_norm) if self.proj is not None else x
        shortcut = _pool_tokens(shortcut[:, None], thw, self.pool_skip)[0][:, 0]
        x = shortcut + self.drop_path(attn)
        return x + self.drop_path(self.mlp(self.norm2(x))), new_thw


def block_layout(
    *, depth: int, stage_starts: Sequence[int], embed_dim: int, num_heads: int,
    q_stride: Triple, kv_stride: Triple,
) -> list[dict]:
    """Per block: input and output width, heads, Q and K/V strides (PySlowFast's ``DIM_MUL``,
    ``HEAD_MUL`` and ``POOL_Q_STRIDE`` at ``stage_starts``, ``POOL_KV_STRIDE_ADAPTIVE`` = ``kv_stride``)."""
    starts = sorted(set(stage_starts))
    if list(stage_starts) != starts or (starts and not 0 < starts[0] <= starts[-1] < depth):
        raise ValueError(
            f"stage_starts {list(stage_starts)} must be increasing block indices in 1..{depth - 1}"
        )
    layout, dim, heads, kv = [], embed_dim, num_heads, tuple(kv_stride)
    for index in range(depth):
        stride = tuple(q_stride) if index in starts else (1, 1, 1)
        kv = tuple(max(s // q, 1) for s, q in zip(kv, stride))  # K/V grids stay the same size
        scale = 2 if index in starts else 1
        layout.append({"dim": dim, "dim_out": dim * scale, "num_heads": heads * scale,
                       "q_stride": stride, "kv_stride": kv})
        dim, heads = dim * scale, heads * scale
    return layout


class MViT(nn.Module):
    """MViTv2 on ``B x C x T x H x W`` clips, classifying the final class token.

    ``num_frames`` and ``img_size`` are the training input: they size the relative position
    tables (resampled at other inputs). The defaults are MViTv2-S (16 x 224).
    """

    classifier_prefix = "head"

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 16,
        img_size: int = 224,
        embed_dim: int = 96,
        num_heads: int = 1,
        depth: int = 16,
        stage_starts: Sequence[int] = (1, 3, 14),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_kernel: Triple = (3, 7, 7),
        patch_stride: Triple = (2, 4, 4),
        patch_padding: Triple = (1, 3, 3),
        pool_kernel: Triple = (3, 3, 3),
        q_stride: Triple = (1, 2, 2),
        kv_stride: Triple = (1, 8, 8),
        residual_pooling: bool = True,
        drop_path_rate: float = 0.2,
        dropout: float = 0.5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.patch_embed = PatchEmbed(in_chans, embed_dim, kernel=tuple(patch_kernel),
                                      stride=tuple(patch_stride), padding=tuple(patch_padding))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        layout = block_layout(depth=depth, stage_starts=stage_starts, embed_dim=embed_dim,
                              num_heads=num_heads, q_stride=tuple(q_stride), kv_stride=tuple(kv_stride))
        thw = tuple(size // stride for size, stride in zip((num_frames, img_size, img_size), patch_stride))
        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # linear in depth
        self.blocks = nn.ModuleList()
        for spec, rate in zip(layout, drop_path_rates):
            self.blocks.append(MultiScaleBlock(
                spec["dim"], spec["dim_out"], spec["num_heads"], input_thw=thw,
                pool_kernel=tuple(pool_kernel), q_stride=spec["q_stride"], kv_stride=spec["kv_stride"],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, residual_pooling=residual_pooling,
            ))
            thw = tuple(size // stride for size, stride in zip(thw, spec["q_stride"]))
        self.num_features = layout[-1]["dim_out"] if layout else embed_dim
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated normal 0.02 for Linear weights and the class token, LayerNorm identity (torchvision)."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``B x C x T x H x W`` -> final normalised class token ``B x D``."""
        if x.ndim != 5:
            raise ValueError(f"MViT expects a B x C x T x H x W clip, got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        thw = tuple(x.shape[2:])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        for block in self.blocks:
            x, thw = block(x, thw)
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


# torchvision MViT (``torchvision.models.video.mvit_v2_s``) names -> ours (PySlowFast's).
_TORCHVISION_RULES = [
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^pos_encoding\.class_token$", "cls_token"),
    (r"\.attn\.project\.0\.", ".attn.proj."),
    (r"\.attn\.pool_([qkv])\.pool\.", r".attn.pool_\1."),
    (r"\.attn\.pool_([qkv])\.norm_act\.0\.", r".attn.norm_\1."),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.3\.", ".mlp.fc2."),
    (r"^(blocks\.\d+)\.project\.", r"\1.proj."),
    (r"^head\.1\.", "head."),
]
_PYSLOWFAST_RULES = [(r"^head\.projection\.", "head.")]


def checkpoint_filter(state: StateDict, model: MViT) -> StateDict:
    """Map torchvision or PySlowFast MViTv2 state dicts onto ``model`` (told apart by key names;
    videocls's own pass through). Relative position tables are resampled linearly to the model's
    when it is built for another clip length or crop (fine-tuning at a new size)."""
    if "conv_proj.weight" in state:
        state = rename_keys(state, _TORCHVISION_RULES)
        if "cls_token" in state:
            state["cls_token"] = state["cls_token"].reshape(1, 1, -1)  # torchvision keeps a flat vector
    elif any(key.startswith("head.projection.") for key in state):
        state = rename_keys(state, _PYSLOWFAST_RULES)
    own = model.state_dict()
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in ("rel_pos_h", "rel_pos_w", "rel_pos_t") and key in own:
            if value.ndim == 2 and value.shape[1] == own[key].shape[1]:
                state[key] = resize_rel_pos(value, own[key].shape[0])
    return state


def _config(*, frames: int, rate: int, params_m: float, gflops: float, checkpoint: str) -> ModelConfig:
    """The PySlowFast Kinetics-400 recipe: Kinetics normalisation, 5 clips x 1 crop at 224."""
    return ModelConfig(
        num_frames=frames,
        sampling_rate=rate,
        crop_size=224,
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        paper="MViTv2: Improved Multiscale Vision Transformers for Classification and Detection "
              "(Li et al., CVPR 2022)",
        reference_params_m=params_m,
        reference_gflops=gflops,
        flops_input=(frames, 224, 224),
        extra={"test_clips": 5, "test_crops": 1,
               "checkpoint_url": f"https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/"
                                 f"pysf_video_models/{checkpoint}"},
    )


# The architecture is spelled out as the builders' keyword defaults (``registry.builder_kwargs``).


@register_model("mvit_v2_s", _config(frames=16, rate=4, params_m=34.5, gflops=64.0,
                                     checkpoint="MViTv2_S_16x4_k400_f302660347.pyth"), checkpoint_filter)
def mvit_v2_s(
    num_classes: int = 400, *, num_frames: int = 16, depth: int = 16,
    stage_starts: Sequence[int] = (1, 3, 14), drop_path_rate: float = 0.2, **overrides,
) -> MViT:
    """MViTv2-S, 16 frames x 4 (PySlowFast ``MVITv2_S_16x4``, torchvision ``mvit_v2_s``): 1/2/11/2 blocks."""
    return MViT(num_classes=num_classes, num_frames=num_frames, depth=depth, stage_starts=stage_starts,
                drop_path_rate=drop_path_rate, **overrides)


@register_model("mvit_v2_b", _config(frames=32, rate=3, params_m=51.2, gflops=225.0,
                                     checkpoint="MViTv2_B_32x3_k400_f304025456.pyth"), checkpoint_filter)
def mvit_v2_b(
    num_classes: int = 400, *, num_frames: int = 32, depth: int = 24,
    stage_starts: Sequence[int] = (2, 5, 21), drop_path_rate: float = 0.3, **overrides,
) -> MViT:
    """MViTv2-B, 32 frames x 3 (PySlowFast ``MVITv2_B_32x3``): 2/3/16/3 blocks."""
    return MViT(num_classes=num_classes, num_frames=num_frames, depth=depth, stage_starts=stage_starts,
                drop_path_rate=drop_path_rate, **overrides)
