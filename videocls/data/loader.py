"""DataLoader assembly: rank-sharded samplers that can resume mid-epoch, and the collate.

Why not ``DistributedSampler``: evaluation must see every view exactly once (it pads by
repeating samples), and training must be able to restart at the batch where a preempted
run stopped. ``ShardedSampler`` does both and shuffles exactly like it (``seed + epoch``).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


class ShardedSampler(Sampler[int]):
    """This rank's share of ``range(length)``, reshuffled each epoch from ``seed + epoch``.

    ``pad=True`` (training) repeats a few items so every rank gets the same number (as
    ``DistributedSampler``); ``pad=False`` (evaluation) gives uneven, disjoint shards that
    cover every item once. ``set_epoch(epoch, start)`` skips the first ``start`` items of
    this rank's shard, to resume inside an epoch.
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, pad: bool = True) -> None:
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def shard(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
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
        per_rank = -(-self.length // self.num_replicas) if self.pad else len(range(self.rank, self.length, self.num_replicas))
        return max(per_rank - self.start, 0)


def collate_clips(samples: list[dict]) -> dict:
    """Default collate, except ``skipped`` (variable-length list of (path, reason)) is concatenated."""
    skipped = [entry for s in samples for entry in s["skipped"]]
    batch = default_collate([{k: v for k, v in s.items() if k != "skipped"} for s in samples])
    batch["skipped"] = skipped
    return batch


def _worker_init(_: int) -> None:
    # Each worker decodes one video at a time; intra-op threads would only fight each other.
    torch.set_num_threads(1)


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, train: bool, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, pin_memory: bool = False) -> DataLoader:
    sampler = ShardedSampler(len(dataset), num_replicas, rank, shuffle=train, seed=seed, pad=train)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=pin_memory,
        drop_last=train,
        worker_init_fn=_worker_init,
        persistent_workers=False,  # re-created each epoch, so workers see dataset.set_epoch()
        # Each new iterator draws a base seed; from its own generator it leaves the global RNG
        # (dropout, mixup) untouched, so a run resumed mid-epoch replays the same draws.
        generator=torch.Generator().manual_seed(seed),
    )
