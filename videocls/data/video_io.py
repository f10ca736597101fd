"""The project's only video reader: frame-accurate random access with decord or PyAV.

Frame ``i`` of a file is, by definition, the ``i``-th frame a plain sequential PyAV decode
from the start produces (``frame.to_ndarray(format="rgb24")``). Both backends are held to
that definition:

* **Probe.** The first time a file is seen, one sequential PyAV pass counts the frames that
  really decode (``tree.avi``'s header says 444 and 68 decode; a fuzzed file has more
  packets than frames) and keeps a few probe frames. decord addresses frame ``i`` by the
  ``i``-th smallest packet pts and seeks to packets flagged as keyframes, so it is ruled
  out at once where the decoded frames carry other pts (AVI with B-frames: ``Megamind.avi``
  returns frame 40 for frame 194, and the last frame only now and then, a race) or other
  keyframes (an AVI cut before its index flags every packet). Otherwise it is asked for the
  probe frames in three batches, as fresh readers would ask (the last GOP, the end of the
  one before, the start), and compared pixel for pixel: on this corpus it also cannot open
  Theora or ASF, returns garbage after a seek into an H.264 4:4:4 file, decodes MS-MPEG4 a
  level or two off and converts FLV1/VP8 colours differently. Where decord fails, PyAV's
  own seek path is checked on the same frames. The verdict is cached by path, size, mtime,
  inode, ctime and a hash of the first and last 64 KiB (so a file rewritten in place with
  its old size and mtime is probed again) in process and in
  ``$VIDEOCLS_CACHE_DIR/decord_probe.jsonl`` (default ``~/.cache/videocls``; an empty value
  turns the disk cache off), an append-only file that concurrent workers share
  (:mod:`videocls.data.probe_cache`: a broken cache costs only re-probes and one warning).
  The probe costs one full decode plus about two GOPs per checked backend, once per file.
* **Serving.** ``backend="auto"`` serves a file with decord (``get_batch`` on the sorted
  unique indices) when the probe passed, else with PyAV, and counts the reason in
  :func:`fallback_counts`. PyAV seeks to the last keyframe at or before the first wanted
  frame and decodes forward, collecting every wanted frame of the run in one pass; frames
  are located by counting from that keyframe, found by its timestamp, so files whose
  decoded timestamps come out of order (AVI) are still exact. Files whose packets cannot
  place the keyframes (missing or duplicate timestamps, packets that decode to nothing,
  false keyframe flags) are decoded from the start. PyAV keeps its default threading, as in
  the definition: on damaged streams the output depends on it. Indices are never passed
  beyond the real frame count (decord's ``get_batch`` can hang there).
* **Processes.** A :class:`VideoReader` opens its decoder on first use in the process that
  uses it and drops it when pickled or when it finds itself in a forked child, so
  DataLoader workers never share a decoder.

Frame rate rule: the mean rate of the decoded presentation timestamps,
``(n - 1) / (t_last - t_first)``; the header's average rate is kept instead when it is
within 5% of that (it is exact, e.g. 30000/1001), and used alone when fewer than two
frames carry distinct timestamps (1 fps when it is missing too). ``duration = len / fps``.
A header whose rate is wrong but consistent with its own timestamps (``Megamind_bugy.avi``
says 30 fps for 24 fps content) cannot be detected from the video stream.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from stat import S_ISREG

import av
import numpy as np
import torch

from videocls.data import probe_cache
from videocls.data.frame_access import VideoDecodeError, check_frame_indices
from videocls.data.frame_folder import FrameFolderReader
from videocls.data.probe_cache import Probe

__all__ = ["VideoDecodeError", "VideoReader", "check_frame_indices", "fallback_counts", "open_video"]

BACKENDS = ("auto", "decord", "pyav")
_HEADER_RATE_TOLERANCE = 0.05
_INDEX_CACHE_SIZE = 256
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- bookkeeping

_fallbacks: Counter[str] = Counter()
_lock = threading.Lock()
# Decoders inherited through fork. Destroying one in the child could join codec threads
# that only exist in the parent, so they are kept alive instead (one per inherited reader).
_inherited_handles: list[object] = []


def fallback_counts() -> dict[str, int]:
    """Readers of this process that ``backend="auto"`` served with PyAV instead of decord,
    by reason: ``decord_unavailable``, ``decord_open_failed``, ``decord_index_mismatch``
    (decoded frames do not carry the timestamps or keyframe flags of their packets, which
    decord seeks by), ``decord_short`` (it sees fewer frames than decode),
    ``decord_decode_failed``, ``decord_inaccurate`` (frames differ) and
    ``decord_runtime_error`` (it failed while serving after passing the probe). Counts are
    per process: DataLoader workers each keep their own."""
    with _lock:
        return dict(_fallbacks)


def _count_fallback(reason: str) -> None:
    with _lock:
        _fallbacks[f"decord_{reason}"] += 1


@lru_cache(maxsize=1)
def _decord():
    """decord, or None where it is not installed. Its own logging is silenced: every failure
    it reports surfaces here as a verdict or an exception."""
    try:
        import decord
    except ImportError:
        return None
    decord.logging.set_level(decord.logging.QUIET)
    return decord


# --------------------------------------------------------------------------- demux index


@dataclass(frozen=True)
class _PacketIndex:
    """What one demux pass (no decoding) says about the first video stream.

    ``pts`` are the presentation timestamps of the packets that carry a picture, sorted, so
    ``pts[i]`` belongs to frame ``i`` when the index is ``usable`` (every such packet has a
    distinct pts) and ``len(pts)`` equals the decoded frame count. Keyframes are listed by
    position in that order, by pts (to recognise the decoded keyframe) and by the timestamp
    to seek to: the smaller of pts and dts, since demuxers index by dts and seeking to the
    pts lands one keyframe late on AVI files with B-frames.
    """

    time_base: Fraction
    num_packets: int
    usable: bool
    pts: np.ndarray
    key_positions: list[int]
    key_pts: list[int]
    key_seek_ts: list[int]


def _open_container(path: str):
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, f"cannot open ({error.strerror or error})") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    return container, container.streams.video[0]


def _demux_index(path: str) -> _PacketIndex:
    container, stream = _open_container(path)
    time_base = stream.time_base  # read before closing: a closed stream's fields are garbage
    packets = []
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                packets.append((packet.pts, packet.dts, packet.is_keyframe))
    except av.FFmpegError:
        pass  # a damaged tail: index what came before it
    finally:
        container.close()
    all_pts = [pts for pts, _, _ in packets]
    if not packets or None in all_pts or len(set(all_pts)) < len(all_pts):
        return _PacketIndex(time_base, len(packets), False, np.zeros(0, np.int64), [], [], [])
    pts = np.sort(np.asarray(all_pts, dtype=np.int64))
    keys = sorted(
        (int(np.searchsorted(pts, p)), p, p if d is None else min(p, d)) for p, d, key in packets if key
    )
    return _PacketIndex(
        time_base=time_base,
        num_packets=len(packets),
        usable=True,
        pts=pts,
        key_positions=[k[0] for k in keys],
        key_pts=[k[1] for k in keys],
        key_seek_ts=[k[2] for k in keys],
    )


_index_cache: OrderedDict[tuple, _PacketIndex] = OrderedDict()


def _cached_index(key: tuple) -> _PacketIndex:
    """The demux index of ``key``'s file, kept for the files this process used last."""
    with _lock:
        if key in _index_cache:
            _index_cache.move_to_end(key)
            return _index_cache[key]
    index = _demux_index(key[0])
    with _lock:
        _index_cache[key] = index
        while len(_index_cache) > _INDEX_CACHE_SIZE:
            _index_cache.popitem(last=False)
    return index


# --------------------------------------------------------------------------- PyAV decoding


def _decoded_frames(container, stream) -> Iterator[av.VideoFrame]:
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


class _SeekFailed(Exception):
    """The seek path could not place a frame; the caller decodes from the start instead."""


class _PyAVDecoder:
    """One PyAV container serving frames by position.

    With an ``index`` it seeks to the last keyframe at or before the first wanted frame,
    skips to that keyframe (recognised by its pts) and counts frames forward from there,
    collecting wanted frames until a later keyframe is the shorter way to the next one.
    Without one it decodes from the start."""

    def __init__(self, path: str, index: _PacketIndex | None) -> None:
        self.path = path
        self.index = index
        self.container = None
        self.stream = None

    def _open(self) -> None:
        # PyAV's default threading, as in the reference decode: on damaged streams the
        # decoder's output depends on its thread settings.
        self.close()
        self.container, self.stream = _open_container(self.path)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = self.stream = None

    def get(self, positions: Sequence[int]) -> list[np.ndarray]:
        """RGB frames at the sorted, unique ``positions``."""
        if self.index is not None:
            try:
                return self.seek_get(positions)
            except _SeekFailed:
                log.warning(
                    "%s: PyAV seeking failed after passing the probe; decoding from the start", self.path
                )
                self.index = None
        self._open()
        todo = list(positions)
        frames = self._take(enumerate(_decoded_frames(self.container, self.stream)), todo, stop_early=False)
        if todo:
            raise VideoDecodeError(self.path, f"frame {todo[0]} does not decode")
        return frames

    def seek_get(self, positions: Sequence[int]) -> list[np.ndarray]:
        """Like :meth:`get` through keyframe seeks only; raises :class:`_SeekFailed`."""
        todo = list(positions)
        frames = []
        while todo:
            k = bisect.bisect_right(self.index.key_positions, todo[0]) - 1
            if k < 0:
                raise _SeekFailed
            with closing(self._from_keyframe(k)) as run:
                frames += self._take(enumerate(run, start=self.index.key_positions[k]), todo, stop_early=True)
        return frames

    def _from_keyframe(self, k: int) -> Iterator[av.VideoFrame]:
        if self.container is None:
            self._open()
        key_pts = self.index.key_pts[k]
        self.container.seek(self.index.key_seek_ts[k], backward=True, any_frame=False, stream=self.stream)
        frames = _decoded_frames(self.container, self.stream)
        for frame in frames:
            if frame.pts == key_pts:
                yield frame
                yield from frames
                break
            if frame.key_frame and frame.pts is not None and frame.pts > key_pts:
                raise _SeekFailed  # landed past the keyframe
        raise _SeekFailed  # the stream ended before the keyframe or a wanted frame

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


# --------------------------------------------------------------------------- probe


def _probe_positions(n: int, key_positions: Sequence[int]) -> list[list[int]]:
    """Frames to compare, in batches asked one after another as a fresh reader would.

    The first batch seeks to the last keyframe and reads its GOP to the end (the last frame
    needs the decoder's flush); the second seeks back to the frame before that keyframe,
    the end of the previous GOP, where a seek that lands one keyframe or one frame off
    shows; the third seeks back to the start (and catches colour differences cheaply).
    About two GOPs of decoding in all.
    """
    last_key = max((k for k in key_positions if 0 < k < n), default=0)
    last_gop = [last_key, last_key + 1] if last_key else []
    batches = [[*last_gop, (last_key + n - 1) // 2, n - 1], [last_key - 1], [0, 1]]
    seen: set[int] = set()
    kept = []
    for batch in batches:
        batch = sorted({p for p in batch if 0 <= p < n} - seen)
        seen.update(batch)
        if batch:
            kept.append(batch)
    return kept


def _frame_rate(times: list[int], time_base: Fraction, header: Fraction | None) -> float:
    """The rule in the module docstring."""
    times = sorted(set(times))
    if len(times) >= 2 and times[-1] > times[0]:
        measured = (len(times) - 1) / float((times[-1] - times[0]) * time_base)
        if header and abs(float(header) / measured - 1) <= _HEADER_RATE_TOLERANCE:
            return float(header)
        return measured
    return float(header) if header else 1.0


def _same_frames(frames, positions: list[int], truth: dict[int, np.ndarray]) -> bool:
    return len(frames) == len(positions) and all(
        np.array_equal(frame, truth[p]) for frame, p in zip(frames, positions, strict=True)
    )


def _decord_failure(
    path: str, exact_index: bool, num_frames: int, batches: list[list[int]], truth: dict[int, np.ndarray]
) -> str | None:
    """Why decord cannot serve ``path`` exactly, or None when it can."""
    decord = _decord()
    if decord is None:
        return "unavailable"
    if not exact_index:
        # decord names frame i by the i-th smallest packet pts, seeks to flagged keyframes and
        # skips by pts; where decoded frames carry other pts (AVI with B-frames) it lands on
        # wrong frames, and on the last frames only now and then (a race in its decoder thread).
        return "index_mismatch"
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except decord.DECORDError:
        return "open_failed"
    if len(reader) < num_frames:
        return "short"
    for batch in batches:
        try:
            frames = reader.get_batch(batch).asnumpy()
        except decord.DECORDError:
            return "decode_failed"
        if not _same_frames(frames, batch, truth):
            return "inaccurate"
    return None


def _pyav_seekable(
    path: str, index: _PacketIndex, batches: list[list[int]], truth: dict[int, np.ndarray]
) -> bool:
    decoder = _PyAVDecoder(path, index)
    try:
        for batch in batches:
            if not _same_frames(decoder.seek_get(batch), batch, truth):
                return False
    except _SeekFailed:
        return False
    finally:
        decoder.close()
    return True


def _run_probe(path: str, index: _PacketIndex) -> Probe:
    """One sequential decode for the truth, then decord and, where decord fails, PyAV seeks.

    Where decord passes, PyAV's seek path is taken as sound without a check of its own: the
    demux index then describes the decoded frames exactly and decord, which also seeks to
    keyframes and decodes forward, reproduced the sequential frames; a PyAV seek that lands
    past its keyframe is caught while serving."""
    batches = _probe_positions(index.num_packets, index.key_positions)
    wanted = set().union(*batches)
    truth: dict[int, np.ndarray] = {}
    decoded_pts: list[int | None] = []
    decoded_keys: list[int] = []
    container, stream = _open_container(path)
    time_base, header_rate = stream.time_base, stream.average_rate
    try:
        for frame in _decoded_frames(container, stream):
            if not decoded_pts:
                height, width = frame.height, frame.width
            if len(decoded_pts) in wanted:
                truth[len(decoded_pts)] = frame.to_ndarray(format="rgb24")
            if frame.key_frame:
                decoded_keys.append(len(decoded_pts))
            decoded_pts.append(frame.pts)
    finally:
        container.close()
    count = len(decoded_pts)
    if count == 0:
        raise VideoDecodeError(path, "no frame decodes")
    batches = [batch for batch in ([p for p in batch if p < count] for batch in batches) if batch]
    # Both decord and the PyAV seek path trust the packets' keyframe flags. They lie where a
    # damaged AVI lost its index (every packet is flagged) or frames went missing.
    keys_agree = index.usable and len(index.pts) == count and decoded_keys == index.key_positions
    exact_index = keys_agree and decoded_pts == index.pts.tolist()
    decord_failure = _decord_failure(path, exact_index, count, batches, truth)
    seekable = keys_agree and (decord_failure is None or _pyav_seekable(path, index, batches, truth))
    fps = _frame_rate([t for t in decoded_pts if t is not None], time_base, header_rate)
    return Probe(
        num_frames=count,
        fps=fps,
        duration=count / fps,
        height=height,
        width=width,
        decord_failure=decord_failure,
        pyav_seekable=seekable,
    )


# --------------------------------------------------------------------------- file key

_FINGERPRINT_BLOCK = 64 * 1024


def _fingerprint(path: str, size: int) -> str:
    """A hash of the first and last 64 KiB: a file rewritten in place with its old size and
    mtime restored (``os.utime``) still gets a new key."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(_FINGERPRINT_BLOCK))
        if size > _FINGERPRINT_BLOCK:
            f.seek(max(_FINGERPRINT_BLOCK, size - _FINGERPRINT_BLOCK))
            digest.update(f.read(_FINGERPRINT_BLOCK))
    return digest.hexdigest()


def _file_key(path: str) -> tuple[str, int, int, int, int, str]:
    """``(abspath, size, mtime_ns, inode, ctime_ns, fingerprint)``: what the cached verdict
    is valid for. Any write through the file system changes the ctime (``os.utime``
    included), and the fingerprint catches content changes where ctime is not kept."""
    try:
        stat = os.stat(path)
        # Only regular files are read for the fingerprint: opening a FIFO would block here.
        fingerprint = _fingerprint(path, stat.st_size) if S_ISREG(stat.st_mode) else ""
    except OSError as error:
        raise VideoDecodeError(path, f"cannot read ({error.strerror or error})") from error
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns, fingerprint


def _probe_file(key: tuple) -> Probe:
    """The probe of ``key``'s file: from this process, the disk cache, or a fresh run."""
    probe = probe_cache.lookup(key)
    if probe is None:
        probe = _run_probe(key[0], _cached_index(key))
        probe_cache.store(key, probe)
    return probe


# --------------------------------------------------------------------------- reader


class VideoReader:
    """Frame-accurate random access to one video file (see the module docstring).

    Creating one probes the file (once per file, cached) and raises
    :class:`VideoDecodeError` if it cannot be read; the decoder itself opens on first use.
    Attributes: ``path``; ``backend``, what serves the frames (``"decord"`` or ``"pyav"``;
    asking for ``"decord"`` on a file decord cannot serve exactly raises instead of
    returning wrong frames); ``fps`` and ``duration`` in seconds (the rule in the module
    docstring); ``len(reader)``, the number of frames that really decode.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", num_threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.path = os.fspath(path)
        self.num_threads = num_threads
        self._key = _file_key(self.path)
        self._probe = _probe_file(self._key)
        self.fps = self._probe.fps
        self.duration = self._probe.duration
        self.backend = self._choose_backend(backend)
        self._decoder = None
        self._pid = None

    def _choose_backend(self, requested: str) -> str:
        failure = self._probe.decord_failure if _decord() is not None else "unavailable"
        if requested == "pyav":
            return "pyav"
        if failure is None:
            return "decord"
        if requested == "decord":
            raise VideoDecodeError(self.path, f"decord cannot serve it frame-accurately ({failure})")
        _count_fallback(failure)
        return "pyav"

    def __len__(self) -> int:
        return self._probe.num_frames

    def __repr__(self) -> str:
        return f"VideoReader({self.path!r}, backend={self.backend!r}, frames={len(self)}, fps={self.fps:.4g})"

    def _positions(self, indices: Sequence[int]) -> np.ndarray:
        return check_frame_indices(self.path, indices, len(self))

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 ``T x H x W x 3`` RGB frames at ``indices`` (any order, repeats allowed)."""
        positions = self._positions(indices)
        if positions.size == 0:
            return torch.empty((0, self._probe.height, self._probe.width, 3), dtype=torch.uint8)
        unique, inverse = np.unique(positions, return_inverse=True)
        # Reordered in numpy: torch's indexing would use its OpenMP pool, which hangs in a
        # child forked after the parent used it.
        return torch.from_numpy(self._decode(unique.tolist())[inverse.reshape(-1)])

    def get_timestamps(self, indices: Sequence[int]) -> torch.Tensor:
        """Presentation times in seconds (float64) of the frames at ``indices``, counted from
        the first frame. Files whose packet timestamps cannot be matched to frames get
        ``index / fps``."""
        positions = self._positions(indices)
        index = _cached_index(self._key)
        if index.usable and len(index.pts) == len(self):
            seconds = (index.pts[positions] - index.pts[0]) * float(index.time_base)
        else:
            seconds = positions / self.fps
        return torch.from_numpy(seconds.astype(np.float64))

    def _decode(self, positions: list[int]) -> np.ndarray:
        if self.backend == "decord":
            decord = _decord()
            try:
                return self._decoder_here().get_batch(positions).asnumpy()
            except decord.DECORDError:
                # Passed the probe, failed now: serve this reader with PyAV from here on.
                _count_fallback("runtime_error")
                self.close()
                self.backend = "pyav"
        return np.stack(self._decoder_here().get(positions))

    def _decoder_here(self):
        """This process's decoder, opened on first use; one inherited through fork is left alone."""
        if self._pid != os.getpid():
            if self._decoder is not None:
                _inherited_handles.append(self._decoder)
            self._decoder, self._pid = None, os.getpid()
        if self._decoder is None:
            if self.backend == "decord":
                decord = _decord()
                self._decoder = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=self.num_threads)
            else:
                index = _cached_index(self._key) if self._probe.pyav_seekable else None
                self._decoder = _PyAVDecoder(self.path, index)
        return self._decoder

    def close(self) -> None:
        """Release the decoder (the reader reopens it if used again)."""
        if self._decoder is None:
            return
        if self._pid != os.getpid():
            _inherited_handles.append(self._decoder)
        elif isinstance(self._decoder, _PyAVDecoder):
            self._decoder.close()
        self._decoder = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_decoder=None, _pid=None)
        return state


def open_video(path: str | os.PathLike, backend: str = "auto", num_threads: int = 1):
    """Open ``path`` for frame-accurate random access: ``backend="auto"`` (decord where the
    probe shows it exact, else PyAV), ``"decord"`` or ``"pyav"``; ``num_threads`` is decord's
    thread count (PyAV keeps its defaults). A directory is read as a folder of frame images
    (:class:`~videocls.data.frame_folder.FrameFolderReader`, same interface). Raises
    :class:`VideoDecodeError` naming the file when it cannot be read."""
    if os.path.isdir(path):
        return FrameFolderReader(path)
    return VideoReader(path, backend=backend, num_threads=num_threads)
