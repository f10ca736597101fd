"""Per-class precision / recall / F1, confusion matrices and their CSV files.

Single-label metrics: every function takes either a score matrix ``N x C`` (arg-maxed) or a
vector of ``N`` predicted class ids, plus ``N`` true labels. Undefined ratios (a class never
predicted, or absent from the labels) count as 0, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import torch


def _as_predictions(scores_or_predictions: torch.Tensor) -> torch.Tensor:
    if scores_or_predictions.ndim == 2:
        return scores_or_predictions.argmax(dim=1)
    if scores_or_predictions.ndim == 1:
        return scores_or_predictions.long()
    raise ValueError(
        f"expected N x C scores or N predictions, got shape {tuple(scores_or_predictions.shape)}"
    )


def confusion_matrix(
    scores_or_predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``C x C`` int64 counts, rows = true class, columns = predicted class (scikit-learn's layout)."""
    predictions = _as_predictions(scores_or_predictions)
    labels = labels.long().view(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.numel()} predictions but {labels.numel()} labels")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got [{values.min()}, {values.max()}]")
    flat = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def per_class_metrics(
    scores_or_predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, torch.Tensor]:
    """Per-class ``precision``, ``recall``, ``f1`` (float64) and ``support`` (int64), each of length C."""
    return metrics_from_confusion(confusion_matrix(scores_or_predictions, labels, num_classes))


def metrics_from_confusion(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support from a confusion matrix, so a stored matrix suffices."""
    counts = matrix.double()
    true_pos = counts.diagonal()
    predicted = counts.sum(dim=0)
    support = counts.sum(dim=1)
    # Every numerator is 0 where its denominator is, so clamping the count to 1 gives 0 for 0/0.
    # F1 as 2TP / (2TP + FP + FN) equals 2PR / (P + R) and needs no special case for P = R = 0.
    return {
        "precision": true_pos / predicted.clamp(min=1),
        "recall": true_pos / support.clamp(min=1),
        "f1": 2 * true_pos / (predicted + support).clamp(min=1),
        "support": matrix.sum(dim=1).long(),
    }


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return list(class_names)


def write_confusion_csv(
    matrix: torch.Tensor, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> None:
    """CSV with a header of predicted class names and one row per true class."""
    names = _class_names(class_names, matrix.shape[0])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, matrix.tolist()):
            writer.writerow([name, *row])


def write_per_class_csv(
    metrics: dict[str, torch.Tensor], path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> None:
    """CSV ``class,precision,recall,f1,support`` from :func:`per_class_metrics`' output."""
    names = _class_names(class_names, metrics["support"].numel())
    columns = ("precision", "recall", "f1")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *columns, "support"])
        for c, name in enumerate(names):
            values = [f"{metrics[k][c].item():.6f}" for k in columns]
            writer.writerow([name, *values, int(metrics["support"][c])])
