"""Multigrid training's data side (Wu et al., "A Multigrid Method for Efficiently Training Video
Models", CVPR 2020): batches whose clip shape changes from one batch to the next.

- :class:`ShortCycleBatchSampler`: PySlowFast's ``ShortCycleBatchSampler``. Batches cycle
  through the short-cycle shapes (small crop, medium crop, the long cycle's crop), each with its
  own batch size, and every index is tagged with its shape: ``(index, shape)``.
- :class:`MultigridClipDataset`: the training set of one long-cycle shape. It answers
  ``(index, shape)`` with the dataset built for that crop and, when a long cycle shortens clips
  in ``clip`` sampling mode, with a sampling rate drawn per clip in ``[rate, long_rate]`` (as
  PySlowFast's ``get_random_sampling_rate``: some clips keep the short span, some cover the
  original one).

The schedule that says which shapes and batch sizes an epoch uses is the engine's
(``videocls.engine.multigrid``); this module only serves them.

Differences from PySlowFast, each for exact resumption: the batch count ``len()`` is the exact
number of full batches of the cycle (PySlowFast divides by the mean batch size, which can be off
by one, so the learning rate's epoch-of-step would drift); ``set_epoch(epoch, start_batch)``
skips whole batches to resume inside an epoch; the random sampling rate comes from
``(seed, epoch, index)``, not the worker's global RNG, so a resumed run draws the same rates.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from videocls.data.loader import ShardedSampler, class_balanced_weights, collate_clips, worker_init

#: Separates the sampling-rate draws from the dataset's own ``(seed, epoch, index, attempt)`` streams.
_RATE_STREAM = 0x6D67


def short_cycle_batches(num_items: int, batch_sizes: Sequence[int]) -> int:
    """How many full batches ``num_items`` indices make when batch ``i`` holds
    ``batch_sizes[i % len(batch_sizes)]`` of them (the incomplete last one is dropped)."""
    count, used = 0, 0
    while used + batch_sizes[count % len(batch_sizes)] <= num_items:
        used += batch_sizes[count % len(batch_sizes)]
        count += 1
    return count


class ShortCycleBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, shape)``: batch ``i`` holds ``batch_sizes[i % n]`` indices of
    ``sampler``, all tagged with shape ``i % n`` (PySlowFast: ``counter % 3``).

    A single batch size is the plain long-cycle batch (every index tagged 0). The incomplete
    last batch is dropped (training). ``set_epoch(epoch, start_batch)`` sets the sampler's
    epoch and skips the first ``start_batch`` batches of it (resuming inside an epoch).
    """

    def __init__(self, sampler: ShardedSampler, batch_sizes: Sequence[int]) -> None:
        if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                  for b in batch_sizes):
            raise ValueError(f"short-cycle batch sizes must be positive integers, got {list(batch_sizes)}")
        self.sampler, self.batch_sizes = sampler, list(batch_sizes)
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start=0)  # whole batches are skipped here, not items
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = iter(self.sampler)
        for count in range(len(self) + self.start_batch):
            shape = count % len(self.batch_sizes)
            batch = [(next(order), shape) for _ in range(self.batch_sizes[shape])]
            if count >= self.start_batch:
                yield batch

    def __len__(self) -> int:
        """The full batches left in this epoch (after ``start_batch``); the sampler's own
        ``start`` is always 0 here (``set_epoch``)."""
        return max(short_cycle_batches(len(self.sampler), self.batch_sizes) - self.start_batch, 0)


class MultigridClipDataset(Dataset):
    """One long-cycle shape's training set: ``datasets[shape]`` serves the clips of short-cycle
    shape ``shape`` (same records, its own crop); a plain index means the last (the long
    cycle's own) shape.

    ``sampling_rates`` (``(low, high)``, clip sampling mode only): each clip's rate is drawn
    uniformly from ``low..high`` inclusive, from ``(seed, epoch, index)``.
    """

    def __init__(self, datasets: Sequence[Dataset], *, sampling_rates: tuple[int, int] | None = None,
                 seed: int = 0) -> None:
        if not datasets:
            raise ValueError("MultigridClipDataset needs one dataset per short-cycle shape")
        if sampling_rates is not None and not 1 <= sampling_rates[0] <= sampling_rates[1]:
            raise ValueError(f"sampling_rates must be (low, high), 1 <= low <= high; got {sampling_rates}")
        self.datasets, self.sampling_rates, self.seed = list(datasets), sampling_rates, seed
        self.epoch = 0

    @property
    def records(self):
        return self.datasets[0].records

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.datasets[0])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, shape = key if isinstance(key, tuple) else (key, len(self.datasets) - 1)
        dataset = self.datasets[shape]
        if self.sampling_rates is not None and self.sampling_rates[0] < self.sampling_rates[1]:
            low, high = self.sampling_rates
            rng = np.random.default_rng([self.seed, self.epoch, index, _RATE_STREAM])
            rate = int(rng.integers(low, high + 1))
            # A shallow copy with this clip's sampler: the shared dataset is never mutated, so
            # nothing leaks between items (or workers).
            dataset = copy.copy(dataset)
            dataset.sampler = dataclasses.replace(dataset.sampler, sampling_rate=rate)
        return dataset[index]


def build_short_cycle_loader(dataset: MultigridClipDataset, batch_sizes: Sequence[int], *, num_workers: int,
                             seed: int = 0, num_replicas: int = 1, rank: int = 0, pin_memory: bool = False,
                             class_balanced: bool = False) -> DataLoader:
    """The training loader of one long-cycle shape: ``build_loader``'s sharded, resumable order
    (same seed, same shuffle) cut into short-cycle batches (:class:`ShortCycleBatchSampler`)."""
    weights = class_balanced_weights([r.label for r in dataset.records]) if class_balanced else None
    sampler = ShardedSampler(len(dataset), num_replicas, rank, shuffle=True, seed=seed, pad=True,
                             weights=weights)
    return DataLoader(dataset, batch_sampler=ShortCycleBatchSampler(sampler, batch_sizes),
                      num_workers=num_workers, collate_fn=collate_clips, pin_memory=pin_memory,
                      worker_init_fn=worker_init, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed))
