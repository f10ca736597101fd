"""Opening a video file with PyAV, and what its packets say without decoding a frame.

One demux pass reads every packet's timestamps and keyframe flag: the map from frame
position to keyframe that both the PyAV seek path (:mod:`~videocls.data.io.pyav`) and the
probe (:mod:`~videocls.data.io.probe`) work from. Demuxing costs a small fraction of a
decode, and the index of the files a process used last is kept in memory.

Every decoder is opened after this module is imported, which registers one rule for forked
children (DataLoader workers): a child inherits all of its parent's objects, garbage included,
and a decoder left in a reference cycle there, freed by the child's garbage collector, would
join codec threads that exist only in the parent (the child hangs, or segfaults at exit: seen
in the suite). So right after a fork the child freezes what it inherited (``gc.freeze``): the
collector never frees it there; the parent still does.
"""

from __future__ import annotations

import gc
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from videocls.data.io.access import VideoDecodeError

__all__ = ["PacketIndex", "cached_index", "demux_index", "open_container"]

_INDEX_CACHE_SIZE = 256
_lock = threading.Lock()

os.register_at_fork(after_in_child=gc.freeze)


@dataclass(frozen=True)
class PacketIndex:
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


def open_container(path: str):
    """``(container, first video stream)``, or a :class:`VideoDecodeError` naming ``path``."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, f"cannot open ({error.strerror or error})") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    return container, container.streams.video[0]


def demux_index(path: str) -> PacketIndex:
    """The packet index of ``path``'s first video stream (one demux pass, no decoding)."""
    container, stream = open_container(path)
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
        return PacketIndex(time_base, len(packets), False, np.zeros(0, np.int64), [], [], [])
    pts = np.sort(np.asarray(all_pts, dtype=np.int64))
    keys = sorted(
        (int(np.searchsorted(pts, p)), p, p if d is None else min(p, d)) for p, d, key in packets if key
    )
    return PacketIndex(
        time_base=time_base,
        num_packets=len(packets),
        usable=True,
        pts=pts,
        key_positions=[k[0] for k in keys],
        key_pts=[k[1] for k in keys],
        key_seek_ts=[k[2] for k in keys],
    )


_index_cache: OrderedDict[tuple, PacketIndex] = OrderedDict()


def cached_index(key: tuple) -> PacketIndex:
    """The demux index of ``key``'s file (a :func:`~videocls.data.io.probe_cache.file_key`),
    kept for the files this process used last."""
    with _lock:
        if key in _index_cache:
            _index_cache.move_to_end(key)
            return _index_cache[key]
    index = demux_index(key[0])
    with _lock:
        _index_cache[key] = index
        while len(_index_cache) > _INDEX_CACHE_SIZE:
            _index_cache.popitem(last=False)
    return index
