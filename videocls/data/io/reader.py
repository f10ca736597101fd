"""The entry point for frames: :func:`open_video` and :class:`VideoReader`, which picks the backend.

* **Backend.** ``backend="auto"`` serves a file with decord (``get_batch`` on the sorted
  unique indices) when the probe (:mod:`~videocls.data.io.probe`) found it exact, else with
  PyAV (:mod:`~videocls.data.io.pyav`), and counts the reason in :func:`fallback_counts`.
  All-intra files (every decoded frame a keyframe, as the probe counted them; e.g.
  ``tools/prepare_videos.py --format fast``) go to PyAV's seek path even where decord passes:
  decord pays for every seek (about 3.5 ms on 256-px frames), so there PyAV, seeking
  straight to each sampled frame, costs about a third of the CPU (docs/PERFORMANCE.md,
  "Training format"). That is a choice, not a fallback: it is not counted. Probes cached by
  an older version do not know the keyframe count and keep decord.
  Indices are never passed beyond the real frame count (decord's ``get_batch`` can hang there).
* **Processes.** A :class:`VideoReader` opens its decoder on first use in the process that
  uses it and drops it when pickled or when it finds itself in a forked child, so
  DataLoader workers never share a decoder.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from videocls.data.io.access import VideoDecodeError, check_frame_indices
from videocls.data.io.demux import cached_index
from videocls.data.io.frame_folder import FrameFolderReader
from videocls.data.io.probe import load_decord, probe_file
from videocls.data.io.probe_cache import file_key
from videocls.data.io.pyav import PyAVDecoder

__all__ = ["BACKENDS", "VideoReader", "fallback_counts", "open_video"]

BACKENDS = ("auto", "decord", "pyav")

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


class VideoReader:
    """Frame-accurate random access to one video file (frame ``i`` as defined in
    :mod:`videocls.data.io`).

    Creating one probes the file (once per file, cached) and raises
    :class:`VideoDecodeError` if it cannot be read; the decoder itself opens on first use.
    Attributes: ``path``; ``backend``, what serves the frames (``"decord"`` or ``"pyav"``;
    asking for ``"decord"`` on a file decord cannot serve exactly raises instead of
    returning wrong frames); ``fps`` and ``duration`` in seconds (the rule in
    :mod:`~videocls.data.io.probe`); ``len(reader)``, the number of frames that really decode.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", num_threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.path = os.fspath(path)
        self.num_threads = num_threads
        self._key = file_key(self.path)
        self._probe = probe_file(self._key)
        self.fps = self._probe.fps
        self.duration = self._probe.duration
        self.backend = self._choose_backend(backend)
        self._decoder = None
        self._pid = None

    def _choose_backend(self, requested: str) -> str:
        failure = self._probe.decord_failure if load_decord() is not None else "unavailable"
        if requested == "pyav" or (requested == "auto" and self._all_intra()):
            return "pyav"
        if failure is None:
            return "decord"
        if requested == "decord":
            raise VideoDecodeError(self.path, f"decord cannot serve it frame-accurately ({failure})")
        _count_fallback(failure)
        return "pyav"

    def _all_intra(self) -> bool:
        """Every frame a keyframe, and PyAV's seek path trusted on the file (module docstring)."""
        probe = self._probe
        return probe.pyav_seekable and probe.num_keyframes == probe.num_frames

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
        index = cached_index(self._key)
        if index.usable and len(index.pts) == len(self):
            seconds = (index.pts[positions] - index.pts[0]) * float(index.time_base)
        else:
            seconds = positions / self.fps
        return torch.from_numpy(seconds.astype(np.float64))

    def _decode(self, positions: list[int]) -> np.ndarray:
        if self.backend == "decord":
            decord = load_decord()
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
                decord = load_decord()
                self._decoder = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=self.num_threads)
            else:
                index = cached_index(self._key) if self._probe.pyav_seekable else None
                self._decoder = PyAVDecoder(self.path, index)
        return self._decoder

    def close(self) -> None:
        """Release the decoder (the reader reopens it if used again)."""
        if self._decoder is None:
            return
        if self._pid != os.getpid():
            _inherited_handles.append(self._decoder)
        elif isinstance(self._decoder, PyAVDecoder):
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
    probe shows it exact, else PyAV; PyAV for all-intra files), ``"decord"`` or ``"pyav"``;
    ``num_threads`` is decord's thread count (PyAV keeps its defaults). A directory is read
    as a folder of frame images (:class:`~videocls.data.io.frame_folder.FrameFolderReader`,
    same interface). Raises :class:`VideoDecodeError` naming the file when it cannot be read."""
    if os.path.isdir(path):
        return FrameFolderReader(path)
    return VideoReader(path, backend=backend, num_threads=num_threads)
