"""Top-k, mean class accuracy and multi-view aggregation on plain tensors."""

from __future__ import annotations

import warnings
from typing import Literal

import torch

Aggregation = Literal["mean_softmax", "mean_logits", "max", "mean_sigmoid"]
#: Names for ``test.aggregation`` (``mean_sigmoid`` is the multi-label protocol, chosen by the data).
AGGREGATIONS = ("mean_softmax", "mean_logits", "max")
#: Old names, still accepted with a warning: ``sum_logits`` was documented as "PySlowFast's sum"
#: but PySlowFast's default ensemble sums softmax probabilities (that is ``mean_softmax`` up to a
#: per-video constant, so the same ranking); summed logits rank like ``mean_logits``.
DEPRECATED_AGGREGATIONS = {"sum_logits": "mean_logits"}
#: Aggregations whose scores are logits (a softmax turns them into probabilities).
LOGIT_AGGREGATIONS = ("mean_logits",)


def canonical_aggregation(method: str) -> str:
    """``method`` under its current name (a deprecated name warns); unknown names raise ValueError."""
    if method in DEPRECATED_AGGREGATIONS:
        new = DEPRECATED_AGGREGATIONS[method]
        warnings.warn(f"test.aggregation={method} is deprecated: it averages logits now, use {new} "
                      f"(for PySlowFast's softmax ensemble use mean_softmax)", FutureWarning, stacklevel=3)
        return new
    if method not in (*AGGREGATIONS, "mean_sigmoid"):
        raise ValueError(f"unknown aggregation {method!r}; use one of {', '.join(AGGREGATIONS)}")
    return method


def topk_accuracy(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
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

    Returns ``(video_ids, scores)`` sorted by video id. Methods, named for what they compute:

    - ``mean_softmax`` (default): the mean over views of the class probabilities. PySlowFast's
      default ensemble (``ENSEMBLE_METHOD: sum``) sums the softmax outputs: the same ranking,
      scores divided by the number of views (so they stay probabilities).
    - ``mean_logits``: the mean over views of the raw logits (scores are logits, not
      probabilities). The old name ``sum_logits`` is accepted with a warning and means this.
    - ``max``: the per-class maximum probability over views (PySlowFast's ``max``).
    - ``mean_sigmoid``: the mean of independent class probabilities (multi-label data).
    """
    method = canonical_aggregation(method)
    video_ids, inverse = torch.unique(video_idx, sorted=True, return_inverse=True)
    num_videos, num_classes = video_ids.numel(), view_logits.shape[1]
    index = inverse.view(-1, 1).expand(-1, num_classes)
    counts = torch.bincount(inverse, minlength=num_videos).to(view_logits.dtype).view(-1, 1)
    if method == "max":
        probs = view_logits.softmax(dim=1)
        scores = torch.full((num_videos, num_classes), -1.0, dtype=probs.dtype)
        return video_ids, scores.scatter_reduce(0, index, probs, reduce="amax", include_self=True)
    values = {"mean_logits": view_logits, "mean_softmax": view_logits.softmax(dim=1),
              "mean_sigmoid": view_logits.sigmoid()}[method]
    sums = torch.zeros(num_videos, num_classes, dtype=values.dtype).scatter_add_(0, index, values)
    return video_ids, sums / counts
