"""Top-k, mean class accuracy and multi-view aggregation on plain tensors."""

from __future__ import annotations

from typing import Literal

import torch

Aggregation = Literal["mean_softmax", "sum_logits", "max", "mean_sigmoid"]


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the ``k`` highest scores (k capped at #classes)."""
    if scores.shape[0] == 0:
        return {f"top{k}": float("nan") for k in ks}
    max_k = min(max(ks), scores.shape[1])
    top = scores.topk(max_k, dim=1).indices
    hits = top == labels.view(-1, 1)
    return {f"top{k}": hits[:, : min(k, max_k)].any(dim=1).float().mean().item() for k in ks}


def mean_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Average over classes present in ``labels`` of per-class recall (Kinetics' "mean class acc")."""
    accs = [
        (predictions[labels == c] == c).double().mean().item()
        for c in range(num_classes)
        if (labels == c).any()
    ]
    return sum(accs) / len(accs) if accs else float("nan")


def aggregate_views(
    view_logits: torch.Tensor, video_idx: torch.Tensor, method: Aggregation = "mean_softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine per-view logits into one score row per video.

    Returns ``(video_ids, scores)`` sorted by video id. ``mean_softmax`` averages class
    probabilities (default, as most papers), ``sum_logits`` sums raw logits (PySlowFast's
    ``sum``), ``max`` takes the per-class maximum probability over views, ``mean_sigmoid``
    averages independent class probabilities (multi-label data).
    """
    video_ids, inverse = torch.unique(video_idx, sorted=True, return_inverse=True)
    num_videos, num_classes = video_ids.numel(), view_logits.shape[1]
    index = inverse.view(-1, 1).expand(-1, num_classes)
    if method == "sum_logits":
        scores = torch.zeros(num_videos, num_classes, dtype=view_logits.dtype).scatter_add_(0, index, view_logits)
    elif method in ("mean_softmax", "mean_sigmoid"):
        probs = view_logits.softmax(dim=1) if method == "mean_softmax" else view_logits.sigmoid()
        sums = torch.zeros(num_videos, num_classes, dtype=probs.dtype).scatter_add_(0, index, probs)
        counts = torch.bincount(inverse, minlength=num_videos).to(probs.dtype).view(-1, 1)
        scores = sums / counts
    elif method == "max":
        probs = view_logits.softmax(dim=1)
        scores = torch.full((num_videos, num_classes), -1.0, dtype=probs.dtype)
        scores = scores.scatter_reduce(0, index, probs, reduce="amax", include_self=True)
    else:
        raise ValueError(f"unknown aggregation {method!r}; use mean_softmax, sum_logits, max or mean_sigmoid")
    return video_ids, scores
