"""Find likely label errors: out-of-sample probe probabilities fed to cleanlab's confident learning.

Every video gets class probabilities from a linear probe (:mod:`videocls.engine.probe`) that
never saw it: k-fold cross-validation over the features file. ``cleanlab.filter.find_label_issues``
(Northcutt et al., "Confident Learning", JAIR 2021) then estimates the joint distribution of
given and true labels from those probabilities and flags the videos it attributes to off-diagonal
cells (``prune_by_noise_rate``), ranked by self-confidence (the probability of the given label:
lowest first). The per-class noise rate is cleanlab's estimate of the fraction of a class's
videos whose given label is wrong.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from cleanlab.count import estimate_joint
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold

from videocls.engine.features import load_features
from videocls.engine.probe import class_probabilities, make_probe


def out_of_sample_probabilities(
    x: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """N x C probabilities, each row from the probe fitted on the other ``folds - 1`` folds."""
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() < folds:
        raise ValueError(
            f"the smallest class has {counts.min()} videos, fewer than --folds {folds}; "
            "lower --folds or add videos"
        )
    probs = np.zeros((len(labels), num_classes))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
        probe = make_probe(C, seed=seed).fit(x[fit], labels[fit])
        probs[held] = class_probabilities(probe, x[held], num_classes)
    return probs


FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")


def label_issues(
    labels: np.ndarray, probs: np.ndarray, filter_by: str = "prune_by_noise_rate"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flagged rows ranked worst first, quality score per row, per-class noise rate)``.

    ``filter_by`` is cleanlab's rule (its default, ``prune_by_noise_rate``, flags as many videos
    per off-diagonal cell as the estimated joint says; ``predicted_neq_given`` flags every video
    whose out-of-sample prediction differs from its label).

    The noise rate of class ``i`` is ``1 - P(true = i | given = i)`` from cleanlab's estimate of
    the joint distribution of given (rows) and true (columns) labels.
    """
    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter {filter_by!r}; use one of {', '.join(FILTERS)}")
    ranked = find_label_issues(labels, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    joint = estimate_joint(labels, probs)
    given = joint.sum(axis=1)
    noise = 1.0 - np.divide(np.diag(joint), given, out=np.ones_like(given), where=given > 0)
    return np.asarray(ranked, dtype=np.int64), scores, noise


def read_noise_file(path: str | Path) -> set[str]:
    """Video paths listed in a ``train_noise.csv`` of tools/make_dataset.py --label-noise."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:1] != ["path"]:
        raise ValueError(
            f"{path}: expected a header 'path,true_label,given_label' (tools/make_dataset.py --label-noise)"
        )
    return {row[0] for row in rows[1:] if row}


def precision_recall(flagged: set[str], truth: set[str]) -> dict[str, float]:
    """Of the flagged videos, the fraction truly mislabelled; of those, the fraction flagged."""
    hits = len(flagged & truth)
    return {
        "precision": hits / len(flagged) if flagged else float("nan"),
        "recall": hits / len(truth) if truth else float("nan"),
        "flagged": len(flagged),
        "mislabelled": len(truth),
        "found": hits,
    }


def find_issues(
    features: str | Path,
    out_dir: str | Path,
    *,
    folds: int = 5,
    C: float = 1.0,
    seed: int = 0,
    noise_file: str | Path | None = None,
    filter_by: str = "prune_by_noise_rate",
) -> dict:
    """Write ``label_issues.csv`` (ranked) and ``label_issues_summary.json``; return the summary.

    ``noise_file`` (the ``train_noise.csv`` of a dataset made with label noise) adds the
    precision and recall of the flagged videos against the truly flipped ones. Its paths are
    matched against the features' video paths by their ending (the features hold absolute paths).
    """
    data = load_features(features)
    if data.multilabel:
        raise ValueError(
            f"{features}: multi-label features; label-issue finding here is for single-label lists"
        )
    labels = data.labels.astype(np.int64)
    num_classes = len(data.classes)
    probs = out_of_sample_probabilities(data.features, labels, num_classes, folds=folds, C=C, seed=seed)
    ranked, scores, noise = label_issues(labels, probs, filter_by)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "label_issues.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "given_label", "suggested_label", "score", "given_name", "suggested_name"])
        for row in ranked:
            given, suggested = int(labels[row]), int(probs[row].argmax())
            writer.writerow(
                [
                    data.videos[row],
                    given,
                    suggested,
                    f"{scores[row]:.6f}",
                    data.classes[given],
                    data.classes[suggested],
                ]
            )
    per_class = [
        {
            "class": name,
            "videos": int((labels == c).sum()),
            "flagged": int((labels[ranked] == c).sum()),
            "estimated_noise_rate": float(noise[c]),
        }
        for c, name in enumerate(data.classes)
    ]
    summary = {
        "features": str(features),
        "num_videos": len(labels),
        "num_flagged": len(ranked),
        "folds": folds,
        "C": C,
        "seed": seed,
        "filter_by": filter_by,
        "out_of_sample_top1": float((probs.argmax(1) == labels).mean()),
        "estimated_noise_rate": float(1.0 - np.trace(estimate_joint(labels, probs))),
        "per_class": per_class,
        "csv": str(csv_path),
    }
    if noise_file is not None:
        flagged = {str(data.videos[row]) for row in ranked}
        truth = _match_paths(read_noise_file(noise_file), data.videos)
        summary["against_noise_file"] = {"file": str(noise_file), **precision_recall(flagged, truth)}
    (out_dir / "label_issues_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return summary


def _match_paths(listed: set[str], videos: np.ndarray) -> set[str]:
    """The features' paths that end with a listed (list-relative) path."""
    return {str(v) for v in videos if any(str(v) == p or str(v).endswith("/" + p) for p in listed)}


def format_summary(summary: dict) -> str:
    lines = [
        f"{summary['num_flagged']} of {summary['num_videos']} videos flagged "
        f"(out-of-sample probe top-1 {summary['out_of_sample_top1']:.3f}, estimated noise "
        f"{summary['estimated_noise_rate']:.3f}) -> {summary['csv']}",
        f"{'class':<28} {'videos':>6} {'flagged':>7} {'est. noise':>10}",
    ]
    for row in summary["per_class"]:
        lines.append(
            f"{row['class']:<28} {row['videos']:>6} {row['flagged']:>7} {row['estimated_noise_rate']:>10.3f}"
        )
    if "against_noise_file" in summary:
        m = summary["against_noise_file"]
        lines.append(
            f"against {m['file']}: precision {m['precision']:.3f} ({m['found']}/{m['flagged']}), "
            f"recall {m['recall']:.3f} ({m['found']}/{m['mislabelled']})"
        )
    return "\n".join(lines)
