"""Map-style video clip dataset: decode, sample, transform; bad files are skipped and counted.

Training draws one random clip per item. Evaluation enumerates every view of every video
(``num_clips`` temporal x ``num_crops`` spatial), so a ``DistributedSampler``-free shard
of indices covers each view exactly once.

Randomness comes from a generator seeded by ``(seed, epoch, index, attempt)``: the same item
of the same epoch gives the same clip whatever the worker count, which makes runs
reproducible and resume after preemption exact.

A skipped file is returned in the item's ``skipped`` list. It is warned about once per
process: by the dataset itself when it runs in the main process, else by whoever collects
the batches calling :func:`report_skipped` (DataLoader workers are re-created every epoch,
so a worker cannot remember what it already said; it logs at debug level only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from videocls.data.annotations import VideoRecord, multi_hot
from videocls.data.io import probe_cache
from videocls.data.io.reader import open_video
from videocls.data.sampling import ClipSampler, pack_pathways

log = logging.getLogger(__name__)

# What a bad file can raise while being opened or decoded. Anything else is a bug and surfaces.
BAD_VIDEO_ERRORS = (RuntimeError, OSError, IndexError, ValueError, EOFError)
TEST_CROPS = (1, 3)  # spatial views per clip: the centre, or left/centre/right (top/centre/bottom)
# Paths this process has warned about: one warning per unreadable file and run.
_warned: set[str] = set()


def report_skipped(skipped: Iterable[tuple[str, str]]) -> list[str]:
    """Warn once per process about each ``(path, reason)`` not warned about yet (a batch's
    ``skipped`` list, collected in the main process); returns the newly reported paths."""
    new = []
    for path, reason in skipped:
        if path not in _warned:
            _warned.add(path)
            new.append(path)
            log.warning("skipping unreadable video %s (%s)", path, reason)
    return new


class VideoClipDataset(Dataset):
    def __init__(
        self,
        records: Sequence[VideoRecord],
        sampler: ClipSampler,
        transform: Callable[..., torch.Tensor],
        train: bool,
        num_clips: int = 1,
        num_crops: int = 1,
        backend: str = "auto",
        num_threads: int = 1,
        slowfast_alpha: int | None = None,
        max_retries: int = 10,
        seed: int = 0,
        frame_filter: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if not records:
            raise ValueError("dataset has no videos")
        if not train and num_crops not in TEST_CROPS:
            # Any other count would repeat the centre crop while the results claim N views.
            raise ValueError(
                f"test.num_crops (trainer.val_num_crops for validation) must be 1 (centre) or 3 "
                f"(left/centre/right), got {num_crops!r}"
            )
        if not train and (not isinstance(num_clips, int) or num_clips < 1):
            raise ValueError(
                f"test.num_clips (trainer.val_num_clips for validation) must be an integer >= 1, "
                f"got {num_clips!r}"
            )
        if max_retries < 0:
            raise ValueError(f"data.max_retries must be >= 0, got {max_retries}")
        self.records = list(records)
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.num_clips = 1 if train else num_clips
        self.num_crops = 1 if train else num_crops
        self.backend = backend
        self.num_threads = num_threads
        self.slowfast_alpha = slowfast_alpha
        self.max_retries = max_retries
        self.seed = seed
        self.frame_filter = frame_filter  # e.g. a robustness corruption of the decoded frames
        self.num_classes = num_classes  # set for multi-label data: labels become multi-hot vectors
        self.epoch = 0
        # Here, in the main process: the workers forked from it inherit the probe verdicts.
        probe_cache.preload()

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch; workers are re-created, so they see it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records) * self.num_clips * self.num_crops

    def view_of(self, index: int) -> tuple[int, int, int]:
        """Item index -> (video_idx, clip_idx, spatial_idx)."""
        video_idx, view = divmod(index, self.num_clips * self.num_crops)
        clip_idx, spatial_idx = divmod(view, self.num_crops)
        return video_idx, clip_idx, spatial_idx

    def _load_clip(self, record: VideoRecord, clip_idx: int, spatial_idx: int, rng: np.random.Generator):
        reader = open_video(record.path, backend=self.backend, num_threads=self.num_threads)
        try:
            indices = self.sampler(len(reader), reader.fps, self.train, clip_idx, self.num_clips, rng)
            frames = reader.get_frames(indices.tolist())
        finally:
            reader.close()
        if self.frame_filter is not None:
            frames = self.frame_filter(frames, rng)
        # Spatial crop 1 (centre) when testing with a single crop, as PySlowFast does.
        crop = spatial_idx if self.num_crops == 3 else 1
        clip = self.transform(frames, rng=rng, spatial_idx=crop)
        return pack_pathways(clip, self.slowfast_alpha) if self.slowfast_alpha else clip

    def _skip(self, record: VideoRecord, error: Exception, skipped: list[tuple[str, str]]) -> None:
        reason = f"{type(error).__name__}: {error}"
        skipped.append((record.path, reason))
        if get_worker_info() is None:
            report_skipped([(record.path, reason)])
        else:  # the main process warns when the batch arrives (report_skipped)
            log.debug("skipping unreadable video %s (%s)", record.path, reason)

    def _label(self, record: VideoRecord) -> torch.Tensor:
        if self.num_classes is not None:
            return multi_hot(record.label, self.num_classes)
        return torch.as_tensor(record.label)

    def __getitem__(self, index: int) -> dict:
        video_idx, clip_idx, spatial_idx = self.view_of(index)
        skipped: list[tuple[str, str]] = []
        for attempt in range(self.max_retries + 1):
            record = self.records[video_idx]
            rng = np.random.default_rng([self.seed, self.epoch, index, attempt])
            try:
                clip = self._load_clip(record, clip_idx, spatial_idx, rng)
            except BAD_VIDEO_ERRORS as error:
                self._skip(record, error, skipped)
                if not self.train:
                    # A test view cannot be replaced by another video's: mark it invalid so the
                    # evaluator drops it and reports the video, instead of miscounting.
                    return self._invalid_item(record, video_idx, clip_idx, spatial_idx, skipped)
                video_idx = int(rng.integers(len(self.records)))
                continue
            return self._item(clip, record, video_idx, clip_idx, spatial_idx, True, skipped)
        raise RuntimeError(
            f"{self.max_retries + 1} videos in a row could not be read; last: {skipped[-1][0]} "
            f"({skipped[-1][1]}). Check the dataset with tools/validate_dataset.py."
        )

    def _invalid_item(
        self, record: VideoRecord, video_idx: int, clip_idx: int, spatial_idx: int, skipped: list
    ) -> dict:
        crop = self.transform.crop_size
        clip = torch.zeros(3, self.sampler.num_frames, crop, crop)
        if self.slowfast_alpha:
            clip = pack_pathways(clip, self.slowfast_alpha)
        return self._item(clip, record, video_idx, clip_idx, spatial_idx, False, skipped)

    def _item(self, clip, record, video_idx, clip_idx, spatial_idx, valid, skipped) -> dict:
        return {
            "video": clip,
            "label": self._label(record),
            "video_idx": video_idx,
            "clip_idx": clip_idx,
            "spatial_idx": spatial_idx,
            "valid": valid,
            "skipped": skipped,
        }
