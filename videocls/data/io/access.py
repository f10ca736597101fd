"""What every frame reader shares: the decode error that names the file, and the index check.

The bottom of :mod:`videocls.data.io`: every reader (:mod:`~videocls.data.io.reader` for video
files, :mod:`~videocls.data.io.frame_folder` for folders of images) imports it, and it imports
none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video file cannot be opened or decoded; the message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


def check_frame_indices(path: str, indices: Sequence[int], num_frames: int) -> np.ndarray:
    """``indices`` as int64 positions, or an error naming ``path`` for any outside the video."""
    positions = np.asarray(indices).reshape(-1)
    if positions.size and positions.dtype.kind not in "iu":
        raise TypeError(f"{path}: frame indices must be integers, got {positions.dtype}")
    positions = positions.astype(np.int64)
    outside = positions[(positions < 0) | (positions >= num_frames)]
    if outside.size:
        raise IndexError(f"{path}: frame index {outside[0]} outside [0, {num_frames})")
    return positions
