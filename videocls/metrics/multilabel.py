"""Average precision for multi-label (Charades-style) evaluation.

AP depends only on the ranking of scores, so sigmoid probabilities and raw logits give the
same value. Tied scores form one threshold, as in scikit-learn's ``average_precision_score``:
every positive in a tie gets the precision measured after the whole tie.
"""

from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class AP (float64, length C) of ``N x C`` scores against ``N x C`` 0/1 targets.

    AP = mean over the positives of the precision at the rank where each is retrieved. Classes
    without a positive have no AP and get NaN.
    """
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must both be N x C"
        )
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError("targets must be multi-hot: every entry 0 or 1")
    # One row per class, ranked from the highest score; ascending order of -score keeps
    # searchsorted usable for finding where each run of tied scores ends.
    neg_scores, order = (-scores.double()).T.contiguous().sort(dim=1, stable=True)
    hits = targets.T.double().gather(1, order)
    ranks = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64)
    precision = hits.cumsum(dim=1) / ranks
    tie_end = torch.searchsorted(neg_scores, neg_scores, right=True) - 1
    positives = hits.sum(dim=1)
    ap = (hits * precision.gather(1, tie_end)).sum(dim=1) / positives
    return torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """mAP over the classes with at least one positive (PySlowFast's Charades protocol)."""
    ap = average_precision(scores, targets)
    present = ~ap.isnan()
    return ap[present].mean().item() if present.any() else float("nan")
