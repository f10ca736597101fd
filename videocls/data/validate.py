# Over ~400 lines on purpose: one command's job (check each file in a killable worker, then
# report and clean); a tenth is the docstring that defines the statuses the tests hold it to.
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

``lost_frames`` says how many frames a partial file lost: the largest shortfall the tests
find (packets minus decoded frames, header count minus span); unknown (``None``) when the
demuxer failed on a file without a header count.

Partial is not unusable: the reader serves the frames that decode, and off-by-one headers
are common in real datasets. :func:`keeps` keeps a partial file whose loss is small, at
most ``max(max_lost_frames, floor(max_lost_fraction * held))`` frames, where ``held`` is
what the container holds (decoded + lost); by default 2 frames or 1%, whichever is more
(``afl-small_movie.mp4`` lost 1 of 12: kept; ``g1.avi`` cut in half lost 13 of 16:
dropped). The clip samplers pad clips longer than the video, so a few missing frames cost
at most a few repeated frames at a clip's end. Unreadable files and files with an unknown
loss are dropped.

Frame folders (when ``open_video`` serves them) have no container: they are ``ok`` or
``unreadable``. Each file is checked in a worker process killed at the time limit, so a
file that hangs the demuxer or crashes a decoder costs one report line, not the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait
from pathlib import Path

import av
import torch
from tqdm import tqdm

from videocls.data.annotations import VideoRecord, filter_annotations, read_annotations
from videocls.data.dataset import BAD_VIDEO_ERRORS
from videocls.data.io import probe_cache
from videocls.data.io.reader import fallback_counts, open_video

__all__ = [
    "STATUSES",
    "VideoCheck",
    "check_video",
    "check_videos",
    "check_outputs",
    "keeps",
    "summarize",
    "validate_dataset",
    "worker_context",
]

STATUSES = ("ok", "unreadable", "partial")
MAX_LOST_FRAMES = 2
MAX_LOST_FRACTION = 0.01


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
    lost_frames: int | None = None  # frames a partial file lost (0 when ok; None: unknown)
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


def _lost(frames: int, container: _Container) -> tuple[list[str], int | None]:
    """The partial tests of the module docstring that fail, as reasons, and the frames lost."""
    reasons, lost = [], 0
    if frames < container.packets:
        reasons.append(f"{container.packets} packets carry data but {frames} frames decode")
        lost = container.packets - frames
    if container.header_frames and container.span is not None and container.header_frames > container.span:
        reasons.append(
            f"the header counts {container.header_frames} frames but the packets span {container.span}"
        )
        lost = max(lost, container.header_frames - container.span)
    if container.demux_error is not None:
        reasons.append(f"the demuxer failed before the end ({container.demux_error})")
        if not container.header_frames:
            lost = None  # nothing says how much of the file came after the failure
    return reasons, lost


def keeps(
    check: VideoCheck, max_lost_frames: int = MAX_LOST_FRAMES, max_lost_fraction: float = MAX_LOST_FRACTION,
) -> bool:
    """Whether a clean annotation file keeps this video: ok, or partial with a known loss
    of at most ``max(max_lost_frames, floor(max_lost_fraction * held))`` frames (see the
    module docstring)."""
    if check.status == "ok":
        return True
    if check.status != "partial" or check.lost_frames is None or check.frames is None:
        return False
    held = check.frames + check.lost_frames
    return check.lost_frames <= max(max_lost_frames, int(max_lost_fraction * held))


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
    lost, lost_frames = _lost(count, container) if container is not None else ([], 0)
    return VideoCheck(
        path=path,
        status="partial" if lost else "ok",
        reason="; ".join(lost) or None,
        backend=reader.backend,
        frames=count,
        header_frames=container.header_frames if container else None,
        packets=container.packets if container else None,
        lost_frames=lost_frames,
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
    probe_cache.preload()  # once here, not in every worker
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


def summarize(checks: Sequence[VideoCheck], kept: Sequence[bool] | None = None) -> str:
    """``"N videos: K ok, U unreadable, P partial"``, and with ``kept`` (one flag per check,
    see :func:`keeps`) ``" (Q kept, R dropped)"`` after the partial count."""
    counts = {status: sum(c.status == status for c in checks) for status in STATUSES}
    line = f"{len(checks)} videos: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    if kept is not None:
        partial_kept = sum(k for c, k in zip(checks, kept, strict=True) if c.status == "partial")
        line += f" ({partial_kept} kept, {counts['partial'] - partial_kept} dropped)"
    return line


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(annotations: str | Path, report: str | Path | None, clean: str | Path | None) -> None:
    """Refuse, before any video is checked, output paths that would destroy the input or
    cannot be written: raises ``ValueError`` naming the option and the path."""
    annotations = Path(annotations)
    named = (("--report", report), ("--clean", clean))
    outputs = {name: Path(path) for name, path in named if path is not None}
    for name, path in outputs.items():
        if _same_file(path, annotations):
            raise ValueError(f"{name} {path} is the annotation file being checked; write it elsewhere")
    if len(outputs) == 2 and _same_file(outputs["--report"], outputs["--clean"]):
        raise ValueError(f"--report and --clean are the same file {outputs['--clean']}")
    for name, path in outputs.items():
        if path.is_dir():
            raise ValueError(f"{name} {path} is a directory; give a file name")
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise ValueError(f"{name} {path} is not a regular file")
        parent = path.parent
        if not parent.is_dir():
            raise ValueError(f"{name} {path}: directory {parent} does not exist")
        try:  # the outputs are written by replacing a temporary file in the same directory
            with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".tmp"):
                pass
        except OSError as error:
            reason = error.strerror or error
            raise ValueError(f"{name} {path}: cannot write in {parent} ({reason})") from error


@contextmanager
def _replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds, so a
    failure leaves the old file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    max_lost_frames: int = MAX_LOST_FRAMES,
    max_lost_fraction: float = MAX_LOST_FRACTION,
    num_classes: int | None = None,
    **format_kwargs,
) -> list[tuple[VideoRecord, VideoCheck, bool]]:
    """Check every video ``annotations`` lists (see :func:`read_annotations` for ``format``,
    ``root``, ``classes``, ``num_classes``, ``format_kwargs``). Returns ``(record, check, kept)`` in file
    order, ``kept`` by :func:`keeps` with ``max_lost_frames`` and ``max_lost_fraction``.
    Writes ``report`` (JSON: summary and one entry per listed video, with ``kept`` and
    ``lost_frames``) and ``clean`` (the annotation file with only the kept videos, see
    :func:`filter_annotations`) when given. Output paths are checked before any work
    (:func:`check_outputs`)."""
    if max_lost_frames < 0 or not 0 <= max_lost_fraction <= 1:
        raise ValueError(
            f"need max_lost_frames >= 0 and 0 <= max_lost_fraction <= 1, "
            f"got {max_lost_frames} and {max_lost_fraction}"
        )
    check_outputs(annotations, report, clean)
    records = read_annotations(
        annotations, format, root=root, classes=classes, num_classes=num_classes, **format_kwargs
    )
    checks = check_videos([r.path for r in records], jobs=jobs, timeout=timeout, progress=progress)
    results = [
        (record, checks[record.path], keeps(checks[record.path], max_lost_frames, max_lost_fraction))
        for record in records
    ]
    if report is not None:
        summary = {"videos": len(results)} | {s: sum(c.status == s for _, c, _ in results) for s in STATUSES}
        summary["kept_partial"] = sum(k for _, c, k in results if c.status == "partial")
        summary["dropped"] = sum(not k for _, _, k in results)
        videos = [{"line": r.meta.get("line"), **asdict(c), "kept": k} for r, c, k in results]
        document = {
            "annotations": str(annotations),
            "format": format,
            "max_lost_frames": max_lost_frames,
            "max_lost_fraction": max_lost_fraction,
            "summary": summary,
            "videos": videos,
        }
        with _replacing(report) as tmp:
            tmp.write_text(json.dumps(document, indent=1) + "\n")
    if clean is not None:
        with _replacing(clean) as tmp:
            filter_annotations(annotations, format, [r for r, _, kept in results if not kept], tmp)
    return results
