"""Optimisers with PySlowFast's linear LR scaling and per-iteration warm-up schedules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_bias_embed: bool) -> list[dict]:
    """Split parameters so norms, biases and embeddings get no weight decay (unless asked).

    Embeddings are recognised by name (``pos_embed``, ``time_embed``, ``cls_token``), as in
    the official TimeSformer and timm.
    """
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            is_special = (
                isinstance(module, _NORM_TYPES)
                or name == "bias"
                or any(key in full for key in ("pos_embed", "time_embed", "cls_token"))
            )
            (no_decay if is_special and not decay_norm_bias_embed else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def scaled_lr(base_lr: float, global_batch_size: int, base_batch_size: int | None) -> float:
    """Linear scaling rule (Goyal et al.; PySlowFast): ``lr = base_lr * global_batch / base_batch``."""
    return base_lr if not base_batch_size else base_lr * global_batch_size / base_batch_size


def build_optimizer(
    model: nn.Module,
    global_batch_size: int,
    name: str = "sgd",
    base_lr: float = 0.1,
    base_batch_size: int | None = None,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas: Sequence[float] = (0.9, 0.999),
    decay_norm_bias_embed: bool = False,
) -> torch.optim.Optimizer:
    lr = scaled_lr(base_lr, global_batch_size, base_batch_size)
    groups = param_groups(model, weight_decay, decay_norm_bias_embed)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"unknown optimizer {name!r}; use sgd or adamw")


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    name: str = "cosine",
    warmup_start_factor: float = 0.01,
    min_factor: float = 0.0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the peak LR at optimiser step ``step``: linear warm-up, then cosine or steps."""
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if name == "cosine":
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "steps":
        return gamma ** sum(step >= m for m in milestones)
    if name == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {name!r}; use cosine, steps or constant")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    max_epochs: int,
    name: str = "cosine",
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    min_factor: float = 0.0,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule; epochs in the config are converted to optimiser steps here."""
    total = steps_per_epoch * max_epochs
    warmup = int(round(warmup_epochs * steps_per_epoch))
    step_milestones = [int(round(m * steps_per_epoch)) for m in milestones]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total, warmup, name, warmup_start_factor, min_factor, step_milestones, gamma),
    )
