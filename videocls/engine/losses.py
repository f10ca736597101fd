"""Classification losses selected by ``loss.name`` in the config."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


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


def inverse_frequency_weights(labels: Sequence[int | Sequence[int]], num_classes: int) -> list[float]:
    """``N / (C * n_c)`` per class (scikit-learn's "balanced"): a balanced list gets all ones.

    A multi-label video counts once for each of its labels. A class without training videos
    gets weight 0: it never is a target, and a made-up weight would only hide that.
    """
    counts = Counter(c for label in labels for c in ((label,) if isinstance(label, int) else label))
    out_of_range = sorted(c for c in counts if not 0 <= c < num_classes)
    if out_of_range:
        raise ValueError(f"labels {out_of_range[:5]} outside [0, {num_classes})")
    total = sum(counts.values())
    return [total / (num_classes * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


def _class_weights(class_weights, train_list, data_format, root, classes, num_classes) -> torch.Tensor | None:
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights != "inverse_frequency":
            raise ValueError(f"loss.class_weights={class_weights!r}: use a list of numbers, null "
                             "or inverse_frequency")
        if train_list is None or num_classes is None:
            raise ValueError("loss.class_weights=inverse_frequency needs loss.train_list and "
                             "loss.num_classes (configs/loss/weighted_ce.yaml sets them from data.*)")
        from videocls.data.annotations import read_annotations

        records = read_annotations(train_list, data_format, root=root, classes=classes)
        weights = inverse_frequency_weights([r.label for r in records], num_classes)
        absent = [c for c, w in enumerate(weights) if w == 0]
        if absent:
            log.warning("%s: classes %s have no training videos (weight 0)", train_list, absent[:10])
        log.info("inverse-frequency class weights from %s: %s", train_list, [round(w, 3) for w in weights])
        return torch.tensor(weights, dtype=torch.float32)
    return torch.tensor(list(class_weights), dtype=torch.float32)


def build_loss(
    name: str = "cross_entropy",
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | str | None = None,
    focal_gamma: float = 2.0,
    *,
    train_list: str | None = None,
    data_format: str = "list",
    root: str | None = None,
    classes: str | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """``cross_entropy`` (optionally smoothed / class-weighted), ``soft_target``, ``bce``, ``focal``.

    ``class_weights``: one number per class, or ``"inverse_frequency"`` to compute
    :func:`inverse_frequency_weights` from the training list (``train_list`` read like the data
    config reads it: ``data_format``, ``root``, ``classes``; ``num_classes`` classes).
    """
    weight = _class_weights(class_weights, train_list, data_format, root, classes, num_classes)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "soft_target":
        return SoftTargetCrossEntropy()
    if name == "bce":
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    if name == "focal":
        return FocalLoss(focal_gamma, weight)
    raise ValueError(f"unknown loss {name!r}; use cross_entropy, soft_target, bce or focal")
