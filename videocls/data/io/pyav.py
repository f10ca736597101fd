"""PyAV decoding by frame position: keyframe seeks where the probe trusts them, else from the start.

Frames are numbered as in the definition (:mod:`videocls.data.io`): the ``i``-th frame a
plain sequential decode yields. With a usable :class:`~videocls.data.io.demux.PacketIndex`
the decoder seeks to the last keyframe at or before the first wanted frame and decodes
forward, collecting every wanted frame of the run in one pass; frames are located by
counting from that keyframe, found by its timestamp, so files whose decoded timestamps come
out of order (AVI) are still exact. Files whose packets cannot place the keyframes (missing
or duplicate timestamps, packets that decode to nothing, false keyframe flags) are decoded
from the start. PyAV keeps its default threading, as in the definition: on damaged streams
the output depends on it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence
from contextlib import closing

import av
import numpy as np

from videocls.data.io.access import VideoDecodeError
from videocls.data.io.demux import PacketIndex, open_container

__all__ = ["PyAVDecoder", "SeekFailed", "decoded_frames"]

log = logging.getLogger(__name__)


def decoded_frames(container, stream) -> Iterator[av.VideoFrame]:
    """Every frame from the container's current position on. A packet the decoder rejects
    is skipped and a demuxer error ends the stream, so a damaged file yields what exists."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            packet = None  # a flush packet: drain the decoder, then stop
        try:
            yield from stream.decode(packet)
        except av.FFmpegError:
            pass
        if packet is None:
            return


class SeekFailed(Exception):
    """The seek path could not place a frame; the caller decodes from the start instead."""


class PyAVDecoder:
    """One PyAV container serving frames by position.

    With an ``index`` it seeks to the last keyframe at or before the first wanted frame,
    skips to that keyframe (recognised by its pts) and counts frames forward from there,
    collecting wanted frames until a later keyframe is the shorter way to the next one.
    Without one it decodes from the start."""

    def __init__(self, path: str, index: PacketIndex | None) -> None:
        self.path = path
        self.index = index
        self.container = None
        self.stream = None

    def _open(self) -> None:
        # PyAV's default threading, as in the reference decode: on damaged streams the
        # decoder's output depends on its thread settings.
        self.close()
        self.container, self.stream = open_container(self.path)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = self.stream = None

    def get(self, positions: Sequence[int]) -> list[np.ndarray]:
        """RGB frames at the sorted, unique ``positions``."""
        if self.index is not None:
            try:
                return self.seek_get(positions)
            except SeekFailed:
                log.warning(
                    "%s: PyAV seeking failed after passing the probe; decoding from the start", self.path
                )
                self.index = None
        self._open()
        todo = list(positions)
        frames = self._take(enumerate(decoded_frames(self.container, self.stream)), todo, stop_early=False)
        if todo:
            raise VideoDecodeError(self.path, f"frame {todo[0]} does not decode")
        return frames

    def seek_get(self, positions: Sequence[int]) -> list[np.ndarray]:
        """Like :meth:`get` through keyframe seeks only; raises :class:`SeekFailed`."""
        todo = list(positions)
        frames = []
        while todo:
            k = bisect.bisect_right(self.index.key_positions, todo[0]) - 1
            if k < 0:
                raise SeekFailed
            with closing(self._from_keyframe(k)) as run:
                frames += self._take(enumerate(run, start=self.index.key_positions[k]), todo, stop_early=True)
        return frames

    def _from_keyframe(self, k: int) -> Iterator[av.VideoFrame]:
        if self.container is None:
            self._open()
        key_pts = self.index.key_pts[k]
        self.container.seek(self.index.key_seek_ts[k], backward=True, any_frame=False, stream=self.stream)
        frames = decoded_frames(self.container, self.stream)
        for frame in frames:
            if frame.pts == key_pts:
                yield frame
                yield from frames
                break
            if frame.key_frame and frame.pts is not None and frame.pts > key_pts:
                raise SeekFailed  # landed past the keyframe
        raise SeekFailed  # the stream ended before the keyframe or a wanted frame

    def _take(self, numbered, todo: list[int], stop_early: bool) -> list[np.ndarray]:
        """Convert the frames whose position is wanted; pops them off ``todo``. With
        ``stop_early`` returns as soon as seeking to a later keyframe skips frames."""
        frames = []
        keys = self.index.key_positions if stop_early else []
        for position, frame in numbered:
            if position != todo[0]:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            todo.pop(0)
            if not todo or (stop_early and keys[bisect.bisect_right(keys, todo[0]) - 1] > position + 1):
                break
        return frames
