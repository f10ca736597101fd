"""VideoMAE ViT: "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised
Video Pre-Training" (Tong et al., NeurIPS 2022), the fine-tuned classifier.

A plain ViT on space-time tubelets: a ``2 x 16 x 16`` Conv3d cuts the clip into
``T/2 x H/16 x W/16`` tokens (no class token), a fixed sine-cosine position table is added,
joint space-time attention runs in every block, and the classifier reads the mean of the final
tokens through its own LayerNorm (``fc_norm``; the paper's ``use_mean_pooling``). Attention
has VideoMAE's bias layout: a fused ``qkv`` projection without bias plus separate ``q_bias`` and
``v_bias`` (the key has none). Layer scale (``gamma_1``, ``gamma_2``) exists with
``init_values > 0`` (VideoMAEv2's large models), a learned ``pos_embed`` with ``learned_pos_embed``.

| variant | embed dim | depth | heads | params (400 classes) | paper GFLOPs (16x224) |
|---|---|---|---|---|---|
| ``videomae_vit_s`` | 384 | 12 | 6 | 22.03M | 57 |
| ``videomae_vit_b`` | 768 | 12 | 12 | 86.53M | 180 |
| ``videomae_vit_l`` | 1024 | 24 | 16 | 304.27M | 597 |

Parameter counts are Hugging Face's and the official model's (the paper rounds them to 22M, 87M,
305M); GFLOPs in fvcore's convention, one view.

Parameter names are the official ``modeling_finetune.py``'s, so VideoMAE and VideoMAEv2
fine-tuning checkpoints load as they are (``checkpoint_filter`` strips their wrappers and
prefixes); Hugging Face ``VideoMAEForVideoClassification`` state dicts are mapped, their separate
query/key/value projections fused. Pre-training checkpoints (encoder + decoder) load the
encoder, with ``fc_norm`` and the classifier fresh, as the official fine-tuning starts.

Differences from the official model, all inert at its defaults: attention runs through
``scaled_dot_product_attention`` (same math, fused kernel); ``drop_rate`` also drops after the
MLP's first layer (timm's ``Mlp``; the official drops only after the second); a clip of another
size than the model's is accepted, its position table resampled (the official asserts the size).
"""

from __future__ import annotations

import logging
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from videocls.models.layers.attention import Attention, TransformerBlock
from videocls.models.layers.types import StateDict
from videocls.models.registry import ModelConfig, register_model

log = logging.getLogger(__name__)

# VideoMAE fine-tunes and tests with ImageNet's statistics (run_class_finetuning's
# imagenet_default_mean_and_std; Hugging Face's VideoMAE processor uses the same).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """``1 x N x D`` Transformer position code: ``pos / 10000^(2*(j//2)/D)``, sine at even ``j``,
    cosine at odd ``j`` (VideoMAE's ``get_sinusoid_encoding_table``, computed in float64 as its numpy)."""
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponents = (2 * (torch.arange(dim) // 2)).to(torch.float64) / dim
    angles = positions / torch.pow(10000.0, exponents)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)[None]


def resize_pos_embed(
    pos_embed: torch.Tensor, old: tuple[int, int, int], new: tuple[int, int, int]
) -> torch.Tensor:
    """Resample a ``1 x (t*h*w) x D`` table from grid ``old`` to ``new`` (time-major token order).

    Spatially bicubic per time step, as the official fine-tuning script resizes a checkpoint's
    table to a new crop; along time linear (the official has no temporal resize).
    """
    old, new = tuple(old), tuple(new)
    if old == new:
        return pos_embed
    if pos_embed.shape[1] != math.prod(old):
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} positions, not the {old} grid's "
                         f"{math.prod(old)}")
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(old[0], old[1], old[2], dim)
    if old[1:] != new[1:]:
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=new[1:], mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1)
    if old[0] != new[0]:
        flat = grid.reshape(old[0], -1).transpose(0, 1)[None]  # 1 x (h w D) x t
        flat = F.interpolate(flat, size=new[0], mode="linear", align_corners=False)
        grid = flat[0].transpose(0, 1).reshape(new[0], new[1], new[2], dim)
    return grid.reshape(1, -1, dim)


class QVBiasAttention(Attention):
    """Self-attention with VideoMAE's biases: ``qkv`` without bias, learned ``q_bias`` and ``v_bias``.

    The key gets no bias: it would only add a per-query constant to the logits, which softmax
    ignores; leaving it out of the parameters keeps optimisers from drifting it on rounding noise.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias=False, attn_drop=attn_drop, proj_drop=proj_drop)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, tokens, dim)))


class VideoMAEBlock(TransformerBlock):
    """The pre-norm ViT block with VideoMAE's attention and optional layer scale (``gamma_1/2``)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 init_values: float = 0.0, norm_eps: float = 1e-6) -> None:
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, drop=drop, attn_drop=attn_drop,
                         drop_path=drop_path, norm_eps=norm_eps)
        self.attn = QVBiasAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values > 0 else None
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            return super().forward(x)
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class VideoMAEViT(nn.Module):
    """VideoMAE's fine-tuning ViT on ``B x C x T x H x W`` clips (``modeling_finetune.VisionTransformer``)."""

    classifier_prefix = "head"

    def __init__(
        self,
        num_classes: int = 400,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.0,
        init_values: float = 0.0,
        learned_pos_embed: bool = False,
        use_mean_pooling: bool = True,
        head_init_scale: float = 0.001,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if img_size % patch_size or num_frames % tubelet_size:
            raise ValueError(f"img_size {img_size} and num_frames {num_frames} must be multiples of "
                             f"patch_size {patch_size} and tubelet_size {tubelet_size}")
        self.num_features = embed_dim
        self.tubelet_size = tubelet_size
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.patch_embed = nn.Module()  # official name: patch_embed.proj
        tubelet = (tubelet_size, patch_size, patch_size)
        self.patch_embed.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=tubelet, stride=tubelet)
        table = sinusoid_table(math.prod(self.grid_size), embed_dim)
        if learned_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros_like(table))
        else:  # fixed: not a parameter, and not in the state dict (nor in the official or HF files)
            self.register_buffer("pos_embed", table, persistent=False)
        self.learned_pos_embed = learned_pos_embed
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # linear in depth
        self.blocks = nn.ModuleList(
            VideoMAEBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=rate, init_values=init_values)
            for rate in rates
        )
        # Mean pooling: no final norm on the tokens, a LayerNorm on their mean; otherwise the final
        # norm and the first token (there is no class token: the official reads patch token 0).
        self.norm = nn.Identity() if use_mean_pooling else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_mean_pooling else None
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights(head_init_scale)

    def _init_weights(self, head_init_scale: float) -> None:
        """The official init: Linear trunc-normal 0.02 with zero bias, LayerNorm identity, the
        Conv3d at PyTorch's default, a learned pos_embed trunc-normal 0.02, and the classifier
        scaled by ``head_init_scale`` (0.001: a fresh head starts near zero on a pretrained encoder)."""
        if self.learned_pos_embed:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``B x C x T x H x W`` -> pooled, normalised features ``B x D``."""
        if x.ndim != 5:
            raise ValueError(f"VideoMAE expects a B x C x T x H x W clip, got shape {tuple(x.shape)}")
        if x.shape[2] % self.tubelet_size:
            raise ValueError(f"VideoMAE needs a multiple of tubelet_size={self.tubelet_size} frames, "
                             f"got {x.shape[2]}")
        x = self.patch_embed.proj(x)  # B x D x t x h x w
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, self.grid_size, grid).to(x.dtype))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.fc_norm(x.mean(dim=1)) if self.fc_norm is not None else x[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


# Hugging Face VideoMAE module paths -> the official names (parameters keep .weight/.bias).
_HF_MODULES = {
    "videomae.embeddings.patch_embeddings.projection": "patch_embed.proj",
    "videomae.layernorm": "norm",
    "fc_norm": "fc_norm",
    "classifier": "head",
}
_HF_BLOCK_MODULES = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_BLOCK_KEY = re.compile(r"videomae\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
_HF_QKV = re.compile(
    r"videomae\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value|q_bias|v_bias)(\.weight|\.bias)?"
)
# Pre-training-only parts (official and Hugging Face): the decoder, its input projection, the mask token.
_PRETRAINING_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token")


def _from_hugging_face(state: StateDict) -> StateDict:
    """Hugging Face names -> official names; query/key/value weights fused into ``qkv`` (in that order).

    Both bias layouts are read: ``query.bias``/``value.bias`` (transformers 5) and ``q_bias``/``v_bias``
    (files written by transformers 4).
    """
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _HF_QKV.fullmatch(key)
        if match:
            layer, part, suffix = match[1], match[2], match[3] or ""
            if suffix == ".weight":
                qkv.setdefault(layer, {})[part] = value
            else:  # query.bias / q_bias -> q_bias; value.bias / v_bias -> v_bias
                out[f"blocks.{layer}.attn.{'q' if part.startswith('q') else 'v'}_bias"] = value
            continue
        module, _, param = key.rpartition(".")
        block = _HF_BLOCK_KEY.fullmatch(key)
        if module in _HF_MODULES:
            out[f"{_HF_MODULES[module]}.{param}"] = value
        elif block and block[2] in _HF_BLOCK_MODULES:
            out[f"blocks.{block[1]}.{_HF_BLOCK_MODULES[block[2]]}.{block[3]}"] = value
        else:
            out[key] = value  # unknown keys pass through, so the loader reports them
    for layer, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"Hugging Face layer {layer} has attention weights {sorted(parts)}, "
                             "not query, key and value")
        out[f"blocks.{layer}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def checkpoint_filter(state: StateDict, model: VideoMAEViT) -> StateDict:
    """Map a VideoMAE / VideoMAEv2 (official) or Hugging Face state dict onto ``model``.

    Official files hold the model under ``"module"`` (DeepSpeed) or ``"model"``, sometimes with a
    ``module.`` (DDP), ``backbone.`` or ``encoder.`` prefix, all removed as the official loader
    does. A pre-training checkpoint (it has a decoder) gives the encoder only: its final norm is
    dropped with mean pooling, ``fc_norm`` keeps the model's fresh initialisation, and the
    classifier is left to ``create_model``'s rule for a new head (re-initialised with a warning
    when fine-tuning, refused with ``strict_head``). A learned ``pos_embed`` is resampled to the
    model's grid.
    """
    if any(key.startswith("videomae.") for key in state):
        state = _from_hugging_face(state)
    for prefix in ("module.", "backbone.", "encoder."):
        if state and all(key.startswith(prefix) or key.startswith(_PRETRAINING_ONLY) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items()}

    if any(key.startswith(_PRETRAINING_ONLY) for key in state):
        state = {k: v for k, v in state.items() if not k.startswith(_PRETRAINING_ONLY)}
        if model.fc_norm is not None:
            state = {k: v for k, v in state.items() if not k.startswith("norm.")}
            state.update({f"fc_norm.{k}": v.detach().clone() for k, v in model.fc_norm.state_dict().items()})
        if "head.weight" not in state:  # a 0-class classifier: create_model's new-head rule applies
            state["head.weight"] = torch.empty(0, model.num_features)
            state["head.bias"] = torch.empty(0)
        log.info("VideoMAE pre-training checkpoint: encoder loaded, fc_norm and classifier fresh")

    if "pos_embed" in state:
        if not model.learned_pos_embed:
            raise ValueError("the checkpoint carries a learned position embedding (pos_embed) but the model "
                             "uses the fixed sine-cosine table: build it with learned_pos_embed=true "
                             "(model.learned_pos_embed=true)")
        source_grid = _checkpoint_grid(state["pos_embed"].shape[1], model.grid_size)
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], source_grid, model.grid_size)
    if any(".gamma_" in key for key in state) and model.blocks[0].gamma_1 is None:
        raise ValueError("the checkpoint has layer scale (blocks.N.gamma_1/gamma_2) but the model does not: "
                         "build it with init_values > 0 (model.init_values=0.1, any positive value)")
    return state


def _checkpoint_grid(positions: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``t x s x s`` grid of a checkpoint's table: the model's ``t`` (the official only resizes space)."""
    side = math.isqrt(positions // grid[0]) if positions % grid[0] == 0 else 0
    if grid[0] * side * side != positions:
        raise ValueError(f"checkpoint pos_embed has {positions} positions: not {grid[0]} time steps "
                         "of a square grid")
    return (grid[0], side, side)


def _config(params_m: float, gflops: float) -> ModelConfig:
    return ModelConfig(
        num_frames=16,
        sampling_rate=4,
        crop_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        paper="VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video "
              "Pre-Training (Tong et al., NeurIPS 2022)",
        reference_params_m=params_m,
        reference_gflops=gflops,
        flops_input=(16, 224, 224),
        extra={"test_clips": 5, "test_crops": 3},
    )


@register_model("videomae_vit_s", _config(22.03, 57.0), checkpoint_filter=checkpoint_filter)
def videomae_vit_s(
    num_classes: int = 400, *, embed_dim: int = 384, depth: int = 12, num_heads: int = 6, **overrides
) -> VideoMAEViT:
    """VideoMAE ViT-S/16, 16x4 at 224 (K400 79.0% top-1, 5 x 3 views)."""
    return VideoMAEViT(num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                       **overrides)


@register_model("videomae_vit_b", _config(86.53, 180.0), checkpoint_filter=checkpoint_filter)
def videomae_vit_b(
    num_classes: int = 400, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, **overrides
) -> VideoMAEViT:
    """VideoMAE ViT-B/16, 16x4 at 224 (K400 81.5% top-1, 5 x 3 views)."""
    return VideoMAEViT(num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                       **overrides)


@register_model("videomae_vit_l", _config(304.27, 597.0), checkpoint_filter=checkpoint_filter)
def videomae_vit_l(
    num_classes: int = 400, *, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16, **overrides
) -> VideoMAEViT:
    """VideoMAE ViT-L/16, 16x4 at 224 (K400 85.2% top-1, 5 x 3 views)."""
    return VideoMAEViT(num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                       **overrides)
