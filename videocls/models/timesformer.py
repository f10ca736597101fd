"""TimeSformer: "Is Space-Time Attention All You Need for Video Understanding?" (Bertasius et al., ICML 2021).

A ViT-B/16 applied to every frame's 16x16 patches, with a learned time embedding and, in the
default *divided* variant, a temporal attention over each patch location's frames before the
usual spatial attention in every block. ``joint_space_time`` (all tokens attend to all) and
``space_only`` (frames processed independently, averaged at the end) are the paper's Table 1
ablations.

Tokens are the class token followed by the patch tokens frame by frame (time-major). Parameter
names follow the official implementation (and timm's ViT), so official checkpoints load after
dropping their ``model.`` prefix and 2D ViT weights map onto the same names.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from videocls.models.checkpoints import load_state_dict_any
from videocls.models.layers.attention import Attention, TransformerBlock
from videocls.models.layers.types import StateDict
from videocls.models.registry import KINETICS_MEAN, KINETICS_STD, ModelConfig, register_model

ATTENTION_TYPES = ("divided_space_time", "joint_space_time", "space_only")


def resize_pos_embed(pos_embed: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Resample ``1 x (1 + g*g) x D`` spatial position embeddings to a ``grid_size`` patch grid.

    Nearest-neighbour on the square grid, as the official code does for test-time 256 crops.
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    side = math.isqrt(patch_pos.shape[1])
    if side * side != patch_pos.shape[1]:
        raise ValueError(f"pos_embed has {patch_pos.shape[1]} patch positions, not a square grid")
    if (side, side) == tuple(grid_size):
        return pos_embed
    grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(grid_size), mode="nearest")
    return torch.cat([cls_pos, grid.flatten(2).transpose(1, 2)], dim=1)


def resize_time_embed(time_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Resample ``1 x T x D`` time embeddings to ``num_frames`` (nearest, as the official code)."""
    if time_embed.shape[1] == num_frames:
        return time_embed
    return F.interpolate(time_embed.transpose(1, 2), size=num_frames, mode="nearest").transpose(1, 2)


class PatchEmbed(nn.Module):
    """Non-overlapping 2D patches of every frame: ``B x C x T x H x W -> B x T x h x w x D``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, chans, frames, height, width = x.shape
        x = x.transpose(1, 2).reshape(batch * frames, chans, height, width)
        x = self.proj(x)
        return x.reshape(batch, frames, *x.shape[1:]).permute(0, 1, 3, 4, 2)


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention, then spatial attention, then the MLP (the paper's Fig. 1, "T+S").

    Temporal: each patch location attends over its own frames (patch tokens only), through its
    own norm and a ``temporal_fc`` projection that starts at zero, so a block initialised from
    ImageNet ViT weights begins as the 2D block. Spatial: each frame attends within itself, the
    class token replicated into every frame and its per-frame updates averaged.

    Drop-path acts where the official implementation applies it: on the per-location temporal
    sequences (before ``temporal_fc``) and on the per-frame spatial sequences, so it drops
    locations and frames, not whole clips; the MLP branch is dropped per clip.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        batch, tokens, dim = x.shape
        num_patches = (tokens - 1) // num_frames
        cls, patches = x[:, :1], x[:, 1:]

        # Temporal attention: one sequence of num_frames tokens per (clip, patch location).
        xt = patches.reshape(batch, num_frames, num_patches, dim).transpose(1, 2)
        xt = xt.reshape(batch * num_patches, num_frames, dim)
        res = self.drop_path(self.temporal_attn(self.temporal_norm1(xt)))
        res = res.reshape(batch, num_patches, num_frames, dim).transpose(1, 2)
        patches = patches + self.temporal_fc(res.reshape(batch, num_frames * num_patches, dim))

        # Spatial attention: one sequence per (clip, frame), each with its own copy of the class token.
        xs = torch.cat(
            [
                cls.expand(batch, num_frames, dim).reshape(batch * num_frames, 1, dim),
                patches.reshape(batch * num_frames, num_patches, dim),
            ],
            dim=1,
        )
        res = self.drop_path(self.attn(self.norm1(xs))).reshape(batch, num_frames, 1 + num_patches, dim)
        cls = cls + res[:, :, 0].mean(dim=1, keepdim=True)
        patches = patches + res[:, :, 1:].reshape(batch, num_frames * num_patches, dim)

        x = torch.cat([cls, patches], dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TimeSformer(nn.Module):
    """Video ViT on ``B x C x T x H x W`` clips, classifying from the final class token.

    Other clip lengths and crop sizes than the configured ``num_frames`` / ``img_size`` work: the
    time and position embeddings are resampled (nearest) to the input, as in the official code.
    """

    classifier_prefix = "head"

    def __init__(
        self,
        num_classes: int = 400,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 8,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.0,
        attention: str = "divided_space_time",
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        if img_size % patch_size != 0:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.attention = attention
        self.num_frames = num_frames
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_features = embed_dim

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        if attention != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
            self.time_drop = nn.Dropout(drop_rate)

        block = DividedSpaceTimeBlock if attention == "divided_space_time" else TransformerBlock
        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # linear in depth
        self.blocks = nn.ModuleList(
            block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=rate,
            )
            for rate in drop_path_rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """ViT init (truncated normal 0.02, LayerNorm identity); time_embed and temporal_fc start at zero."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            if isinstance(block, DividedSpaceTimeBlock):
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``B x C x T x H x W`` -> final normalised class token ``B x D``."""
        if x.ndim != 5:
            raise ValueError(f"TimeSformer expects a B x C x T x H x W clip, got shape {tuple(x.shape)}")
        batch, _, num_frames = x.shape[:3]
        patches = self.patch_embed(x)  # B x T x h x w x D
        grid_size = patches.shape[2:4]
        patches = patches.flatten(2, 3)  # B x T x N x D
        pos_embed = resize_pos_embed(self.pos_embed, grid_size)
        cls = self.pos_drop(self.cls_token + pos_embed[:, :1])
        patches = self.pos_drop(patches + pos_embed[:, None, 1:])

        if self.attention == "space_only":
            frames = patches.reshape(batch * num_frames, *patches.shape[2:])
            x = torch.cat([cls.expand(batch * num_frames, -1, -1), frames], dim=1)
            for block in self.blocks:
                x = block(x)
            # Frames never meet: average their class tokens (the official averages before the norm).
            return self.norm(x[:, 0].reshape(batch, num_frames, -1).mean(dim=1))

        patches = self.time_drop(patches + resize_time_embed(self.time_embed, num_frames)[:, :, None])
        x = torch.cat([cls.expand(batch, -1, -1), patches.flatten(1, 2)], dim=1)
        for block in self.blocks:
            x = block(x, num_frames) if self.attention == "divided_space_time" else block(x)
        return self.norm(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


# Hugging Face TimesformerForVideoClassification module paths -> ours (parameters keep their .weight/.bias).
_HF_MODULES = {
    "timesformer.embeddings.patch_embeddings.projection": "patch_embed.proj",
    "timesformer.layernorm": "norm",
    "classifier": "head",
}
_HF_PARAMETERS = {
    "timesformer.embeddings.cls_token": "cls_token",
    "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
}
_HF_BLOCK_MODULES = {
    "temporal_layernorm": "temporal_norm1",
    "temporal_attention.attention.qkv": "temporal_attn.qkv",
    "temporal_attention.output.dense": "temporal_attn.proj",
    "temporal_dense": "temporal_fc",
    "layernorm_before": "norm1",
    "attention.attention.qkv": "attn.qkv",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_BLOCK_KEY = re.compile(r"timesformer\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


def _hf_key(key: str) -> str:
    """Our name for a Hugging Face key; unknown keys pass through so the loader reports them."""
    if key in _HF_PARAMETERS:
        return _HF_PARAMETERS[key]
    module, _, param = key.rpartition(".")
    if module in _HF_MODULES:
        return f"{_HF_MODULES[module]}.{param}"
    match = _HF_BLOCK_KEY.fullmatch(key)
    if match and match[2] in _HF_BLOCK_MODULES:
        return f"blocks.{match[1]}.{_HF_BLOCK_MODULES[match[2]]}.{match[3]}"
    return key


def checkpoint_filter(state: StateDict, model: TimeSformer) -> StateDict:
    """Map official TimeSformer (``model.``-prefixed) or Hugging Face state dicts onto ``model``.

    The layout is told by the key names; videocls's own checkpoints pass through. Position and
    time embeddings are resampled when the model's crop size or clip length differs from the
    checkpoint's (fine-tuning at a new resolution or length, as the official loader does).
    """
    if any(key.startswith("timesformer.") for key in state):
        state = {_hf_key(key): value for key, value in state.items()}
    elif state and all(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    if "pos_embed" in state:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], model.grid_size)
    if "time_embed" in state and hasattr(model, "time_embed"):
        state["time_embed"] = resize_time_embed(state["time_embed"], model.num_frames)
    return state


def init_from_vit(model: TimeSformer, state_2d: StateDict | str | Path) -> None:
    """Initialise ``model`` from 2D ViT weights (timm ``vit_base_patch16_224`` names), as the paper does.

    Patch embedding, class token, position embedding (resampled to the model's grid), blocks and
    final norm are copied; each temporal attention and its norm start as copies of the spatial
    ones, ``temporal_fc`` and ``time_embed`` as zeros, so on a clip of identical frames the model
    computes the image model's features. The classifier keeps its fresh initialisation.
    """
    source = str(state_2d) if isinstance(state_2d, (str, Path)) else "2D ViT state dict"
    if isinstance(state_2d, (str, Path)):
        state_2d = load_state_dict_any(state_2d)
    own = model.state_dict()
    vit = {key: value for key, value in state_2d.items() if not key.startswith("head.")}
    if "pos_embed" in vit:
        vit["pos_embed"] = resize_pos_embed(vit["pos_embed"], model.grid_size)

    unexpected = sorted(set(vit) - set(own))
    wrong_shape = sorted(k for k in set(vit) & set(own) if vit[k].shape != own[k].shape)
    fresh = {key for key in own if key.startswith("head.") or key == "time_embed" or ".temporal_" in key}
    missing = sorted(set(own) - set(vit) - fresh)
    if unexpected or wrong_shape or missing:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: unexpected keys {unexpected[:10]}, "
            f"shape mismatches {wrong_shape[:10]}, missing keys {missing[:10]}"
        )

    new = dict(own)
    new.update(vit)
    for key in fresh:
        if key == "time_embed" or ".temporal_fc." in key:
            new[key] = torch.zeros_like(own[key])
        elif ".temporal_attn." in key or ".temporal_norm1." in key:
            spatial = key.replace(".temporal_attn.", ".attn.").replace(".temporal_norm1.", ".norm1.")
            new[key] = vit[spatial].clone()
    model.load_state_dict(new)


@register_model(
    "timesformer_base",
    ModelConfig(
        num_frames=8,
        sampling_rate=32,
        crop_size=224,
        # The official recipe (TimeSformer's PySlowFast config, DATA.MEAN/STD defaults) and Hugging
        # Face's preprocessor for facebook/timesformer-base-finetuned-k400 both use the Kinetics
        # values, not the 0.5/0.5 of the ImageNet ViT it is initialised from.
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        paper="Is Space-Time Attention All You Need for Video Understanding? (Bertasius et al., ICML 2021)",
        reference_params_m=121.57,
        reference_gflops=196.0,
        flops_input=(8, 224, 224),
        extra={"attention": "divided_space_time", "test_clips": 1, "test_crops": 3},
    ),
    checkpoint_filter=checkpoint_filter,
    init_2d=init_from_vit,
)
def timesformer_base(num_classes: int = 400, **overrides) -> TimeSformer:
    """TimeSformer ViT-B/16, divided space-time attention, 8 frames at 224 (the paper's default)."""
    return TimeSformer(num_classes=num_classes, **overrides)
