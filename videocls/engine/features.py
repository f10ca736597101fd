"""Pooled backbone features, one vector per video, for linear probes and label-error finding.

A video's feature is the input of the model's classifier (``model.classifier_prefix``), taken
with a forward hook, pooled over any remaining positions (I3D's sliding time windows), and
averaged over the test protocol's views (``test.num_clips`` x ``test.num_crops``) with the same
dataset, sampler and transforms as ``tools/test.py``. Dropout is off (eval mode), so a linear
classifier on these features gives the model's own logits up to the view aggregation.

Work is resumable and distributed like the test protocol: each rank takes every
``world_size``-th video still to do, writes ``<out>.parts/rank<r>-<first>.npz`` every
``chunk_videos`` videos, and rank 0 merges all parts into ``<out>`` (``.npz``: ``features``
N x D float32, ``videos`` paths, ``labels``, ``classes``) and ``<out>.json`` (what made it).
A rerun skips the videos whose part is already written, whatever the world size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from videocls.data.datamodule import model_input
from videocls.data.loader import collate_clips
from videocls.engine.calibrate import file_sha256
from videocls.engine.distributed import DistEnv, barrier, broadcast_object, init_distributed, shutdown
from videocls.engine.run_loading import load_run_or_weights
from videocls.engine.runtime import autocast, to_device

log = logging.getLogger(__name__)


@dataclass
class Features:
    """What :func:`load_features` returns: row ``i`` is video ``videos[i]``."""

    features: np.ndarray  # N x D float32
    videos: np.ndarray  # N paths (str)
    labels: np.ndarray  # N int64, or N x C 0/1 for multi-label lists
    classes: list[str]
    meta: dict

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


def pooled_classifier_input(model: nn.Module):
    """A hook handle and a list that receives, per forward, the classifier's input as B x D."""
    prefix = getattr(model, "classifier_prefix", None)
    modules = dict(model.named_modules())
    if prefix not in modules:
        raise ValueError(
            f"{type(model).__name__} has no classifier module {prefix!r} (model.classifier_prefix) "
            "to take features from"
        )
    captured: list[torch.Tensor] = []

    def hook(_module, inputs):
        x = inputs[0]
        # B x ... x D: average the positions between batch and channels (I3D's time windows);
        # the classifier is linear, so this mean's logits are the mean of its logits.
        captured.append((x.flatten(1, -2).mean(dim=1) if x.ndim > 2 else x).float().cpu())

    return modules[prefix].register_forward_pre_hook(hook), captured


@torch.no_grad()
def video_features(
    model: nn.Module, loader: DataLoader, env: DistEnv, precision: str = "32"
) -> dict[int, np.ndarray | None]:
    """Feature per video index of the views ``loader`` yields, averaged over its readable views
    (None for a video none of whose views could be read)."""
    handle, captured = pooled_classifier_input(model)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    try:
        for batch in loader:
            captured.clear()
            with autocast(env.device, precision):
                model(to_device(batch["video"], env.device))
            feats = torch.cat(captured)
            for row, (video_idx, valid) in enumerate(
                zip(batch["video_idx"].tolist(), batch["valid"].tolist())
            ):
                counts.setdefault(video_idx, 0)
                if valid:
                    sums[video_idx] = sums.get(video_idx, 0) + feats[row].double()
                    counts[video_idx] += 1
    finally:
        handle.remove()
    return {v: (sums[v] / n).float().numpy() if n else None for v, n in counts.items()}


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _done_videos(parts: Path) -> set[int]:
    done: set[int] = set()
    for part in sorted(parts.glob("rank*.npz")):
        with np.load(part, allow_pickle=False) as z:
            done.update(z["video_index"].tolist())
    return done


def _check_job(parts: Path, job: dict) -> None:
    """Parts of another job (other list, model or views) must not be mixed into this one."""
    path = parts / "job.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != job:
            changed = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
            raise ValueError(
                f"{parts}: partial features of another extraction ({', '.join(changed)} differ); "
                "delete that folder or choose another --out"
            )
    else:
        path.write_text(json.dumps(job, indent=2, sort_keys=True) + "\n")


def extract_features(
    target: str | Path,
    out: str | Path,
    overrides: list[str] = (),
    *,
    split: str = "train",
    chunk_videos: int = 64,
) -> Path | None:
    """Write the pooled features of every video of ``split`` to ``out`` (rank 0 returns its path)."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: the features file must end in .npz")
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    run = load_run_or_weights(target, overrides, strict_head=False)
    cfg, model, checkpoint, data = run.config, run.model, run.checkpoint, run.data
    env = init_distributed(cfg.trainer.device)
    try:
        model.to(env.device)
        tc = cfg.test
        dataset = data.dataset(split, train=False, **model_input(model), num_clips=tc.num_clips,
                               num_crops=tc.num_crops, seed=cfg.trainer.seed)
        videos = [r.path for r in dataset.records]
        job = {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": file_sha256(Path(checkpoint)),
            "split": split,
            "list": str(data.train_list if split == "train" else data.val_list),
            "videos_sha256": hashlib.sha256("\n".join(videos).encode()).hexdigest(),
            "num_clips": tc.num_clips,
            "num_crops": tc.num_crops,
            "model": cfg.model.name,
            "test_short_side": data.test_short_side,
            "test_crop": data.test_crop,
            "num_frames": data.num_frames,
            "sampling": [data.sampling_mode, data.sampling_rate, data.target_fps],
        }
        parts = _parts_dir(out)
        refusal = None
        if env.is_main:
            parts.mkdir(parents=True, exist_ok=True)
            try:
                _check_job(parts, job)
            except ValueError as error:
                refusal = str(error)
        refusal = broadcast_object(refusal)  # every rank stops, none waits at a barrier
        if refusal:
            raise ValueError(refusal)
        done = _done_videos(parts)
        todo = [v for v in range(len(videos)) if v not in done][env.rank :: env.world_size]
        if env.is_main and done:
            print(f"resuming: {len(done)} of {len(videos)} videos already in {parts}")
        per_video = dataset.num_clips * dataset.num_crops
        for start in range(0, len(todo), chunk_videos):
            chunk = todo[start : start + chunk_videos]
            views = Subset(dataset, [v * per_video + i for v in chunk for i in range(per_video)])
            loader = DataLoader(
                views,
                batch_size=tc.batch_size,
                num_workers=data.num_workers,
                collate_fn=collate_clips,
                shuffle=False,
            )
            feats = video_features(model, loader, env, str(cfg.trainer.precision))
            _write_part(parts / f"rank{env.rank}-{chunk[0]:06d}.npz", chunk, feats)
        barrier()
        if not env.is_main:
            return None
        return _merge(parts, out, videos, dataset, data.class_names(), job)
    finally:
        shutdown()


def _write_part(path: Path, chunk: list[int], feats: dict[int, np.ndarray | None]) -> None:
    readable = [v for v in chunk if feats.get(v) is not None]
    dim = next((feats[v].shape[0] for v in readable), 0)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        video_index=np.asarray(chunk, dtype=np.int64),
        readable=np.asarray([feats.get(v) is not None for v in chunk]),
        features=np.stack([feats[v] for v in readable]) if readable else np.zeros((0, dim), np.float32),
    )
    tmp.replace(path)  # a part is there whole or not at all: a killed run redoes only its chunk


def _label_row(label, num_classes: int) -> np.ndarray:
    if isinstance(label, int):
        return np.asarray(label)
    row = np.zeros(num_classes, dtype=np.int64)  # multi-label list: multi-hot, as the dataset gives it
    row[list(label)] = 1
    return row


def _merge(parts: Path, out: Path, videos: list[str], dataset, class_names: list[str], job: dict) -> Path:
    rows: dict[int, np.ndarray] = {}
    unreadable: list[int] = []
    for part in sorted(parts.glob("rank*.npz")):
        with np.load(part, allow_pickle=False) as z:
            readable = z["video_index"][z["readable"]].tolist()
            rows.update(zip(readable, z["features"]))
            unreadable += z["video_index"][~z["readable"]].tolist()
    order = sorted(rows)
    labels = [_label_row(dataset.records[v].label, len(class_names)) for v in order]
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(
        tmp,
        features=np.stack([rows[v] for v in order]).astype(np.float32),
        videos=np.asarray([videos[v] for v in order]),
        labels=np.stack(labels).astype(np.int64),
        classes=np.asarray(class_names),
    )
    tmp.replace(out)
    meta = {
        **job,
        "num_videos": len(order),
        "dim": int(rows[order[0]].shape[0]) if order else 0,
        "unreadable": [videos[v] for v in sorted(set(unreadable))],
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(
        f"features: {len(order)} videos x {meta['dim']} -> {out}"
        + (
            f" ({len(meta['unreadable'])} unreadable, listed in {out.with_suffix('.json')})"
            if unreadable
            else ""
        )
    )
    return out


def load_features(path: str | Path) -> Features:
    """Read a file written by :func:`extract_features` (no pickles: strings are plain arrays)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path} (write it with tools/extract_features.py)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("features", "videos", "labels", "classes")}
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{path}: not a features file of tools/extract_features.py ({error})") from None
    lengths = {len(arrays[k]) for k in ("features", "labels", "videos")}
    if arrays["features"].ndim != 2 or len(lengths) != 1:
        raise ValueError(f"{path}: features, labels and videos disagree in length")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return Features(
        arrays["features"],
        arrays["videos"].astype(str),
        arrays["labels"],
        [str(c) for c in arrays["classes"]],
        meta,
    )
