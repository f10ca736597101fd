"""PyAV decoding by frame position: keyframe seeks where the probe trusts them, else from the start.

Frames are numbered as in the definition (:mod:`videocls.data.io`): the ``i``-th frame a
plain sequential decode yields. With a usable :class:`~videocls.data.io.demux.PacketIndex`
the wanted frames are served in runs (:func:`plan_runs`): each run seeks to a keyframe and
decodes forward, and the decoder keeps decoding from one wanted frame to the next unless a
seek to a later keyframe decodes fewer frames, so a clip costs the fewest decoded frames of
"seek to every sampled frame" and "decode the clip's window sequentially" at every gap (on
all-intra files a seek per frame, on long GOPs one run). Frames are located by counting from
the run's keyframe, found by its timestamp, so files whose decoded timestamps come out of
order (AVI) are still exact. Files whose packets cannot place the keyframes (missing or
duplicate timestamps, packets that decode to nothing, false keyframe flags) are decoded
from the start. PyAV keeps its default threading, as in the definition: on damaged streams
the output depends on it.

Seeking asks for the keyframe's pts first: MP4 indexes by pts, and the packet's dts (earlier
where there are B-frames) lands one GOP early there, a whole GOP decoded for nothing at
every seek. Some AVI files with B-frames index by dts and land one keyframe late on the
pts: a seek by pts that misses its keyframe is retried by ``min(pts, dts)``, which the
decoder then keeps using.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from videocls.data.io.access import VideoDecodeError
from videocls.data.io.demux import PacketIndex, open_container

__all__ = ["PyAVDecoder", "SeekFailed", "decoded_frames", "frames_to_decode", "plan_runs", "rgb_converter"]

log = logging.getLogger(__name__)

# swscale's thread count is an argument of VideoReformatter.reformat from PyAV 17 on.
_ONE_THREAD = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


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


def rgb_converter() -> Callable[[av.VideoFrame], np.ndarray]:
    """``frame -> H x W x 3`` uint8 RGB, the pixels of ``frame.to_ndarray(format="rgb24")``,
    with one swscale context kept for every frame and run on the calling thread.

    ``to_ndarray`` builds a new context per frame with FFmpeg's automatic threading (a thread
    per CPU), which cost half of a 32-frame all-intra clip's decode; a loader worker is one
    core anyway, and slice threading does not change the pixels. (A context kept alive with
    threads would also be inherited by forked children, whose threads do not exist there: the
    fork rule in :mod:`~videocls.data.io.demux` covers that for every decoder.) PyAV before 17
    has no ``threads`` argument and converts on the calling thread anyway."""
    reformatter = VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="rgb24", **_ONE_THREAD).to_ndarray()


class SeekFailed(Exception):
    """The seek path could not place a frame; the caller decodes from the start instead."""


def plan_runs(positions: Sequence[int], key_positions: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``[(k, run), ...]``: the sorted, unique ``positions`` cut into runs, each decoded from
    keyframe ``key_positions[k]`` on. Decoding on from the last wanted frame ``p`` to the next
    one ``q`` costs ``q - p`` frames, seeking to ``q``'s keyframe ``key`` costs ``q - key + 1``:
    a new run starts exactly where the seek decodes fewer (``key > p + 1``). Raises
    :class:`SeekFailed` for a position before the first keyframe."""
    runs: list[tuple[int, list[int]]] = []
    for position in positions:
        k = bisect.bisect_right(key_positions, position) - 1
        if k < 0:
            raise SeekFailed
        if runs and key_positions[k] <= runs[-1][1][-1] + 1:
            runs[-1][1].append(position)
        else:
            runs.append((k, [position]))
    return runs


def frames_to_decode(runs: list[tuple[int, list[int]]], key_positions: Sequence[int]) -> int:
    """Frames the decoder outputs to serve ``runs`` (:func:`plan_runs`), keyframes included."""
    return sum(run[-1] - key_positions[k] + 1 for k, run in runs)


class PyAVDecoder:
    """One PyAV container serving frames by position.

    With an ``index`` it serves the runs of :func:`plan_runs`: seeks to each run's keyframe,
    skips to it (recognised by its pts) and counts frames forward from there. Without one it
    decodes from the start."""

    def __init__(self, path: str, index: PacketIndex | None) -> None:
        self.path = path
        self.index = index
        self.container = None
        self.stream = None
        self.seek_by_pts = True  # until a seek by pts lands past its keyframe (AVI)
        self.rgb = rgb_converter()
        self.frames_decoded = 0  # frames the decoder output, wanted or not (for tests and benchmarks)

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
        decoded = self._counted(decoded_frames(self.container, self.stream))
        frames = self._collect(enumerate(decoded), positions)
        if len(frames) < len(positions):
            raise VideoDecodeError(self.path, f"frame {positions[len(frames)]} does not decode")
        return frames

    def seek_get(self, positions: Sequence[int]) -> list[np.ndarray]:
        """Like :meth:`get` through keyframe seeks only (:func:`plan_runs`); raises :class:`SeekFailed`."""
        frames = []
        for k, run in plan_runs(positions, self.index.key_positions):
            with closing(self._from_keyframe(k)) as decoded:
                got = self._collect(enumerate(decoded, start=self.index.key_positions[k]), run)
            if len(got) < len(run):
                raise SeekFailed  # the stream ended before a wanted frame
            frames += got
        return frames

    def _from_keyframe(self, k: int) -> Iterator[av.VideoFrame]:
        """Frames from keyframe ``k`` on (the module docstring says which timestamp it seeks to)."""
        if self.container is None:
            self._open()
        key_pts, seek_ts = self.index.key_pts[k], self.index.key_seek_ts[k]
        for by_pts in (True, False) if self.seek_by_pts and key_pts != seek_ts else (False,):
            target = key_pts if by_pts else seek_ts
            self.container.seek(target, backward=True, any_frame=False, stream=self.stream)
            frames = self._counted(decoded_frames(self.container, self.stream))
            for frame in frames:
                if frame.pts == key_pts:
                    yield frame
                    yield from frames
                    return
                if frame.key_frame and frame.pts is not None and frame.pts > key_pts:
                    break  # landed past the keyframe
            # Landed past the keyframe, or the stream ended before it.
            if by_pts:
                self.seek_by_pts = False
        raise SeekFailed

    def _counted(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        for frame in frames:
            self.frames_decoded += 1
            yield frame

    def _collect(self, numbered, wanted: Sequence[int]) -> list[np.ndarray]:
        """The frames at the sorted ``wanted`` positions of ``numbered`` ``(position, frame)``
        pairs, converted to RGB; stops at the last one, so nothing after it is decoded."""
        frames = []
        for position, frame in numbered:
            if position == wanted[len(frames)]:
                frames.append(self.rgb(frame))
                if len(frames) == len(wanted):
                    break
        return frames
