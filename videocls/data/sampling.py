"""Which frames make a clip: PySlowFast's index math, fps normalisation, TSN and SSv2 segments.

All functions return frame indices into a video of ``num_video_frames`` real frames; they
never return an index past the last real frame, so readers are never asked for frames that
do not exist. At the ends of a video that is shorter than the clip's span, the last frame is
repeated (``pad="repeat"``, PySlowFast's clamping) or the video is looped (``pad="loop"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Pad = Literal["repeat", "loop"]


def clip_span(num_frames: int, sampling_rate: int, video_fps: float, target_fps: float | None) -> float:
    """Span of a clip in source frames; with ``target_fps`` the stride is meant at that rate.

    PySlowFast samples ``num_frames`` at ``sampling_rate`` of a 30 fps video; a 15 fps video
    must then be read at half the stride so that a clip covers the same seconds.
    """
    span = float(num_frames * sampling_rate)
    if target_fps is not None and video_fps > 0:
        span = span * video_fps / target_fps
    return span


def clip_start(
    num_video_frames: int,
    span: float,
    clip_idx: int,
    num_clips: int,
    rng: np.random.Generator | None = None,
) -> float:
    """PySlowFast ``get_start_end_idx``: random start for ``clip_idx == -1``, else evenly spaced.

    Test clip ``i`` of ``n`` starts at ``delta * i / n`` where ``delta`` is how far the clip
    can move inside the video.
    """
    delta = max(num_video_frames - span, 0.0)
    if clip_idx == -1:
        rng = rng if rng is not None else np.random.default_rng()
        return float(rng.uniform(0.0, delta))
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx {clip_idx} outside [0, {num_clips})")
    return delta * clip_idx / num_clips


def _fit_to_video(indices: np.ndarray, num_video_frames: int, pad: Pad) -> np.ndarray:
    if num_video_frames <= 0:
        raise ValueError("cannot sample from a video with no frames")
    if pad == "loop":
        return np.mod(indices, num_video_frames)
    if pad == "repeat":
        return np.clip(indices, 0, num_video_frames - 1)
    raise ValueError(f"pad must be 'repeat' or 'loop', got {pad!r}")


def clip_indices(
    num_video_frames: int,
    num_frames: int,
    sampling_rate: int,
    clip_idx: int = -1,
    num_clips: int = 1,
    video_fps: float = 30.0,
    target_fps: float | None = None,
    pad: Pad = "repeat",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame indices of one clip (PySlowFast ``temporal_sampling`` over ``get_start_end_idx``).

    ``num_frames`` indices spaced evenly (``linspace``) from the clip's start to its end,
    truncated to integers, as PySlowFast does.
    """
    span = clip_span(num_frames, sampling_rate, video_fps, target_fps)
    start = clip_start(num_video_frames, span, clip_idx, num_clips, rng)
    end = start + span - 1
    indices = torch.linspace(start, end, num_frames, dtype=torch.float64).long().numpy()
    return _fit_to_video(indices, num_video_frames, pad)


def segment_indices(
    num_video_frames: int,
    num_segments: int,
    train: bool,
    rng: np.random.Generator | None = None,
    clip_idx: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """TSN / SSv2 sampling: one frame per equal segment, random in training.

    Test view ``clip_idx`` of ``num_clips`` takes the point ``(clip_idx + 0.5) / num_clips`` of
    every segment: one view is the segments' middles (TSN), several views interleave evenly.
    """
    if num_video_frames <= 0:
        raise ValueError("cannot sample from a video with no frames")
    seg = num_video_frames / num_segments
    starts = seg * np.arange(num_segments)
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        offsets = rng.uniform(0.0, seg, size=num_segments)
    else:
        if not 0 <= clip_idx < num_clips:
            raise ValueError(f"clip_idx {clip_idx} outside [0, {num_clips})")
        offsets = np.full(num_segments, seg * (clip_idx + 0.5) / num_clips)
    return np.minimum(np.floor(starts + offsets).astype(np.int64), num_video_frames - 1)


def rounded_segment_indices(
    num_video_frames: int,
    num_segments: int,
    train: bool,
    rng: np.random.Generator | None = None,
    clip_idx: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """PySlowFast's and TimeSformer's SSv2 ``get_seq_frames``: segments of ``(L - 1) / N`` frames.

    Segment ``i`` spans ``round(s * i)`` to ``round(s * (i + 1))`` (both ends included, numpy's
    round-half-to-even) with ``s = (L - 1) / N``; training takes a uniform integer in it, the
    test its middle ``(start + end) // 2``. The official code has one test layout; with
    ``num_clips > 1`` view ``k`` takes ``start + (end - start) * (2k + 1) // (2 num_clips)``,
    which is the official middle for one view.
    """
    if num_video_frames <= 0:
        raise ValueError("cannot sample from a video with no frames")
    seg = (num_video_frames - 1) / num_segments
    bounds = np.round(seg * np.arange(num_segments + 1)).astype(np.int64)
    starts, ends = bounds[:-1], bounds[1:]
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        return rng.integers(starts, ends + 1)
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx {clip_idx} outside [0, {num_clips})")
    return starts + (ends - starts) * (2 * clip_idx + 1) // (2 * num_clips)


def pack_pathways(clip: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    """SlowFast input from one decode: fast = all frames, slow = every ``alpha``-th (``C T H W``).

    The slow frames are picked with PySlowFast's ``linspace`` over the fast clip.
    """
    num_frames = clip.shape[1]
    slow_idx = torch.linspace(0, num_frames - 1, max(num_frames // alpha, 1)).long()
    return [clip.index_select(1, slow_idx), clip]



SAMPLING_MODES = ("clip", "segment", "rounded_segment")


@dataclass(frozen=True)
class ClipSampler:
    """The temporal sampling of one dataset.

    ``clip``: dense clips (PySlowFast's Kinetics); ``segment``: TSN segments of ``L / N``
    frames; ``rounded_segment``: the official PySlowFast/TimeSformer SSv2 segments
    (``rounded_segment_indices``).
    """

    num_frames: int
    sampling_rate: int = 1
    mode: Literal["clip", "segment", "rounded_segment"] = "clip"
    target_fps: float | None = None
    pad: Pad = "repeat"

    def __post_init__(self) -> None:
        # Checked here, not per item: inside a dataset a ValueError would read as a bad video.
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"data.sampling_mode must be one of {SAMPLING_MODES}, got {self.mode!r}")
        if self.pad not in ("repeat", "loop"):
            raise ValueError(f"data.pad must be 'repeat' or 'loop', got {self.pad!r}")

    def __call__(
        self,
        num_video_frames: int,
        video_fps: float,
        train: bool,
        clip_idx: int = 0,
        num_clips: int = 1,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Indices of one clip: random in training, test clip ``clip_idx`` of ``num_clips`` else."""
        if self.mode == "segment":
            return segment_indices(num_video_frames, self.num_frames, train, rng, clip_idx, num_clips)
        if self.mode == "rounded_segment":
            return rounded_segment_indices(num_video_frames, self.num_frames, train, rng, clip_idx, num_clips)
        return clip_indices(
            num_video_frames,
            self.num_frames,
            self.sampling_rate,
            clip_idx=-1 if train else clip_idx,
            num_clips=num_clips,
            video_fps=video_fps,
            target_fps=self.target_fps,
            pad=self.pad,
            rng=rng,
        )
