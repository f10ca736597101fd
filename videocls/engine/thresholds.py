"""Per-class decision thresholds of a checkpoint, tuned on its validation split and stored beside it.

``tools/tune_thresholds.py`` scores the validation split with the test protocol (views,
aggregation, and the checkpoint's temperature when a calibration file is there), tunes with
:mod:`videocls.metrics.thresholds` and writes ``<checkpoint stem>.thresholds.json`` next to the
checkpoint, tied to its sha256 like the calibration file. Three kinds:

- ``multilabel``: one threshold per class on the sigmoid scores, maximising F1 (``objective=f1``)
  or minimising ``cost_fp * FP + cost_fn * FN`` (``objective=cost``).
- ``one_vs_rest``: the same on single-label data, each class's probability as a detector.
- ``abstain``: single-label; answer the top class only when its probability is at least ``p``
  (``cost_error`` per wrong answer vs ``cost_abstain`` per abstention, or a target accuracy).

:func:`thresholded_summary` is what ``tools/test.py`` / the predictor report with a stored file;
:func:`decide` turns probabilities into the decisions the file describes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from videocls.engine.calibrate import apply_temperature, file_sha256
from videocls.metrics.thresholds import (
    abstain_cost,
    abstain_threshold,
    apply_thresholds,
    cost_thresholds,
    coverage_accuracy_curve,
    f1_thresholds,
    multilabel_cost,
    per_class_prf,
)

log = logging.getLogger(__name__)

SUFFIX = ".thresholds.json"
KINDS = ("multilabel", "one_vs_rest", "abstain")


def thresholds_path(checkpoint: str | Path) -> Path:
    """``runs/x/checkpoints/last.pt`` -> ``runs/x/checkpoints/last.thresholds.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def read_costs(value: str, num_classes: int, class_names: list[str], name: str) -> list[float]:
    """``--cost-fp`` / ``--cost-fn``: a number, or a file of ``class,cost`` lines (every class once)."""
    try:
        return [float(value)] * num_classes
    except ValueError:
        pass
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{name} {value!r}: neither a number nor a file of 'class,cost' lines")
    costs: dict[str, float] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cls, sep, cost = line.rpartition(",")
        try:
            costs[cls.strip()] = float(cost)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'class,cost', got {line!r}") from None
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'class,cost', got {line!r}")
    missing = [c for c in class_names if c not in costs]
    unknown = sorted(set(costs) - set(class_names))
    if missing or unknown:
        raise ValueError(f"{path}: every class needs one cost; missing {missing[:5]}, unknown {unknown[:5]}")
    return [costs[c] for c in class_names]


def tune(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str,
    class_names: list[str],
    objective: str = "cost",
    cost_fp=1.0,
    cost_fn=1.0,
    cost_error: float | None = None,
    cost_abstain: float | None = None,
    target_accuracy: float | None = None,
) -> dict:
    """The record to store: thresholds and the validation numbers with and without them."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {KINDS}")
    if kind == "abstain":
        if labels.ndim != 1:
            raise ValueError("abstention thresholds are for single-label data")
        p = abstain_threshold(
            probs, labels, cost_error=cost_error, cost_abstain=cost_abstain, target_accuracy=target_accuracy
        )
        curve = coverage_accuracy_curve(probs, labels)
        record = {
            "kind": kind,
            "threshold": p,
            "cost_error": cost_error,
            "cost_abstain": cost_abstain,
            "target_accuracy": target_accuracy,
            "curve": [
                [round(float(t), 6), float(c), float(a)]
                for t, c, a in zip(curve["threshold"], curve["coverage"], curve["accuracy"])
            ],
        }
        if cost_error is not None:
            record["val"] = {
                "tuned": abstain_cost(probs, labels, p, cost_error=cost_error, cost_abstain=cost_abstain),
                "argmax": abstain_cost(probs, labels, 0.0, cost_error=cost_error, cost_abstain=cost_abstain),
            }
        return record
    targets = _targets(labels, probs.shape[1], kind)
    if objective == "f1":
        thresholds, _ = f1_thresholds(probs, targets)
    elif objective == "cost":
        thresholds, _ = cost_thresholds(probs, targets, cost_fp, cost_fn)
    else:
        raise ValueError(f"unknown objective {objective!r}; use f1 or cost")
    record = {
        "kind": kind,
        "objective": objective,
        "classes": class_names,
        "thresholds": [float(t) for t in thresholds],
        "cost_fp": [float(c) for c in torch.as_tensor(cost_fp).expand(probs.shape[1])],
        "cost_fn": [float(c) for c in torch.as_tensor(cost_fn).expand(probs.shape[1])],
    }
    record["val"] = {
        name: _multilabel_numbers(probs, targets, t, record)
        for name, t in (("tuned", thresholds), ("0.5", 0.5))
    }
    return record


def _targets(labels: torch.Tensor, num_classes: int, kind: str) -> torch.Tensor:
    if kind == "one_vs_rest":
        if labels.ndim != 1:
            raise ValueError("one_vs_rest thresholds are for single-label data; use multilabel")
        return torch.nn.functional.one_hot(labels.long(), num_classes)
    if labels.ndim != 2:
        raise ValueError("multilabel thresholds need multi-label data (N x C targets)")
    return labels


def _multilabel_numbers(probs, targets, thresholds, record) -> dict:
    m = per_class_prf(apply_thresholds(probs, thresholds), targets)
    return {
        "cost": multilabel_cost(probs, targets, thresholds, record["cost_fp"], record["cost_fn"]),
        "macro_f1": float(m["f1"].mean()),
    }


def holdout_check(probs: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int, **tune_args) -> dict:
    """Tune on ``1 - fraction`` of the videos and report the cost on the rest, tuned vs untuned."""
    from videocls.engine.probe import split_holdout  # scikit-learn: only for this check

    keys = labels.numpy() if labels.ndim == 1 else labels.argmax(1).numpy()
    fit, held = (torch.from_numpy(i) for i in split_holdout(keys, fraction, seed))
    record = tune(probs[fit], labels[fit], **tune_args)
    if record["kind"] == "abstain" and record["cost_error"] is None:
        raise ValueError("the held-out check compares costs: give --cost-error and --cost-abstain")
    if record["kind"] == "abstain":
        costs = dict(cost_error=record["cost_error"], cost_abstain=record["cost_abstain"])
        numbers = {
            "tuned": abstain_cost(probs[held], labels[held], record["threshold"], **costs),
            "argmax": abstain_cost(probs[held], labels[held], 0.0, **costs),
        }
    else:
        targets = _targets(labels[held], probs.shape[1], record["kind"])
        numbers = {
            name: _multilabel_numbers(probs[held], targets, t, record)
            for name, t in (("tuned", record["thresholds"]), ("0.5", 0.5))
        }
    return {"fraction": fraction, "seed": seed, "tuned_on": len(fit), "checked_on": len(held), **numbers}


def save_thresholds(checkpoint: str | Path, record: dict) -> Path:
    checkpoint = Path(checkpoint)
    path = thresholds_path(checkpoint)
    record = {**record, "checkpoint": checkpoint.name, "checkpoint_sha256": file_sha256(checkpoint)}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def load_thresholds(checkpoint: str | Path) -> dict | None:
    """The record beside ``checkpoint`` (with its ``path``); None when absent or tuned on other
    checkpoint bytes (a warning says so)."""
    checkpoint = Path(checkpoint)
    path = thresholds_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a thresholds file: {error}") from None
    if not isinstance(record, dict) or record.get("kind") not in KINDS or "checkpoint_sha256" not in record:
        raise ValueError(
            f"{path}: needs 'kind' (one of {KINDS}) and 'checkpoint_sha256' (rerun tools/tune_thresholds.py)"
        )
    key = "threshold" if record["kind"] == "abstain" else "thresholds"
    values = np.asarray(record.get(key, []), dtype=object).ravel().tolist()
    if not values or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
        raise ValueError(f"{path}: '{key}' must hold finite numbers (rerun tools/tune_thresholds.py)")
    if record["checkpoint_sha256"] != file_sha256(checkpoint):
        log.warning(
            "ignoring %s: it was tuned on an earlier version of %s (rerun tools/tune_thresholds.py)",
            path,
            checkpoint,
        )
        return None
    return {**record, "path": str(path)}


def tuned_scale(record: dict, probs: torch.Tensor) -> torch.Tensor:
    """``probs`` on the scale the thresholds were tuned on: the temperature in use then (if any)
    applied to the protocol's plain video probabilities, whatever calibration file is there now."""
    temperature = record.get("temperature")
    return apply_temperature(probs, temperature) if temperature else probs


def decide(record: dict, probs: torch.Tensor) -> list:
    """Per video: the answered class or None (abstain), or the list of classes over their thresholds.

    ``probs``: the test protocol's video probabilities without temperature (see :func:`tuned_scale`).
    """
    probs = tuned_scale(record, probs)
    if record["kind"] == "abstain":
        confidence, top = probs.double().max(dim=1)
        return [int(c) if p >= record["threshold"] else None for p, c in zip(confidence, top)]
    kept = apply_thresholds(probs, record["thresholds"])
    return [torch.nonzero(row).flatten().tolist() for row in kept]


def thresholded_summary(
    record: dict, probs: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> dict:
    """For results.json: coverage/accuracy/cost (abstain) or per-class precision/recall/F1.

    ``probs``: the test protocol's video probabilities without temperature (see :func:`tuned_scale`).
    """
    probs = tuned_scale(record, probs)
    if record["kind"] == "abstain":
        out = {"kind": "abstain", "threshold": record["threshold"], "file": record.get("path")}
        if record.get("cost_error") is not None:
            out.update(
                abstain_cost(
                    probs,
                    labels,
                    record["threshold"],
                    cost_error=record["cost_error"],
                    cost_abstain=record["cost_abstain"],
                )
            )
        else:
            confidence, top = probs.double().max(dim=1)
            answered = confidence >= record["threshold"]
            out["coverage"] = float(answered.double().mean())
            out["accuracy"] = (
                float((top == labels)[answered].double().mean()) if answered.any() else float("nan")
            )
        return out
    targets = _targets(labels, probs.shape[1], record["kind"])
    m = per_class_prf(apply_thresholds(probs, record["thresholds"]), targets)
    return {
        "kind": record["kind"],
        "file": record.get("path"),
        "cost": multilabel_cost(probs, targets, record["thresholds"], record["cost_fp"], record["cost_fn"]),
        "per_class": {name: {k: float(v[c]) for k, v in m.items()} for c, name in enumerate(class_names)},
        "macro_f1": float(m["f1"].mean()),
    }


def format_record(record: dict) -> str:
    """What tools/tune_thresholds.py prints."""
    lines = [f"{record['kind']} thresholds on {record.get('val_list')} ({record.get('num_videos')} videos)"]
    if record["kind"] == "abstain":
        lines.append(f"  abstain below p = {record['threshold']:.4f}")
        for name, m in record.get("val", {}).items():
            lines.append(
                f"  val {name:<7} cost/video {m['cost']:.4f}  coverage {m['coverage']:.3f}  "
                f"accuracy {m['accuracy']:.3f}"
            )
    else:
        shown = ", ".join(f"{c}={t:.3f}" for c, t in zip(record["classes"][:10], record["thresholds"][:10]))
        lines.append(f"  {shown}{' ...' if len(record['classes']) > 10 else ''}")
        for name, m in record["val"].items():
            lines.append(f"  val {name:<5} cost/video {m['cost']:.4f}  macro F1 {m['macro_f1']:.3f}")
    check = record.get("holdout_check")
    if check:
        base = "argmax" if record["kind"] == "abstain" else "0.5"
        lines.append(
            f"  held-out check (tuned on {check['tuned_on']}, scored on {check['checked_on']} others): "
            f"cost/video {check['tuned']['cost']:.4f} tuned vs {check[base]['cost']:.4f} {base}"
        )
    return "\n".join(lines)
