"""PNG figures for evaluation reports: confusion heat map and reliability diagram.

Each function writes the PNG and returns the figure for callers that want to inspect or
reuse it. Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly, never through
pyplot, so plotting works headless, changes no global backend and leaks no open figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from videocls.metrics.calibration import DEFAULT_BINS, calibration_bins, expected_calibration_error

MAX_LABELLED_CLASSES = 100


def _save(fig: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


def plot_confusion_matrix(
    matrix: torch.Tensor,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
) -> Figure:
    """Heat map of a ``C x C`` confusion matrix (rows true, columns predicted).

    ``normalize`` divides each row by its support, so the diagonal reads as per-class recall
    and rare classes stay visible. Class names label the axes up to 100 classes; beyond that
    they would overlap into a black band, so the axes show plain indices.
    """
    num_classes = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != num_classes:
        raise ValueError(f"confusion matrix must be square, got {tuple(matrix.shape)}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    values = matrix.double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp(min=1)
    labelled = class_names is not None and num_classes <= MAX_LABELLED_CLASSES
    side = 4 + 0.18 * num_classes if labelled else 8  # room for each name, else a plain map
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(values.numpy(), cmap="Blues", interpolation="nearest", vmin=0)
    colour_label = "fraction of true class" if normalize else "count"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colour_label)
    if labelled:
        font = max(4, 10 - num_classes // 15)
        ax.set_xticks(range(num_classes), class_names, rotation=90, fontsize=font)
        ax.set_yticks(range(num_classes), class_names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)
    return fig


def plot_reliability_diagram(
    probs: torch.Tensor,
    labels: torch.Tensor,
    path: str | os.PathLike,
    num_bins: int = DEFAULT_BINS,
    title: str | None = None,
) -> Figure:
    """Accuracy against confidence per bin (bars) beside the diagonal of perfect calibration,
    with the share of samples per bin underneath, since a large gap in an almost empty bin
    hardly matters."""
    bins = calibration_bins(probs, labels, num_bins)
    ece = expected_calibration_error(probs, labels, num_bins)
    edges = bins.edges.numpy()
    width = edges[1] - edges[0]
    filled = (bins.count > 0).numpy()
    accuracy = bins.accuracy.nan_to_num(0).numpy()
    confidence = bins.confidence.nan_to_num(0).numpy()

    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    left = edges[:-1]
    top.bar(left, accuracy, width=width, align="edge", color="tab:blue", edgecolor="black", label="accuracy")
    gap = abs(accuracy - confidence) * filled
    gap_bottom = np.minimum(accuracy, confidence)
    top.bar(left, gap, bottom=gap_bottom, width=width, align="edge", color="tab:red", alpha=0.35, label="gap")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title + ': ' if title else ''}ECE = {100 * ece:.2f}%")
    top.legend(loc="upper left")
    share = (bins.count.double() / bins.count.sum()).numpy()
    bottom.bar(left, share, width=width, align="edge", color="gray", edgecolor="black")
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("share")
    _save(fig, path)
    return fig
