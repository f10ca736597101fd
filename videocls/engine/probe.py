"""Linear probes on extracted features: logistic regression, scored like the test protocol.

The probe is scikit-learn's multinomial ``LogisticRegression`` (L-BFGS, L2 with strength
``1 / C``) on standardised features. It is fitted on the training features and scored on
held-out ones: a separate features file (``--val``, e.g. the validation split) or a stratified
fraction of the training videos (``--holdout``). ``results.json`` has the same ``video``
metrics as ``tools/test.py`` (top-1, top-5, mean class accuracy, from
``videocls.metrics.classification``); ``clip`` is empty since a feature is already one per video.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from videocls.engine.features import Features, load_features
from videocls.engine.report import format_results, write_results
from videocls.metrics.classification import mean_class_accuracy, topk_accuracy
from videocls.metrics.per_class import confusion_matrix, metrics_from_confusion, write_per_class_csv


def make_probe(C: float = 1.0, max_iter: int = 2000, seed: int = 0) -> Pipeline:
    """Standardise, then multinomial logistic regression (the classic linear-probe protocol)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def _single_label(features: Features, path: str | Path) -> None:
    if features.multilabel:
        raise ValueError(f"{path}: multi-label features; the linear probe here is for single-label lists")


def class_probabilities(probe: Pipeline, x: np.ndarray, num_classes: int) -> np.ndarray:
    """N x ``num_classes`` probabilities; classes absent from the probe's training data get 0."""
    probs = np.zeros((len(x), num_classes))
    probs[:, probe.classes_] = probe.predict_proba(x)
    return probs


def video_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``top1``, ``top5`` and ``mean_class_acc`` as the test protocol reports them."""
    scores, target = torch.from_numpy(probs), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    out = topk_accuracy(scores, target)
    out["mean_class_acc"] = mean_class_accuracy(scores.argmax(1), target, probs.shape[1])
    return out


def split_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(fit, held_out)``: a stratified split when every class has two videos."""
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout is a fraction of the videos, in (0, 1); got {fraction}")
    rows = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    fit, held = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(held)


def run_probe(
    train: str | Path,
    out_dir: str | Path,
    *,
    val: str | Path | None = None,
    holdout: float = 0.2,
    C: float = 1.0,
    seed: int = 0,
) -> dict:
    """Fit the probe, write ``results.json``, ``predictions.csv``, ``per_class.csv`` and
    ``probe.npz`` (scaler and weights) to ``out_dir``; return the results."""
    fit_set = load_features(train)
    _single_label(fit_set, train)
    classes = fit_set.classes
    if val is not None:
        held_set = load_features(val)
        _single_label(held_set, val)
        if held_set.features.shape[1] != fit_set.features.shape[1] or held_set.classes != classes:
            raise ValueError(
                f"{val}: features or classes differ from {train}; extract both with the same model"
            )
        x_fit, y_fit = fit_set.features, fit_set.labels
        x_held, y_held, held_videos = held_set.features, held_set.labels, held_set.videos
        held_from = str(val)
    else:
        fit_rows, held_rows = split_holdout(fit_set.labels, holdout, seed)
        x_fit, y_fit = fit_set.features[fit_rows], fit_set.labels[fit_rows]
        x_held, y_held, held_videos = (
            fit_set.features[held_rows],
            fit_set.labels[held_rows],
            fit_set.videos[held_rows],
        )
        held_from = f"{train} (stratified {holdout:g} held out, seed {seed})"
    probe = make_probe(C, seed=seed).fit(x_fit, y_fit)
    probs = class_probabilities(probe, x_held, len(classes))
    summary = {
        "clip": {},
        "video": video_metrics(probs, y_held),
        "num_videos": len(y_held),
        "num_views": len(y_held),
        "probe": {
            "train": str(train),
            "held_out": held_from,
            "num_train_videos": len(y_fit),
            "C": C,
            "feature_dim": int(x_fit.shape[1]),
            "seed": seed,
            "train_top1": float((probe.predict(x_fit) == y_fit).mean()),
        },
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_predictions(out_dir / "predictions.csv", held_videos, y_held, probs, classes)
    matrix = confusion_matrix(
        torch.from_numpy(probs), torch.from_numpy(y_held.astype(np.int64)), len(classes)
    )
    write_per_class_csv(metrics_from_confusion(matrix), out_dir / "per_class.csv", classes)
    scaler, logistic = probe[0], probe[-1]
    np.savez(
        out_dir / "probe.npz",
        mean=scaler.mean_,
        scale=scaler.scale_,
        coef=logistic.coef_,
        intercept=logistic.intercept_,
        classes=logistic.classes_,
    )
    summary["results_path"] = str(write_results(summary, out_dir))
    print(format_results(summary, title=f"linear probe on {Path(train).name}"))
    return summary


def _write_predictions(path: Path, videos, labels, probs: np.ndarray, classes: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "label", "label_name", "pred", "pred_name", "prob"])
        for video, label, row in zip(videos, labels, probs):
            pred = int(row.argmax())
            writer.writerow([video, int(label), classes[int(label)], pred, classes[pred], f"{row[pred]:.6f}"])
