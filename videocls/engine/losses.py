"""Classification losses selected by ``loss.name`` in the config."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against a probability target (mixup / cutmix produce such targets)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) for imbalanced classes: ``-(1 - p_t)^gamma log p_t``."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=-1).gather(1, target.view(-1, 1)).squeeze(1)
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


def build_loss(
    name: str = "cross_entropy",
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
    focal_gamma: float = 2.0,
) -> nn.Module:
    """``cross_entropy`` (optionally smoothed / class-weighted), ``soft_target``, ``bce``, ``focal``."""
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "soft_target":
        return SoftTargetCrossEntropy()
    if name == "bce":
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    if name == "focal":
        return FocalLoss(focal_gamma, weight)
    raise ValueError(f"unknown loss {name!r}; use cross_entropy, soft_target, bce or focal")
