"""Temperature scaling of a checkpoint's video-level predictions, stored beside the checkpoint.

``tools/calibrate.py`` fits one temperature ``T`` on the validation split's video-level
predictions (after the test protocol's multi-view aggregation, as PySlowFast reports them)
and writes ``<checkpoint stem>.calibration.json`` next to the checkpoint. ``tools/test.py``
and the predictor apply it whenever that file is there and was fitted on the same checkpoint
bytes (a file left from before the checkpoint was overwritten is ignored with a warning).

The video-level logits are the log of the aggregated class probabilities: ``softmax(log p)
= p``, so ``softmax(log p / T)`` is temperature scaling of exactly the prediction the
protocol makes, and it never changes which class ranks first (accuracy is unchanged). With a
single view this is ``softmax(logits / T)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from videocls.metrics.calibration import temperature_scaling_report

log = logging.getLogger(__name__)

SUFFIX = ".calibration.json"


def calibration_path(checkpoint: str | Path) -> Path:
    """``runs/x/checkpoints/last.pt`` -> ``runs/x/checkpoints/last.calibration.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def log_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """Video-level logits (float64) of aggregated probabilities; zeros become the smallest finite log."""
    return probs.double().clamp_min(torch.finfo(torch.float64).tiny).log()


def apply_temperature(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log(probs) / T)`` over the last dimension, in the dtype of ``probs``."""
    return (log_probabilities(probs) / temperature).softmax(dim=-1).to(probs.dtype)


def fit_video_temperature(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Temperature, ECE and NLL before/after, and top-1 of ``N x C`` video probabilities.

    The numbers after scaling are measured on the split ``T`` was fitted on.
    """
    logits = log_probabilities(probs)
    report = temperature_scaling_report(logits, labels, logits, labels)
    report["top1"] = (probs.argmax(dim=1) == labels).double().mean().item()
    return report


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks (ties a calibration or an export to its checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_calibration(checkpoint: str | Path, record: dict) -> Path:
    """Write ``record`` (with ``temperature``) beside ``checkpoint``, tied to its current bytes."""
    checkpoint = Path(checkpoint)
    path = calibration_path(checkpoint)
    record = {**record, "checkpoint": checkpoint.name, "checkpoint_sha256": file_sha256(checkpoint)}
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def load_calibration(checkpoint: str | Path) -> dict | None:
    """The record stored beside ``checkpoint`` (with its ``path``), or None when there is none
    or it was fitted on other checkpoint bytes (then a warning says so)."""
    checkpoint = Path(checkpoint)
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a calibration file: {error}") from None
    temperature = record.get("temperature") if isinstance(record, dict) else None
    if not isinstance(temperature, (int, float)) or not temperature > 0 or "checkpoint_sha256" not in record:
        raise ValueError(f"{path}: needs a positive 'temperature' and 'checkpoint_sha256' "
                         "(rerun tools/calibrate.py)")
    if record["checkpoint_sha256"] != file_sha256(checkpoint):
        log.warning("ignoring %s: it was fitted on an earlier version of %s (rerun tools/calibrate.py)",
                    path, checkpoint)
        return None
    return {**record, "path": str(path)}


def format_calibration(record: dict) -> str:
    """What tools/calibrate.py prints: the fit and the numbers before and after it."""
    p = record["protocol"]
    return "\n".join([
        f"temperature scaling on {record['val_list']}: {record['num_videos']} videos, video level "
        f"({p['num_clips']} clips x {p['num_crops']} crops, {p['aggregation']})",
        f"  temperature  {record['temperature']:.4f}",
        f"  ECE          {record['ece_before']:.4f} -> {record['ece_after']:.4f} (on the fitting split)",
        f"  NLL          {record['nll_before']:.4f} -> {record['nll_after']:.4f}",
        f"  top-1        {record['top1']:.4f} (unchanged)",
    ])
