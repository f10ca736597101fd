"""The test protocol and everything it writes: results.json, predictions, per-class, plots.

Used by ``tools/test.py`` on any checkpoint (rebuilt by :mod:`videocls.engine.run_loading`,
which executes nothing a checkpoint names) and by the trainer after its last epoch, so the
numbers of a training run and of a later re-test come from the same code. ``tools/calibrate.py``
fits its temperature on the same protocol's video-level predictions.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from videocls.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from videocls.data.datamodule import VideoData, model_input
from videocls.data.dataset import VideoClipDataset
from videocls.data.loader import build_loader
from videocls.engine.calibrate import (
    apply_temperature,
    fit_video_temperature,
    load_calibration,
    save_calibration,
)
from videocls.engine.config_checks import check_config
from videocls.engine.distributed import DistEnv, broadcast_object, init_distributed, shutdown
from videocls.engine.evaluator import EvalResult, evaluate
from videocls.engine.logging import RunLogger
from videocls.engine.report import format_results, write_results
from videocls.engine.run_loading import LoadedRun, load_run_or_weights
from videocls.engine.runtime import Runtime
from videocls.engine.thresholds import (
    holdout_check,
    load_thresholds,
    read_costs,
    save_thresholds,
    thresholded_summary,
    tune,
)
from videocls.metrics.calibration import expected_calibration_error
from videocls.metrics.classification import LOGIT_AGGREGATIONS, canonical_aggregation
from videocls.metrics.per_class import (
    confusion_matrix,
    metrics_from_confusion,
    write_confusion_csv,
    write_per_class_csv,
)
from videocls.metrics.plots import plot_confusion_matrix, plot_reliability_diagram
from videocls.metrics.robustness import robustness_summary, robustness_table

MAX_CLASSES_TO_PLOT = 100


def video_probabilities(result: EvalResult, aggregation: str) -> torch.Tensor:
    """Aggregated scores as probabilities (summed logits are turned into a softmax)."""
    logits = canonical_aggregation(aggregation) in LOGIT_AGGREGATIONS
    return result.video_scores.softmax(dim=1) if logits else result.video_scores


def write_predictions(path: Path, result: EvalResult, probs: torch.Tensor, paths: list[str],
                      class_names: list[str], topk: int = 5) -> None:
    """One row per video: path, label, then the top-k classes with their probabilities."""
    k = min(topk, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "label", "label_name",
                         *[f"{name}{i + 1}" for i in range(k) for name in ("pred", "prob")]])
        for row, video_id in enumerate(result.video_ids.tolist()):
            label = int(result.video_labels[row])
            cells = [paths[video_id], label, class_names[label]]
            for i in range(k):
                cells += [class_names[int(top_i[row, i])], f"{float(top_p[row, i]):.6f}"]
            writer.writerow(cells)


def write_reports(result: EvalResult, aggregation: str, out_dir: Path, paths: list[str],
                  class_names: list[str], temperature: float | None = None) -> dict:
    """Per-video predictions, per-class CSV, confusion CSV/PNG and the reliability diagram,
    all from the temperature-scaled probabilities when ``temperature`` is given."""
    probs = video_probabilities(result, aggregation)
    if temperature is not None:
        probs = apply_temperature(probs, temperature)
    write_predictions(out_dir / "predictions.csv", result, probs, paths, class_names)
    matrix = confusion_matrix(probs, result.video_labels, len(class_names))
    write_per_class_csv(metrics_from_confusion(matrix), out_dir / "per_class.csv", class_names)
    write_confusion_csv(matrix, out_dir / "confusion.csv", class_names)
    if len(class_names) <= MAX_CLASSES_TO_PLOT:
        plot_confusion_matrix(matrix, out_dir / "confusion.png", class_names)
    plot_reliability_diagram(probs, result.video_labels, out_dir / "reliability.png")
    return {"ece": expected_calibration_error(probs, result.video_labels)}


def robustness(model: nn.Module, data: VideoData, tc: DictConfig, *, runtime: Runtime,
               env: DistEnv) -> dict[tuple[str, int], float]:
    """Video top-1 under every corruption and severity (``test.robustness_clips`` clips, 1 crop)."""
    accuracy = {}
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            frame_filter = functools.partial(_corrupt_clip, name=name, severity=severity)
            dataset = data.dataset("val", train=False, **model_input(model), num_clips=tc.robustness_clips,
                                   num_crops=1, seed=runtime.seed, frame_filter=frame_filter,
                                   on_device=True)
            result = _evaluate(model, dataset, data, tc, runtime=runtime, env=env)
            accuracy[(name, severity)] = result.video["top1"]
    return accuracy


def _corrupt_clip(frames: torch.Tensor, rng: np.random.Generator, name: str, severity: int) -> torch.Tensor:
    return corrupt(frames, name, severity, rng)


def _evaluate(model: nn.Module, dataset: VideoClipDataset, data: VideoData, tc: DictConfig, *,
              runtime: Runtime, env: DistEnv) -> EvalResult:
    """``dataset`` scored on all ranks: each rank decodes its share of the videos, each once for
    all its views (at most ``test.max_views_per_batch`` views decoded and scored together)."""
    loader = build_loader(dataset, tc.batch_size, data.num_workers, train=False, num_replicas=env.world_size,
                          rank=env.rank, pin_memory=env.device.type == "cuda",
                          max_views_per_batch=tc.max_views_per_batch)
    return evaluate(model, loader, env, aggregation=tc.aggregation, precision=runtime.precision,
                    max_views_per_batch=tc.max_views_per_batch, channels_last=runtime.channels_last)


def evaluate_protocol(model: nn.Module, data: VideoData, tc: DictConfig, *, runtime: Runtime,
                      env: DistEnv) -> tuple[EvalResult, VideoClipDataset]:
    """The validation split scored with the ``test`` protocol's views and aggregation (all ranks);
    with ``data.gpu_transforms`` the views are normalised on the model's device (the same tensors)."""
    dataset = data.dataset("val", train=False, **model_input(model), num_clips=tc.num_clips,
                           num_crops=tc.num_crops, seed=runtime.seed, on_device=True)
    return _evaluate(model, dataset, data, tc, runtime=runtime, env=env), dataset


def run_test(model: nn.Module, data: VideoData, test_cfg: DictConfig, *, runtime: Runtime, env: DistEnv,
             run_dir: str | Path, logger: RunLogger | None = None, step: int | None = None,
             extra: dict | None = None, title: str = "results", calibration: dict | None = None,
             thresholds: dict | None = None) -> dict | None:
    """Evaluate with the ``test`` protocol, write the outputs to ``run_dir`` on rank 0, return the
    summary there. ``runtime`` says where and how the model runs (device, precision, memory
    format) and seeds the views; ``logger`` gets the numbers at ``step``; ``extra`` is merged into
    results.json.

    ``calibration`` (a record of ``load_calibration``) scales the video probabilities behind
    predictions.csv, the per-class and confusion files and the ECE; accuracy is unchanged.
    ``thresholds`` (a record of ``load_thresholds``) adds the thresholded decisions' numbers
    (coverage/accuracy/cost, or per-class precision/recall/F1) under ``"thresholds"``.
    """
    tc, out_dir = test_cfg, Path(run_dir)
    result, dataset = evaluate_protocol(model, data, tc, runtime=runtime, env=env)
    robust = robustness(model, data, tc, runtime=runtime, env=env) if tc.robustness else None
    if not env.is_main:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = data.class_names()
    summary = result.summary()
    if result.video_labels.ndim == 1:  # single-label: predictions, per-class, confusion, calibration
        temperature = calibration["temperature"] if calibration is not None else None
        summary["calibration"] = write_reports(result, tc.aggregation, out_dir,
                                               [r.path for r in dataset.records], class_names, temperature)
        if calibration is not None:
            summary["calibration"].update(temperature=temperature, temperature_file=calibration["path"])
            print(f"applied temperature {temperature:.4f} from {calibration['path']}")
    if thresholds is not None:  # tuned on the plain protocol probabilities (their own temperature inside)
        raw = (result.video_scores if result.video_labels.ndim == 2
               else video_probabilities(result, tc.aggregation))
        summary["thresholds"] = thresholded_summary(thresholds, raw, result.video_labels, class_names)
        print(f"applied {thresholds['kind']} thresholds from {thresholds['path']}")
    summary["protocol"] = {"num_clips": tc.num_clips, "num_crops": tc.num_crops,
                           "aggregation": tc.aggregation, "split": "val",
                           "test_short_side": data.test_short_side, "test_crop": data.test_crop}
    summary["skipped_videos"] = len({path for path, _ in result.skipped})
    if robust is not None:
        summary["robustness"] = robustness_summary(robust)
    summary.update(extra or {})
    path = write_results(summary, out_dir)
    if logger is not None:
        flat = {f"test/{level}_{k}": v for level in ("clip", "video") for k, v in summary[level].items()}
        if "calibration" in summary:
            flat["test/ece"] = summary["calibration"]["ece"]
        logger.log(flat, step=step)
        logger.summary(flat)
        logger.images({name: out_dir / name for name in ("confusion.png", "reliability.png")}, step=step)
    print(format_results(summary, title=title))
    if robust is not None:
        print(robustness_table(robust))
    summary["results_path"] = str(path)
    return summary


def evaluate_checkpoint(run: LoadedRun, out_dir: str | Path) -> dict | None:
    """The test protocol (``run.config.test``) on a loaded run (:mod:`videocls.engine.run_loading`),
    with the run's precision and seed; ``results.json`` names the checkpoint and its weights."""
    cfg = run.config
    check_config(cfg, training=False)
    env = init_distributed(cfg.trainer.device)
    try:
        out_dir = broadcast_object(str(out_dir))
        calibration = load_calibration(run.checkpoint) if env.is_main else None
        thresholds = load_thresholds(run.checkpoint) if env.is_main else None
        return run_test(run.model.to(env.device), run.data, cfg.test,
                        runtime=Runtime.from_config(cfg.trainer, env.device), env=env, run_dir=out_dir,
                        extra={"checkpoint": str(run.checkpoint), "weights": run.weights},
                        title=f"{cfg.model.name} on {Path(run.data.val_list).name}", calibration=calibration,
                        thresholds=thresholds)
    finally:
        shutdown()


def calibrate_checkpoint(run: LoadedRun) -> dict | None:
    """Fit temperature scaling of a loaded run's checkpoint on the validation split's video-level
    predictions (the ``test`` protocol's views and aggregation) and store it beside the
    checkpoint; rank 0 returns the stored record (with its ``path``)."""
    cfg, data = run.config, run.data
    check_config(cfg, training=False)
    env = init_distributed(cfg.trainer.device)
    try:
        runtime = Runtime.from_config(cfg.trainer, env.device)
        result, _ = evaluate_protocol(run.model.to(env.device), data, cfg.test, runtime=runtime, env=env)
        if not env.is_main:
            return None
        if result.video_labels.ndim != 1:
            raise ValueError(f"{data.val_list}: multi-label data; temperature scaling here is for "
                             "single-label softmax outputs")
        record = fit_video_temperature(video_probabilities(result, cfg.test.aggregation), result.video_labels)
        record.update(level="video", split="val", val_list=str(data.val_list), num_videos=result.num_videos,
                      skipped_videos=len({path for path, _ in result.skipped}), weights=run.weights,
                      protocol={"num_clips": cfg.test.num_clips, "num_crops": cfg.test.num_crops,
                                "aggregation": cfg.test.aggregation})
        return {**record, "path": str(save_calibration(run.checkpoint, record))}
    finally:
        shutdown()


def tune_thresholds_checkpoint(
    target: str | Path, overrides: list[str] = (), *, holdout: float | None = None, seed: int = 0, **tune_args
) -> dict | None:
    """Score the validation split of ``target`` with the test protocol, tune, store; rank 0 returns
    the stored record (with ``path`` and, with ``holdout``, a ``holdout_check``)."""
    run = load_run_or_weights(target, list(overrides))
    cfg, model, checkpoint, data = run.config, run.model, run.checkpoint, run.data
    env = init_distributed(cfg.trainer.device)
    try:
        result, _ = evaluate_protocol(model.to(env.device), data, cfg.test,
                                      runtime=Runtime.from_config(cfg.trainer, env.device), env=env)
        if not env.is_main:
            return None
        labels = result.video_labels
        multilabel = labels.ndim == 2
        probs = result.video_scores if multilabel else video_probabilities(result, cfg.test.aggregation)
        calibration = None if multilabel else load_calibration(checkpoint)
        if calibration is not None:
            probs = apply_temperature(probs, calibration["temperature"])
        class_names = data.class_names()
        kind = tune_args.pop("kind", None) or ("multilabel" if multilabel else "abstain")
        for key in ("cost_fp", "cost_fn"):
            if isinstance(tune_args.get(key), str):
                tune_args[key] = read_costs(
                    tune_args[key], probs.shape[1], class_names, "--" + key.replace("_", "-")
                )
        tune_args.update(kind=kind, class_names=class_names)
        record = tune(probs, labels, **tune_args)
        record.update(
            val_list=str(data.val_list),
            num_videos=result.num_videos,
            temperature=calibration["temperature"] if calibration else None,
            protocol={
                "num_clips": cfg.test.num_clips,
                "num_crops": cfg.test.num_crops,
                "aggregation": cfg.test.aggregation,
            },
        )
        if holdout:
            record["holdout_check"] = holdout_check(probs, labels, holdout, seed, **tune_args)
        return {**record, "path": str(save_thresholds(checkpoint, record))}
    finally:
        shutdown()
