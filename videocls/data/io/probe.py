"""The probe: what a video file really holds, and which random-access paths reproduce it.

Frame ``i`` is the ``i``-th frame of a plain sequential PyAV decode (:mod:`videocls.data.io`);
neither decord nor PyAV's seeking is trusted to serve it until this probe has checked it on
the file.

The first time a file is seen, one sequential PyAV pass counts the frames that really
decode (``tree.avi``'s header says 444 and 68 decode; a fuzzed file has more packets than
frames) and keeps a few probe frames. decord addresses frame ``i`` by the ``i``-th smallest
packet pts and seeks to packets flagged as keyframes, so it is ruled out at once where the
decoded frames carry other pts (AVI with B-frames: ``Megamind.avi`` returns frame 40 for
frame 194, and the last frame only now and then, a race) or other keyframes (an AVI cut
before its index flags every packet). Otherwise it is asked for the probe frames in three
batches, as fresh readers would ask (the last GOP, the end of the one before, the start),
and compared pixel for pixel: on this corpus it also cannot open Theora or ASF, returns
garbage after a seek into an H.264 4:4:4 file, decodes MS-MPEG4 a level or two off and
converts FLV1/VP8 colours differently. Where decord fails, PyAV's own seek path is checked
on the same frames. The verdict is cached (:mod:`~videocls.data.io.probe_cache`: by file
key, in process and in an append-only file that concurrent workers share; a broken cache
costs only re-probes and one warning). The probe costs one full decode plus about two GOPs
per checked backend, once per file.

Frame rate rule: the mean rate of the decoded presentation timestamps,
``(n - 1) / (t_last - t_first)``; the header's average rate is kept instead when it is
within 5% of that (it is exact, e.g. 30000/1001), and used alone when fewer than two
frames carry distinct timestamps (1 fps when it is missing too). ``duration = len / fps``.
A header whose rate is wrong but consistent with its own timestamps (``Megamind_bugy.avi``
says 30 fps for 24 fps content) cannot be detected from the video stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np

from videocls.data.io import probe_cache
from videocls.data.io.access import VideoDecodeError
from videocls.data.io.demux import PacketIndex, cached_index, open_container
from videocls.data.io.probe_cache import Probe
from videocls.data.io.pyav import PyAVDecoder, SeekFailed, decoded_frames, rgb_converter

__all__ = ["load_decord", "probe_file", "run_probe"]

_HEADER_RATE_TOLERANCE = 0.05


@lru_cache(maxsize=1)
def load_decord():
    """decord, or None where it is not installed. Its own logging is silenced: every failure
    it reports surfaces here as a verdict or an exception."""
    try:
        import decord
    except ImportError:
        return None
    decord.logging.set_level(decord.logging.QUIET)
    return decord


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
    decord = load_decord()
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
    path: str, index: PacketIndex, batches: list[list[int]], truth: dict[int, np.ndarray]
) -> bool:
    decoder = PyAVDecoder(path, index)
    try:
        for batch in batches:
            if not _same_frames(decoder.seek_get(batch), batch, truth):
                return False
    except SeekFailed:
        return False
    finally:
        decoder.close()
    return True


def run_probe(path: str, index: PacketIndex) -> Probe:
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
    container, stream = open_container(path)
    time_base, header_rate = stream.time_base, stream.average_rate
    to_rgb = rgb_converter()  # the pixels of frame.to_ndarray(format="rgb24"), see io/__init__
    try:
        for frame in decoded_frames(container, stream):
            if not decoded_pts:
                height, width = frame.height, frame.width
            if len(decoded_pts) in wanted:
                truth[len(decoded_pts)] = to_rgb(frame)
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
        num_keyframes=len(decoded_keys),
    )


def probe_file(key: tuple) -> Probe:
    """The probe of ``key``'s file (a :func:`~videocls.data.io.probe_cache.file_key`): from
    this process, the disk cache, or a fresh run."""
    probe = probe_cache.lookup(key)
    if probe is None:
        probe = run_probe(key[0], cached_index(key))
        probe_cache.store(key, probe)
    return probe
