"""Which videos of a dataset the data pipeline can really read (``tools/validate_dataset.py``).

Each file is opened the way :class:`~videocls.data.dataset.VideoClipDataset` opens it,
``open_video(path, backend="auto")``, and its first, middle and last frames are decoded;
then one demux pass (no decoding) compares what the container holds with what decodes.
Every file gets one status:

``ok``
    It opens, the three frames decode, and nothing below is missing.
``unreadable``
    ``open_video`` or a frame raises one of the errors the dataset skips, the worker
    process dies, or the file takes longer than the time limit (a hanging file).
``partial``
    It reads, but part of what the container holds is lost, by any of three tests:

    1. *rejected data*: fewer frames decode (``len(reader)``) than the demuxer delivers
       video packets that carry data (``afl-small_movie.mp4``: 12 packets, 11 frames);
    2. *cut short*: the header's frame count (PyAV ``stream.frames``, where the container
       stores one) exceeds the frame intervals the packets span,
       ``round((max(pts + duration) - min(pts)) * time_base * average_rate)``; a truncated
       AVI keeps its header (``g1.avi`` cut in half: 16 in the header, packets span 3);
    3. the demuxer fails before the end of the file.

    The header count is not compared with ``len(reader)`` directly: AVI headers count the
    empty chunks that variable-rate AVIs use to repeat the previous frame, which carry no
    picture (``tree.avi``: 444 in the header, 68 packets with data, spanning all 444
    intervals; ``balle1-vp9.avi``: 300 and 295), so whole files would be called partial.

Frame folders (when ``open_video`` serves them) have no container: they are ``ok`` or
``unreadable``. Each file is checked in a worker process killed at the time limit, so a
file that hangs the demuxer or crashes a decoder costs one report line, not the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait
from pathlib import Path

import av
import torch
from tqdm import tqdm

from videocls.data.annotations import VideoRecord, filter_annotations, read_annotations
from videocls.data.dataset import BAD_VIDEO_ERRORS
from videocls.data.video_io import fallback_counts, open_video

__all__ = [
    "STATUSES",
    "VideoCheck",
    "check_video",
    "check_videos",
    "summarize",
    "validate_dataset",
    "worker_context",
]

STATUSES = ("ok", "unreadable", "partial")


@dataclass(frozen=True)
class VideoCheck:
    """What :func:`check_video` found out about one file (``None``: not known)."""

    path: str
    status: str
    reason: str | None = None  # why it is not ok
    backend: str | None = None  # what open_video serves it with
    frames: int | None = None  # frames that decode: len(reader)
    header_frames: int | None = None  # the container header's count (stream.frames)
    packets: int | None = None  # video packets that carry data
    fps: float | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    decord_accurate: bool | None = None  # decord's random access passed the reader's probe
    decord_failure: str | None = None  # why not, as the reader counts it (e.g. "pts_mismatch")
    seconds: float | None = None  # time the check took


@dataclass(frozen=True)
class _Container:
    header_frames: int | None
    packets: int
    span: int | None
    demux_error: str | None


def _container(path: str) -> _Container:
    """One demux pass over the first video stream: header count, packets, span in frames."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        header_frames, rate, time_base = stream.frames or None, stream.average_rate, stream.time_base
        packets, first, end, error = 0, None, None, None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                if packet.pts is not None and rate:
                    # A packet without a duration lasts one frame interval.
                    duration = packet.duration or 1 / (rate * time_base)
                    first = packet.pts if first is None else min(first, packet.pts)
                    end = packet.pts + duration if end is None else max(end, packet.pts + duration)
        except av.FFmpegError as exc:
            error = str(exc)
    span = round(float((end - first) * time_base * rate)) if end is not None else None
    return _Container(header_frames, packets, span, error)


def _lost(frames: int, container: _Container) -> list[str]:
    """The partial tests of the module docstring that fail, as reasons."""
    reasons = []
    if frames < container.packets:
        reasons.append(f"{container.packets} packets carry data but {frames} frames decode")
    if container.header_frames and container.span is not None and container.header_frames > container.span:
        reasons.append(
            f"the header counts {container.header_frames} frames but the packets span {container.span}"
        )
    if container.demux_error is not None:
        reasons.append(f"the demuxer failed before the end ({container.demux_error})")
    return reasons


def check_video(path: str) -> VideoCheck:
    """Open ``path`` as the dataset does, decode its first, middle and last frames and
    compare the container with what decodes (statuses: see the module docstring)."""
    start = time.perf_counter()
    before = fallback_counts()
    try:
        with open_video(path, backend="auto") as reader:
            count = len(reader)
            frames = reader.get_frames(sorted({0, count // 2, count - 1}))
            container = None if os.path.isdir(path) else _container(path)
    except (*BAD_VIDEO_ERRORS, av.FFmpegError) as error:
        reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
        return VideoCheck(path, "unreadable", reason, seconds=time.perf_counter() - start)
    after = fallback_counts()
    fallback = [key for key in after if after[key] > before.get(key, 0)]
    lost = _lost(count, container) if container is not None else []
    return VideoCheck(
        path=path,
        status="partial" if lost else "ok",
        reason="; ".join(lost) or None,
        backend=reader.backend,
        frames=count,
        header_frames=container.header_frames if container else None,
        packets=container.packets if container else None,
        fps=reader.fps,
        duration=reader.duration,
        width=frames.shape[2],
        height=frames.shape[1],
        decord_accurate=None if reader.backend == "frames" else reader.backend == "decord",
        decord_failure=fallback[0].removeprefix("decord_") if fallback else None,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- worker pool


def worker_context():
    """The multiprocessing context for decoding workers: fork where there is one, so workers
    start at once with torch and the decoders already imported (as DataLoader workers do)."""
    return multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )


def _serve(conn) -> None:
    """A worker: check each path it is sent until it is sent ``None``."""
    torch.set_num_threads(1)  # as DataLoader workers: -j processes share the cores
    while (path := conn.recv()) is not None:
        try:
            check = check_video(path)
        except Exception as error:  # noqa: BLE001 - an error the dataset would not skip either
            check = VideoCheck(
                path, "unreadable", f"{type(error).__name__}: {error} (the dataset does not skip this)"
            )
        conn.send(check)


class _Worker:
    """One checking process and the path it is busy with."""

    def __init__(self, context) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.path: str | None = None
        self.deadline = 0.0

    def submit(self, path: str, timeout: float) -> None:
        self.conn.send(path)
        self.path, self.deadline = path, time.monotonic() + timeout

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass  # already gone
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
        self.conn.close()


def check_videos(
    paths: Sequence[str], jobs: int = 1, timeout: float = 60.0, progress: bool = False
) -> dict[str, VideoCheck]:
    """:func:`check_video` for each distinct path in ``jobs`` worker processes; a file taking
    longer than ``timeout`` seconds is reported unreadable and its worker replaced."""
    if jobs < 1 or not timeout > 0:
        raise ValueError(f"need jobs >= 1 and timeout > 0, got jobs={jobs}, timeout={timeout}")
    todo = list(dict.fromkeys(paths))
    todo.reverse()  # pop() from the end keeps the listed order
    total = len(todo)
    context = worker_context()
    workers = [_Worker(context) for _ in range(min(jobs, total))]
    results: dict[str, VideoCheck] = {}
    with tqdm(total=total, unit="video", disable=not progress) as bar:
        try:
            while len(results) < total:
                for worker in workers:
                    if worker.path is None and todo:
                        worker.submit(todo.pop(), timeout)
                busy = [w for w in workers if w.path is not None]
                ready = wait(
                    [w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - time.monotonic())
                )
                for i, worker in enumerate(workers):
                    if worker.path is None:
                        continue
                    if worker.conn in ready:
                        try:
                            check = worker.conn.recv()
                        except EOFError:
                            worker.kill()
                            check = VideoCheck(
                                worker.path,
                                "unreadable",
                                f"the decoder crashed (exit code {worker.process.exitcode})",
                            )
                            workers[i] = _Worker(context)
                    elif time.monotonic() >= worker.deadline:
                        worker.kill()
                        check = VideoCheck(
                            worker.path, "unreadable", f"timed out after {timeout:g} s", seconds=timeout
                        )
                        workers[i] = _Worker(context)
                    else:
                        continue
                    results[worker.path] = check
                    worker.path = None
                    bar.update()
        finally:
            for worker in workers:
                worker.stop()
    return results


# --------------------------------------------------------------------------- whole dataset


def summarize(checks: Sequence[VideoCheck]) -> str:
    """``"N videos: K ok, U unreadable, P partial"``."""
    counts = {status: sum(c.status == status for c in checks) for status in STATUSES}
    return f"{len(checks)} videos: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)


def validate_dataset(
    annotations: str | Path,
    format: str = "list",
    root: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    jobs: int = 1,
    timeout: float = 60.0,
    report: str | Path | None = None,
    clean: str | Path | None = None,
    progress: bool = False,
    **format_kwargs,
) -> list[tuple[VideoRecord, VideoCheck]]:
    """Check every video ``annotations`` lists (see :func:`read_annotations` for ``format``,
    ``root``, ``classes``, ``format_kwargs``). Writes ``report`` (JSON: summary and one
    entry per listed video, in file order) and ``clean`` (the annotation file with only
    the ok videos, see :func:`filter_annotations`) when given."""
    records = read_annotations(annotations, format, root=root, classes=classes, **format_kwargs)
    checks = check_videos([r.path for r in records], jobs=jobs, timeout=timeout, progress=progress)
    results = [(record, checks[record.path]) for record in records]
    if report is not None:
        summary = {"videos": len(results)} | {s: sum(c.status == s for _, c in results) for s in STATUSES}
        videos = [{"line": record.meta.get("line"), **asdict(check)} for record, check in results]
        document = {"annotations": str(annotations), "format": format, "summary": summary, "videos": videos}
        Path(report).write_text(json.dumps(document, indent=1) + "\n")
    if clean is not None:
        filter_annotations(annotations, format, [r for r, c in results if c.status != "ok"], clean)
    return results
