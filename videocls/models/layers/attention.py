"""Multi-head self-attention and the pre-norm transformer block, with PyTorch's fused SDPA kernels.

``F.scaled_dot_product_attention`` picks flash / memory-efficient kernels where available, which
is what makes space-time attention over thousands of tokens affordable; the parameters
(``qkv`` fused, then ``proj``) follow the ViT layout so timm, official TimeSformer and
Hugging Face weights map onto them one to one. MViTv2's decomposed relative position bias
(``decomposed_rel_pos_bias``) is computed here too, and passed to SDPA as its additive mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over ``B x N x C`` tokens: fused qkv projection, SDPA, output projection."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # qkv output is laid out as (3, heads, head_dim) along the channels, as in ViT checkpoints.
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(x))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, each branch under drop-path."""

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
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resample an ``L x d`` relative-position table to ``length`` rows, linearly along ``L``.

    MViTv2 sizes each table for the token grid it was built at; a larger crop, a longer clip or
    another pooling schedule needs more offsets, and the official code interpolates the learned
    table (``get_rel_pos``) rather than extrapolate it.
    """
    if table.shape[0] == length:
        return table
    return F.interpolate(table.t()[None], size=length, mode="linear")[0].t()


def _rel_pos_index(q_size: int, k_size: int, device: torch.device) -> torch.Tensor:
    """Table row for every (query, key) pair along one axis: their offset measured on the finer
    of the two grids (a pooled grid's cell spans ``ratio`` cells of the other), shifted to >= 0."""
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    offset = torch.arange(q_size, device=device)[:, None] * q_ratio
    offset = offset - torch.arange(k_size, device=device)[None, :] * k_ratio
    return (offset + (k_size - 1) * k_ratio).long()


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    q_thw: tuple[int, int, int],
    k_thw: tuple[int, int, int],
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """MViTv2's decomposed relative position bias (Li et al., CVPR 2022, Eq. 4) between patch tokens.

    ``q`` is ``B x heads x (t*h*w) x d`` (queries of the patch tokens, time-major), ``tables`` the
    learned ``(rel_pos_t, rel_pos_h, rel_pos_w)``, each ``(2 * size - 1) x d``. The bias of query
    ``i`` and key ``j`` is ``q_i . (R_t[t_i, t_j] + R_h[h_i, h_j] + R_w[w_i, w_j])``: three small
    products, one per axis, summed by broadcasting instead of one table over all 3D offsets.
    Returns ``B x heads x (t*h*w) x (k_t*k_h*k_w)``, the term added to ``q k^T / sqrt(d)`` before
    the softmax (an ``attn_mask`` of ``scaled_dot_product_attention``).
    """
    batch, heads, _, dim = q.shape
    grid = q.reshape(batch, heads, *q_thw, dim)
    per_axis = []
    for q_size, k_size, table in zip(q_thw, k_thw, tables):
        table = resize_rel_pos(table, 2 * max(q_size, k_size) - 1)
        per_axis.append(table[_rel_pos_index(q_size, k_size, q.device)])  # q_size x k_size x d
    rel_t = torch.einsum("bntyxd,tkd->bntyxk", grid, per_axis[0])
    rel_h = torch.einsum("bntyxd,ykd->bntyxk", grid, per_axis[1])
    rel_w = torch.einsum("bntyxd,xkd->bntyxk", grid, per_axis[2])
    bias = rel_t[..., :, None, None] + rel_h[..., None, :, None] + rel_w[..., None, None, :]
    return bias.reshape(batch, heads, q_thw[0] * q_thw[1] * q_thw[2], k_thw[0] * k_thw[1] * k_thw[2])
