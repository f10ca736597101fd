"""Parameter and FLOP counts in the fvcore convention (one multiply-add = one FLOP).

fvcore has no handle for ``scaled_dot_product_attention``; without one every attention
model is undercounted (by about 6 GFLOPs for TimeSformer-B at 8x224), so one is added here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from videocls.models.registry import ModelConfig


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _sdpa_flops(inputs, outputs) -> int:
    """``q @ k^T`` and ``attn @ v``: 2 x B x heads x Lq x Lk x head_dim multiply-adds."""
    q_shape, k_shape = inputs[0].type().sizes(), inputs[1].type().sizes()
    *batch, lq, dim = q_shape
    lk = k_shape[-2]
    return 2 * math.prod(batch) * lq * lk * dim


def example_input(config: ModelConfig, frames_hw: tuple[int, int, int] | None = None):
    """A one-clip input of the model's layout at ``frames_hw`` (default: its FLOPs input)."""
    t, h, w = frames_hw or config.flops_input or (config.num_frames, config.crop_size, config.crop_size)
    clip = torch.randn(1, 3, t, h, w)
    alpha = config.extra.get("alpha")
    if alpha:  # SlowFast: [slow, fast] from one clip of fast frames
        return [clip[:, :, ::alpha].contiguous(), clip]
    return clip


@torch.no_grad()
def count_gflops(model: nn.Module, inputs) -> float:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model.eval(), (inputs,))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9
