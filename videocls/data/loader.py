"""DataLoader assembly: rank-sharded samplers that can resume mid-epoch, and the collate.

Why not ``DistributedSampler``: evaluation must see every view exactly once (it pads by
repeating samples), and training must be able to restart at the batch where a preempted
run stopped. ``ShardedSampler`` does both and shuffles exactly like it (``seed + epoch``).
With per-item ``weights`` (``data.class_balanced``) it draws with replacement instead, under
the same guarantees: one global order per ``seed + epoch``, disjoint rank shards, resumable.

Repeated augmentation (``data.clips_per_video=k``): an item is one video holding k clips, and
:func:`collate_clips` flattens a batch of B items into ``B * k`` clips (finished clips, or
with ``data.gpu_transforms`` their uint8 payloads, which the device finishes row for row).
The samplers, the batch size, an epoch's batch count and the resume offset all count videos,
so nothing here changes with k but the clips per batch.

Evaluation batches keep each video's views together (``VideoBatchSampler``), so the dataset
decodes every video once for all its views instead of once per view.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


class ShardedSampler(Sampler[int]):
    """This rank's share of ``range(length)``, reshuffled each epoch from ``seed + epoch``.

    ``pad=True`` (training) repeats a few items so every rank gets the same number (as
    ``DistributedSampler``); ``pad=False`` (evaluation) gives uneven, disjoint shards that
    cover every item once. ``set_epoch(epoch, start)`` skips the first ``start`` items of
    this rank's shard, to resume inside an epoch.

    ``weights`` (one per item, any positive scale) replace the permutation by ``length`` draws
    with replacement, item ``i`` with probability ``weights[i] / sum(weights)``.
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, pad: bool = True, weights: Sequence[float] | None = None) -> None:
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and self.weights.shape != (length,):
            raise ValueError(f"{len(self.weights)} sampling weights for {length} items")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def shard(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        order = order.tolist()
        if self.pad and self.length % self.num_replicas:
            extra = self.num_replicas - self.length % self.num_replicas
            order += (order * (extra // len(order) + 1))[:extra]
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        per_rank = (-(-self.length // self.num_replicas) if self.pad
                    else len(range(self.rank, self.length, self.num_replicas)))
        return max(per_rank - self.start, 0)


class VideoBatchSampler(Sampler[list[int]]):
    """This rank's evaluation batches, each made of whole videos' views, so that the dataset
    (``VideoClipDataset.__getitems__``) decodes a video once for all of them.

    Views are numbered video-major, then clip, then crop (``VideoClipDataset.view_of``). Each
    video is one run of views, or, past ``max_views`` views, several runs of whole clips (at
    least one clip's crops each), so the views decoded and scored together stay bounded
    however many a video has. Runs are dealt to the ranks in turn (disjoint: every view once,
    on one rank), and a rank packs its consecutive runs into batches of at most ``batch_size``
    views; a run larger than that is a batch of its own.
    """

    def __init__(self, num_videos: int, num_clips: int, num_crops: int, *, batch_size: int,
                 max_views: int | None = None, num_replicas: int = 1, rank: int = 0) -> None:
        if max_views is not None and (isinstance(max_views, bool) or not isinstance(max_views, int)
                                      or max_views < 1):
            raise ValueError(f"test.max_views_per_batch must be an integer >= 1 or null, got {max_views!r}")
        per_video = num_clips * num_crops
        clips_per_run = num_clips if max_views is None else min(num_clips, max(1, max_views // num_crops))
        runs = [range(video * per_video + first * num_crops,
                      video * per_video + min(first + clips_per_run, num_clips) * num_crops)
                for video in range(num_videos) for first in range(0, num_clips, clips_per_run)]
        self.batches: list[list[int]] = []
        for run in ShardedSampler(len(runs), num_replicas, rank, shuffle=False, pad=False):
            if self.batches and len(self.batches[-1]) + len(runs[run]) <= batch_size:
                self.batches[-1].extend(runs[run])
            else:
                self.batches.append(list(runs[run]))

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def class_balanced_weights(labels: Sequence[int | Sequence[int]]) -> list[float]:
    """Per-video weights that make every class equally likely per draw: 1 / (its class's count).

    A multi-label video (a label tuple) is weighted by its rarest label, so rare classes are
    drawn as often as in the single-label case; classes that mostly co-occur with others are
    then only approximately balanced.
    """
    per_video = [(label,) if isinstance(label, int) else tuple(label) for label in labels]
    counts = Counter(c for video in per_video for c in video)
    return [1.0 / min(counts[c] for c in video) for video in per_video]


def _clips_of(sample: dict) -> list[dict]:
    """A repeated-augmentation item (``clips_per_video`` k; ``video`` stacked k x ..., a tensor
    or a list of SlowFast pathways, or with ``data.gpu_transforms`` the list of k payload dicts)
    as its k one-clip items, ``clip_idx`` 0..k-1, each with the video's label; any other item as
    is. Clip ``j`` is a view: the clips are copied once, by the collate's own stacking."""
    k = sample.get("clips_per_video")
    if k is None:
        return [sample]
    video = sample["video"]
    if isinstance(video, list | tuple) and isinstance(video[0], dict):  # data.gpu_transforms
        clips = list(video)
    elif isinstance(video, list | tuple):  # SlowFast pathways
        clips = [[pathway[j] for pathway in video] for j in range(k)]
    else:
        clips = [video[j] for j in range(k)]
    return [{**sample, "clip_idx": j, "video": clip} for j, clip in enumerate(clips)]


def collate_clips(samples: list[dict]) -> dict:
    """Default collate, except ``skipped`` (variable-length list of (path, reason)) is concatenated,
    and an item of ``k`` repeated clips (``clips_per_video``) becomes ``k`` consecutive rows."""
    skipped = [entry for s in samples for entry in s["skipped"]]
    samples = [clip for s in samples for clip in _clips_of(s)]
    batch = default_collate([{k: v for k, v in s.items() if k not in ("skipped", "clips_per_video")}
                             for s in samples])
    batch["skipped"] = skipped
    return batch


#: Preemption signals: the main process saves and shuts the loader down; its workers ignore them.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def worker_init(_: int) -> None:
    # Each worker decodes one video at a time; intra-op threads would only fight each other.
    torch.set_num_threads(1)
    # torchrun (os.killpg) and Slurm signal every process of the job. A worker that died of the
    # signal would make the loader raise "DataLoader worker ... is killed by signal" in the main
    # process before it could save; ignoring it, the worker lives until the main process has
    # saved and shuts the loader down (or the job's final SIGKILL).
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@atexit.register  # runs before multiprocessing's own exit hook (registered earlier, run later)
def _end_leftover_workers() -> None:
    """At exit multiprocessing SIGTERMs its daemonic children and waits for them: workers that
    ignore SIGTERM, left running by an iterator still alive (an uncaught error's traceback holds
    it), would make that wait endless. End them first."""
    workers = [c for c in multiprocessing.active_children() if c.daemon and _is_loader_worker(c.pid)]
    if not workers:
        return
    # torch's SIGCHLD handler would raise "worker killed" into this hook before it ended them all.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.join(timeout=5)


def _is_loader_worker(pid: int) -> bool:
    try:  # torch names its workers' main thread, which names the process
        return Path(f"/proc/{pid}/comm").read_text().strip() == "pt_data_worker"
    except OSError:  # no /proc: any daemonic child, which multiprocessing would end anyway
        return True


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, train: bool, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, pin_memory: bool = False,
                 class_balanced: bool = False, max_views_per_batch: int | None = None) -> DataLoader:
    """``class_balanced`` (training; ``dataset`` has ``records``, one item each) draws every class
    equally often per epoch, with replacement (:func:`class_balanced_weights`).

    Evaluation (``train=False``; e.g. a ``VideoClipDataset`` of test views) batches whole videos
    (:class:`VideoBatchSampler`): ``batch_size`` views, or one video's (or run's) views when it
    has more, and never more than ``max_views_per_batch`` views of one video together."""
    common = dict(
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=pin_memory,
        worker_init_fn=worker_init,
        persistent_workers=False,  # re-created each epoch, so workers see dataset.set_epoch()
        # Each new iterator draws a base seed; from its own generator it leaves the global RNG
        # (dropout, mixup) untouched, so a run resumed mid-epoch replays the same draws.
        generator=torch.Generator().manual_seed(seed),
    )
    if not train:
        # Any other map-style dataset: one view per item, so every item is its own "video".
        num_clips, num_crops = getattr(dataset, "num_clips", 1), getattr(dataset, "num_crops", 1)
        batches = VideoBatchSampler(len(dataset) // (num_clips * num_crops), num_clips, num_crops,
                                    batch_size=batch_size, max_views=max_views_per_batch,
                                    num_replicas=num_replicas, rank=rank)
        return DataLoader(dataset, batch_sampler=batches, **common)
    weights = class_balanced_weights([r.label for r in dataset.records]) if class_balanced else None
    sampler = ShardedSampler(len(dataset), num_replicas, rank, shuffle=True, seed=seed, pad=True,
                             weights=weights)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
