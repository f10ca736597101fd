"""Map-style video clip dataset: decode, sample, transform; bad files are skipped and counted.

Training draws one random clip per item, or with ``clips_per_video=k`` (repeated
augmentation, as MAE-ST's ``repeat_aug`` and VideoMAE's ``num_sample`` fine-tuning) k clips
of the same video, each with its own temporal sample and augmentation, from one opening of
the file and one decode of the sorted union of their frames. With ``share_frames`` the k
clips are k augmentations of the same frames (VideoMAE: one temporal sample, ``_aug_frame``
applied k times), so the decode is one clip's. Such an item holds the k clips stacked
(``video``: ``k x C x T x H x W``, each SlowFast pathway alike; with ``data.gpu_transforms``
the list of the k clips' uint8 payloads, each clip's parameters drawn as on the CPU path)
and one label; the collate (:func:`~videocls.data.loader.collate_clips`)
flattens a batch of B such items into ``B * k`` clips, video-major (the k clips of a video
adjacent), each with its video's label, as VideoMAE's and PySlowFast's
``multiple_samples_collate``. What counts is the video: the dataset's length, the samplers,
an epoch, ``data.batch_size`` (videos per device and step) and so the LR scaling by the
global batch are all in videos; the model sees ``batch_size * k`` clips per step.
Evaluation enumerates every view of every video (``num_clips`` temporal x ``num_crops``
spatial), so a ``DistributedSampler``-free shard of indices covers each view exactly once.
A batch of test views is fetched with ``__getitems__``, which decodes each video once for
all its views in the batch (the union of their frames in one pass), resizes each clip once
and cuts every crop from it; the evaluation loader
(:func:`~videocls.data.loader.build_loader`) keeps a video's views in one batch. A single
view (``dataset[i]``) goes through the same code and is the same tensor.

Randomness comes from a generator seeded by ``(seed, epoch, index, attempt)`` (the extra
clips of a repeated item by ``(seed, epoch, index, attempt, j)``, so its first clip is the one
``k=1`` draws): the same item
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
from videocls.data.transforms import short_side_resize

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
        clips_per_video: int = 1,
        share_frames: bool = False,
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
        if isinstance(clips_per_video, bool) or not isinstance(clips_per_video, int) or clips_per_video < 1:
            raise ValueError(f"data.clips_per_video must be an integer >= 1, got {clips_per_video!r}")
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
        self.clips_per_video = clips_per_video if train else 1  # a training setting; a test view is one clip
        self.share_frames = share_frames
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

    def _load_clips(self, record: VideoRecord, rngs: list[np.random.Generator]) -> list:
        """One random training clip per generator in ``rngs``: each draws its own frames and
        augmentation, and the file is opened once and decoded once for all of them."""
        reader = open_video(record.path, backend=self.backend, num_threads=self.num_threads)
        try:
            num_frames, fps = len(reader), reader.fps
            indices = {j: self.sampler(num_frames, fps, True, 0, 1, rng)
                       for j, rng in enumerate(rngs[:1] if self.share_frames else rngs)}
            if len(indices) == 1:  # one clip, or k sharing its frames: one tensor (transforms only read it)
                frames = dict.fromkeys(range(len(rngs)), reader.get_frames(indices[0].tolist()))
            else:
                frames = _decode_union(reader, indices)
        finally:
            reader.close()
        shrink = getattr(self.transform, "shrink", None)  # data.gpu_transforms' uint8 resize
        if self.share_frames and len(rngs) > 1 and shrink is not None and self.frame_filter is None:
            frames = dict.fromkeys(frames, shrink(frames[0]))  # it draws nothing: once for the k clips
        clips = []
        for j, rng in enumerate(rngs):
            clip_frames = frames[j]
            if self.frame_filter is not None:
                clip_frames = self.frame_filter(clip_frames, rng)
            clip = self.transform(clip_frames, rng=rng, spatial_idx=1)
            clips.append(pack_pathways(clip, self.slowfast_alpha) if self.slowfast_alpha else clip)
        return clips

    def _decode_test_clips(
        self, record: VideoRecord, clips: list[int], skipped: list[tuple[str, str]]
    ) -> dict[int, torch.Tensor]:
        """uint8 frames of each test clip in ``clips``, from one opening of the file and one pass
        over the sorted union of their frames. A clip that cannot be read is left out (and the
        file reported in ``skipped``): if the one pass fails, the clips are decoded one by one,
        so that the readable ones still count, as when every view decoded on its own."""
        try:
            reader = open_video(record.path, backend=self.backend, num_threads=self.num_threads)
        except BAD_VIDEO_ERRORS as error:
            self._skip(record, error, skipped)
            return {}
        try:
            try:
                indices = {c: self.sampler(len(reader), reader.fps, False, c, self.num_clips) for c in clips}
            except BAD_VIDEO_ERRORS as error:  # e.g. no frames to sample from
                self._skip(record, error, skipped)
                return {}
            try:
                return _decode_union(reader, indices)
            except BAD_VIDEO_ERRORS as error:
                if len(clips) == 1:
                    self._skip(record, error, skipped)
                    return {}
            frames = {}
            for c in clips:
                try:
                    frames.update(_decode_union(reader, {c: indices[c]}))
                except BAD_VIDEO_ERRORS as error:
                    self._skip(record, error, skipped)
            return frames
        finally:
            reader.close()

    def _resize_once(self, frames: torch.Tensor) -> torch.Tensor:
        """The test transform's short-side resize, done once per clip for all its crops (the
        transform then finds the short side at its size, skips the resize and only crops: the
        same tensor as resizing per view). A frame filter sees the decoded frames, per view."""
        side = getattr(self.transform, "min_short_side", None)
        if self.frame_filter is not None or side is None or getattr(self.transform, "train", True):
            return frames
        return short_side_resize(frames.permute(0, 3, 1, 2), side).permute(0, 2, 3, 1)

    def _test_views(self, video_idx: int, indices: list[int]) -> dict[int, dict]:
        """The test views ``indices`` (all of video ``video_idx``), decoded together."""
        record = self.records[video_idx]
        views = {index: self.view_of(index)[1:] for index in indices}
        skipped: list[tuple[str, str]] = []  # reported with the first view (once per video and batch)
        frames = self._decode_test_clips(record, sorted({c for c, _ in views.values()}), skipped)
        resized: dict[int, torch.Tensor] = {}
        items = {}
        for index, (clip_idx, spatial_idx) in views.items():
            if clip_idx not in frames:
                items[index] = self._invalid_item(record, video_idx, clip_idx, spatial_idx, skipped)
            else:
                if clip_idx not in resized:
                    resized[clip_idx] = self._resize_once(frames[clip_idx])
                # Spatial crop 1 (centre) when testing with a single crop, as PySlowFast does.
                crop = spatial_idx if self.num_crops == 3 else 1
                rng = np.random.default_rng([self.seed, self.epoch, index, 0])
                view = resized[clip_idx]
                if self.frame_filter is not None:
                    view = self.frame_filter(view, rng)
                clip = self.transform(view, rng=rng, spatial_idx=crop)
                clip = pack_pathways(clip, self.slowfast_alpha) if self.slowfast_alpha else clip
                items[index] = self._item(clip, record, video_idx, clip_idx, spatial_idx, True, skipped)
            skipped = []
        return items

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

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The items at ``indices`` (what the DataLoader asks for a batch): test views grouped
        by video, each video decoded once for all of them."""
        if self.train:
            return [self[index] for index in indices]
        by_video: dict[int, list[int]] = {}
        for index in dict.fromkeys(indices):
            by_video.setdefault(self.view_of(index)[0], []).append(index)
        items = {}
        for video_idx, views in by_video.items():
            items.update(self._test_views(video_idx, views))
        return [items[index] for index in indices]

    def __getitem__(self, index: int) -> dict:
        if not self.train:
            return self.__getitems__([index])[0]
        video_idx = self.view_of(index)[0]
        skipped: list[tuple[str, str]] = []
        for attempt in range(self.max_retries + 1):
            record = self.records[video_idx]
            rng = np.random.default_rng([self.seed, self.epoch, index, attempt])
            rngs = [rng] + [np.random.default_rng([self.seed, self.epoch, index, attempt, j])
                            for j in range(1, self.clips_per_video)]
            try:
                clips = self._load_clips(record, rngs)
            except BAD_VIDEO_ERRORS as error:
                self._skip(record, error, skipped)
                video_idx = int(rng.integers(len(self.records)))
                continue
            if len(clips) == 1:
                return self._item(clips[0], record, video_idx, 0, 0, True, skipped)
            item = self._item(_stack_clips(clips), record, video_idx, 0, 0, True, skipped)
            item["clips_per_video"] = len(clips)  # the collate flattens the item into its clips
            return item
        raise RuntimeError(
            f"{self.max_retries + 1} videos in a row could not be read; last: {skipped[-1][0]} "
            f"({skipped[-1][1]}). Check the dataset with tools/validate_dataset.py."
        )

    def _invalid_item(
        self, record: VideoRecord, video_idx: int, clip_idx: int, spatial_idx: int, skipped: list
    ) -> dict:
        crop = self.transform.crop_size
        # The dtype valid views have: uint8 when the device finishes them (gpu_transforms).
        dtype = getattr(self.transform, "dtype", None)
        clip = torch.zeros(3, self.sampler.num_frames, crop, crop, dtype=dtype)
        if self.slowfast_alpha:
            clip = pack_pathways(clip, self.slowfast_alpha)
        return self._item(clip, record, video_idx, clip_idx, spatial_idx, False, skipped)

    def _item(self, clip, record, video_idx, clip_idx, spatial_idx, valid, skipped) -> dict:
        # A test view that could not be read is kept, marked invalid, so the evaluator drops it
        # and reports the video instead of miscounting (it cannot be replaced by another video's).
        return {
            "video": clip,
            "label": self._label(record),
            "video_idx": video_idx,
            "clip_idx": clip_idx,
            "spatial_idx": spatial_idx,
            "valid": valid,
            "skipped": skipped,
        }


def _stack_clips(clips: list) -> torch.Tensor | list[torch.Tensor] | list[dict]:
    """k clips as one ``k x C x T x H x W`` tensor, or one such tensor per SlowFast pathway. The
    uint8 payloads of ``data.gpu_transforms`` stay a list of k dicts: the collate copies each
    into the batch, so a clip is copied once, as with k=1 (stacking here would copy it twice)."""
    if isinstance(clips[0], torch.Tensor):
        return torch.stack(clips)
    if isinstance(clips[0], dict):
        return list(clips)
    return [torch.stack(pathway) for pathway in zip(*clips, strict=True)]


def _decode_union(reader, indices: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:
    """Each clip's frames (``clip -> indices``) from one ``get_frames`` of their sorted union."""
    union = np.unique(np.concatenate(list(indices.values())))
    # Cut in numpy: torch's indexing would use its OpenMP pool, which hangs in a loader worker
    # forked after the parent used it.
    decoded = reader.get_frames(union.tolist()).numpy()
    return {c: torch.from_numpy(decoded[np.searchsorted(union, idx)]) for c, idx in indices.items()}
