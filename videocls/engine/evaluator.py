"""Multi-view evaluation with an exact distributed gather.

Each rank scores its disjoint shard of views (whole videos, or runs of whole clips of a long
video: :func:`~videocls.data.loader.build_loader`); all views are gathered keyed by
``(video_idx, clip_idx, spatial_idx)`` and aggregated per video, so the numbers are the same
with one process or many, however the views divide by the world size. At most
``max_views_per_batch`` views go through the model at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from videocls.data.dataset import report_skipped
from videocls.data.gpu_transforms import device_transform_of
from videocls.engine.distributed import DistEnv, all_gather_objects
from videocls.engine.runtime import autocast, to_device
from videocls.metrics.classification import Aggregation, aggregate_views, mean_class_accuracy, topk_accuracy
from videocls.metrics.multilabel import mean_average_precision


@dataclass
class EvalResult:
    clip: dict[str, float]
    video: dict[str, float]
    num_videos: int
    num_views: int
    video_ids: torch.Tensor  # N, dataset indices of the videos scored
    video_scores: torch.Tensor  # N x C, aggregated over views
    video_labels: torch.Tensor  # N
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict:
        return {"clip": self.clip, "video": self.video, "num_videos": self.num_videos,
                "num_views": self.num_views}


def _batch_size(video) -> int:
    return (video[0] if isinstance(video, (list, tuple)) else video).shape[0]


def _chunks(video, size: int | None):
    """Split a batch along dim 0 so at most ``size`` views go through the model at once."""
    n = _batch_size(video)
    size = size or n
    for start in range(0, n, size):
        if isinstance(video, (list, tuple)):
            yield [v[start : start + size] for v in video]
        else:
            yield video[start : start + size]


@torch.no_grad()
def score_views(
    model: nn.Module,
    loader: DataLoader,
    env: DistEnv,
    *,
    precision: str = "32",
    max_views_per_batch: int | None = None,
    channels_last: bool = False,
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """Logits of this rank's views, with their keys and labels (on CPU)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("logits", "label", "video_idx", "clip_idx", "spatial_idx", "valid")
    }
    skipped: list[tuple[str, str]] = []
    finish = device_transform_of(loader.dataset)  # data.gpu_transforms: uint8 views, normalised here
    for batch in loader:
        video = batch["video"] if finish is None else finish(batch["video"], env.device)
        video = to_device(video, env.device, channels_last)
        with autocast(env.device, precision):
            logits = torch.cat([model(chunk) for chunk in _chunks(video, max_views_per_batch)])
        parts["logits"].append(logits.float().cpu())
        for key in ("label", "video_idx", "clip_idx", "spatial_idx", "valid"):
            parts[key].append(torch.as_tensor(batch[key]))
        skipped.extend(batch["skipped"])
        report_skipped(batch["skipped"])  # once per video (workers only log at debug level)
    model.train(was_training)
    if not parts["logits"]:
        return {}, skipped
    return {k: torch.cat(v) for k, v in parts.items()}, skipped


def gather_views(views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All ranks' views, each view once, ordered by (video, clip, crop)."""
    shards = [s for s in all_gather_objects(views) if s]
    merged = {k: torch.cat([s[k] for s in shards]) for k in shards[0]}
    key = (merged["video_idx"] * 1_000_000 + merged["clip_idx"] * 1_000 + merged["spatial_idx"]).long()
    unique_keys, inverse = torch.unique(key, sorted=True, return_inverse=True)
    first = torch.full((unique_keys.numel(),), key.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(key.numel()), reduce="amin")
    return {k: v[first] for k, v in merged.items()}


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    env: DistEnv,
    *,
    aggregation: Aggregation = "mean_softmax",
    precision: str = "32",
    max_views_per_batch: int | None = None,
    channels_last: bool = False,
) -> EvalResult:
    """Clip-level (per view) and video-level (views aggregated) metrics over the whole split."""
    views, skipped = score_views(model, loader, env, precision=precision,
                                 max_views_per_batch=max_views_per_batch, channels_last=channels_last)
    views = gather_views(views)
    skipped = [entry for shard in all_gather_objects(skipped) for entry in shard]
    valid = views["valid"].bool()
    logits, labels = views["logits"][valid], views["label"][valid]
    if labels.ndim == 2:
        return _multilabel_result(logits, labels, views["video_idx"][valid], skipped)
    num_classes = logits.shape[1]
    clip = topk_accuracy(logits, labels)
    clip["loss"] = F.cross_entropy(logits, labels).item() if len(labels) else float("nan")
    video_ids, scores = aggregate_views(logits, views["video_idx"][valid], aggregation)
    video_labels = _labels_per_video(video_ids, views["video_idx"][valid], labels)
    video = topk_accuracy(scores, video_labels)
    video["mean_class_acc"] = mean_class_accuracy(scores.argmax(1), video_labels, num_classes)
    return EvalResult(clip, video, len(video_ids), int(valid.sum()), video_ids, scores, video_labels,
                      sorted(set(skipped)))


def _labels_per_video(
    video_ids: torch.Tensor, view_video_idx: torch.Tensor, view_labels: torch.Tensor
) -> torch.Tensor:
    rows = torch.searchsorted(video_ids, view_video_idx)
    out = torch.zeros((len(video_ids), *view_labels.shape[1:]), dtype=view_labels.dtype)
    out[rows] = view_labels
    return out


def _multilabel_result(logits, labels, view_video_idx, skipped) -> EvalResult:
    """Charades-style: sigmoid scores, mAP over classes with positives (PySlowFast's protocol)."""
    clip = {"mAP": mean_average_precision(logits.sigmoid(), labels),
            "loss": F.binary_cross_entropy_with_logits(logits, labels.float()).item()}
    video_ids, scores = aggregate_views(logits, view_video_idx, "mean_sigmoid")
    video_labels = _labels_per_video(video_ids, view_video_idx, labels)
    video = {"mAP": mean_average_precision(scores, video_labels)}
    return EvalResult(clip, video, len(video_ids), len(labels), video_ids, scores, video_labels,
                      sorted(set(skipped)))
