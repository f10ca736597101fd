"""Re-encode a video dataset for fast, exact reads in training (``tools/prepare_videos.py``).

Every video file under ``src_dir`` becomes ``dst_dir/<same relative path>.mp4``:

* H.264 (libx264, yuv420p, CRF ``crf``, x264 ``tune`` if given) in MP4, video only (audio
  is dropped);
* a keyframe exactly every ``gop`` frames (x264 ``keyint = min-keyint = gop``, no scene-cut
  keyframes), so decoding any clip starts at most ``gop - 1`` frames early;
* the short side scaled to ``short_side`` and never up (upscaling adds no information,
  only bytes; smaller videos keep their size), non-square pixels made square, both sides
  rounded to even numbers as yuv420p requires;
* a constant ``fps``: output frame ``k`` is the source frame on screen at time ``k / fps``
  (the last one whose timestamp, as the project's reader gives it, is ``<= k / fps``), so
  frames are dropped or repeated, never blended. The output lasts as long as the source
  (last timestamp plus one source frame interval), rounded to whole output frames.

Two named formats (:data:`FORMATS`) set all of these at once: ``standard`` (the defaults:
short side 320, GOP 16) and ``fast``, the one that costs a training worker the least CPU
per clip (every frame a keyframe at short side 256, x264 ``tune=fastdecode``: no CABAC, no
deblocking), for about 2.2 times the bytes of ``standard`` on Kinetics-like clips. Both are
read by the project's reader like any other file; on all-intra files PyAV's (and
torchcodec's) seeks cost a third of decord's, see ``docs/PERFORMANCE.md``.

Sources that :func:`~videocls.data.validate.check_video` finds unreadable or partial are not
re-encoded: a damaged file would come out looking whole. They, and outputs that do not read
back with every frame, are listed in ``dst_dir/failures.tsv`` (``src``, ``reason``).
Outputs are written to a ``.part`` file and renamed when complete; an output that exists and
opens with the project's reader is skipped, so an interrupted run resumes where it stopped
(delete ``dst_dir`` to re-encode with other settings).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.frame import PictureType
from av.video.reformatter import Interpolation
from tqdm import tqdm

from videocls.data.dataset import BAD_VIDEO_ERRORS
from videocls.data.io.reader import open_video
from videocls.data.validate import check_video, keeps, worker_context

__all__ = [
    "VIDEO_EXTENSIONS",
    "X264_TUNES",
    "EncodeSettings",
    "FORMATS",
    "PrepareError",
    "X264_PRESETS",
    "find_videos",
    "output_size",
    "prepare_video",
    "prepare_videos",
]

VIDEO_EXTENSIONS = frozenset(
    {".3gp", ".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ogv", ".webm", ".wmv"}
)
FAILURES_FILE = "failures.tsv"
#: libx264's speed/size presets; any other name makes every encode fail.
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)
#: libx264's tunings (``fastdecode`` trades bytes for decoding speed).
X264_TUNES = ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency")


@dataclass(frozen=True)
class EncodeSettings:
    short_side: int = 320
    fps: float = 30.0
    gop: int = 16
    crf: int = 23
    preset: str = "medium"
    tune: str | None = None

    def __post_init__(self) -> None:
        if self.short_side < 2 or not self.fps > 0 or self.gop < 1:
            raise ValueError(f"need short_side >= 2, fps > 0 and gop >= 1, got {self}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"unknown x264 preset {self.preset!r}; choose one of {', '.join(X264_PRESETS)}")
        if self.tune is not None and self.tune not in X264_TUNES:
            raise ValueError(f"unknown x264 tune {self.tune!r}; choose one of {', '.join(X264_TUNES)}")


#: Named formats (``tools/prepare_videos.py --format``); see the module docstring.
FORMATS = {
    "standard": EncodeSettings(),
    "fast": EncodeSettings(short_side=256, gop=1, tune="fastdecode"),
}


class PrepareError(RuntimeError):
    """A source that cannot be prepared; the message says why."""


def find_videos(src_dir: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """Paths (relative to ``src_dir``, sorted) of the files with a video extension below it,
    leaving out anything under ``exclude``."""
    src_dir = Path(src_dir)
    exclude = Path(exclude).resolve() if exclude is not None else None
    found = []
    for folder, dirs, files in os.walk(src_dir):
        if exclude is not None and Path(folder).resolve().is_relative_to(exclude):
            dirs.clear()
            continue
        found += [
            Path(folder, f).relative_to(src_dir) for f in files if Path(f).suffix.lower() in VIDEO_EXTENSIONS
        ]
    return sorted(found)


def output_size(width: float, height: float, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled down to ``short_side`` (never up), the
    aspect ratio kept and both rounded to the nearest even number (at least 2) that does
    not exceed the source."""
    scale = min(1.0, short_side / min(width, height))

    def even(x: float) -> int:
        return max(2, min(2 * int(x * scale / 2 + 0.5), 2 * int(x / 2)))

    return even(width), even(height)


def _repeats(timestamps: np.ndarray, source_fps: float, fps: float) -> np.ndarray:
    """How many times each source frame appears in the output (see the module docstring)."""
    length = timestamps[-1] + 1 / source_fps
    wanted = np.arange(max(1, round(length * fps))) / fps
    shown = np.searchsorted(timestamps, wanted + 1e-9, side="right") - 1
    return np.bincount(np.maximum(shown, 0), minlength=len(timestamps))


def _encode(src: Path, dst: Path, settings: EncodeSettings) -> int:
    """Write ``src`` re-encoded to ``dst`` (an MP4 whatever its name); returns the frame count."""
    with open_video(src) as reader:
        repeats = _repeats(reader.get_timestamps(range(len(reader))).numpy(), reader.fps, settings.fps)
    rate = Fraction(settings.fps).limit_denominator(1001)
    written = 0
    with av.open(str(src)) as source, av.open(str(dst), mode="w", format="mp4") as output:
        decoder = source.streams.video[0]
        decoder.codec_context.thread_count = 1
        aspect = decoder.sample_aspect_ratio or 1
        width, height = output_size(decoder.width * float(aspect), decoder.height, settings.short_side)
        encoder = output.add_stream("libx264", rate=rate)
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.codec_context.thread_count = 1
        encoder.options = {
            "crf": str(settings.crf),
            "preset": settings.preset,
            "threads": "1",
            **({"tune": settings.tune} if settings.tune else {}),
            "x264-params": f"keyint={settings.gop}:min-keyint={settings.gop}:scenecut=0",
        }
        for frame, repeat in zip(source.decode(decoder), repeats.tolist()):
            if not repeat:
                continue
            image = frame.reformat(width, height, "yuv420p", interpolation=Interpolation.AREA)
            image.time_base = 1 / rate  # pts count output frames
            image.pict_type = PictureType.NONE  # a source keyframe would force one here
            for _ in range(repeat):
                image.pts = written
                output.mux(encoder.encode(image))
                written += 1
        output.mux(encoder.encode())
    if written != repeats.sum():
        raise PrepareError(f"the source decoded short: {written} of {repeats.sum()} output frames written")
    return written


def _reads_back(path: Path) -> int:
    """Frames the project's reader finds in ``path`` (0: it cannot open it)."""
    try:
        with open_video(path) as reader:
            return len(reader)
    except BAD_VIDEO_ERRORS:
        return 0


def prepare_video(src: str | Path, dst: str | Path, settings: EncodeSettings = EncodeSettings()) -> str:
    """Re-encode ``src`` to ``dst``: ``"encoded"``, or ``"skipped"`` when ``dst`` already
    reads back. Raises :class:`PrepareError` when ``src`` cannot be prepared."""
    src, dst = Path(src), Path(dst)
    if dst.is_file() and _reads_back(dst):
        return "skipped"
    check = check_video(str(src))
    if not keeps(check):  # a partial source that lost a frame or two is re-encoded from what decodes
        raise PrepareError(f"source {check.status}: {check.reason}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    try:
        written = _encode(src, part, settings)
        os.replace(part, dst)
    except (*BAD_VIDEO_ERRORS, av.FFmpegError) as error:
        raise PrepareError(f"encoding failed: {error}") from error
    finally:
        part.unlink(missing_ok=True)
    found = _reads_back(dst)
    if found != written:
        dst.unlink()
        raise PrepareError(f"the output does not read back: {written} frames written, {found} decode")
    return "encoded"


def _prepare_one(src: Path, dst: Path, settings: EncodeSettings) -> tuple[str, str | None]:
    """(outcome, reason): ``prepare_video`` with its failure turned into a value."""
    try:
        return prepare_video(src, dst, settings), None
    except PrepareError as error:
        return "failed", str(error)


def _init_worker() -> None:
    torch.set_num_threads(1)  # -j processes share the cores


def prepare_videos(
    src_dir: str | Path,
    dst_dir: str | Path,
    settings: EncodeSettings = EncodeSettings(),
    jobs: int = 1,
    progress: bool = False,
) -> dict[str, int]:
    """Re-encode every video under ``src_dir`` into ``dst_dir`` in ``jobs`` processes (see
    the module docstring); writes ``dst_dir/failures.tsv`` and returns the number of videos
    ``encoded``, ``skipped`` (already done) and ``failed``."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: source folder not found")
    dst_dir.mkdir(parents=True, exist_ok=True)
    tasks, sources, failures = {}, {}, {}
    for relative in find_videos(src_dir, exclude=dst_dir):
        src, dst = src_dir / relative, (dst_dir / relative).with_suffix(".mp4")
        if dst in sources:
            failures[src] = f"its output {dst} is also the output of {sources[dst]}"
        else:
            tasks[src], sources[dst] = dst, src
    counts = Counter(failed=len(failures))
    with tqdm(total=len(tasks), unit="video", disable=not progress) as bar:

        def record(src: Path, outcome: str, reason: str | None) -> None:
            counts[outcome] += 1
            if reason is not None:
                failures[src] = reason
            bar.update()

        if jobs == 1:
            for src, dst in tasks.items():
                record(src, *_prepare_one(src, dst, settings))
        else:
            with ProcessPoolExecutor(jobs, mp_context=worker_context(), initializer=_init_worker) as pool:
                futures = {pool.submit(_prepare_one, src, dst, settings): src for src, dst in tasks.items()}
                for future in as_completed(futures):
                    record(futures[future], *future.result())
    rows = [f"{src}\t{' '.join(reason.split())}\n" for src, reason in sorted(failures.items())]
    (dst_dir / FAILURES_FILE).write_text("src\treason\n" + "".join(rows))
    return {key: counts[key] for key in ("encoded", "skipped", "failed")}
