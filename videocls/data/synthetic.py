"""Writing the built-in temporal dataset: H.264 files, the split CSVs, ``meta.json``, label noise.

What a video shows (the ten classes, five time-reversed pairs, and why only motion tells
them apart) is drawn by :mod:`videocls.data.synthetic_motion`; this module encodes those
frames and lays out the dataset so that :func:`generate_dataset` is the same, byte for
byte, whatever the order or the number of threads that generate it.
"""

from __future__ import annotations

import json
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from videocls.data.synthetic_motion import CLASSES, render_video, sample_spec

__all__ = [
    "DATASET_GOP",
    "GENERATOR_VERSION",
    "NOISE_FILE",
    "flip_labels",
    "generate_dataset",
    "long_tailed_counts",
    "write_video",
]

#: Bumped whenever the same seed would give different videos (a change to the drawing in
#: :mod:`videocls.data.synthetic_motion` or to the encoding here); stored in ``meta.json``.
GENERATOR_VERSION = 5

SPLITS = ("train", "val")
CRF = 18


def write_video(frames: np.ndarray, path: str | Path, fps: int, gop: int = 16) -> None:
    """Encode RGB frames as H.264 (libx264, yuv420p, CRF 18) in an MP4, byte-identically per input.

    One encoder thread keeps the bitstream deterministic and lets several videos be encoded
    side by side; a keyframe every ``gop`` frames keeps random access cheap for samplers.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 frames T x H x W x 3, got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even height and width, got {height}x{width}")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(CRF), "preset": "veryfast", "threads": "1"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


#: Keyframe interval of the built-in videos. All-intra: a clip's 8 frames spread over the whole
#: video each decode on their own, about 25% faster than with GOP 2 and 2.5x faster than with
#: GOP 8 (decord), which is most of the CPU demo's time (real datasets use 16,
#: see tools/prepare_videos.py).
DATASET_GOP = 1

#: The flipped training labels of a dataset made with ``label_noise`` (see :func:`generate_dataset`).
NOISE_FILE = "train_noise.csv"


def _make_video(seed: int, split: str, index: int, label: int, path: Path) -> None:
    spec = sample_spec(seed, split, index, label)
    write_video(render_video(spec), path, spec.fps, gop=DATASET_GOP)


def _meta(seed: int, train_per_class: int, val_per_class: int, label_noise: float, imbalance: float) -> dict:
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "classes": list(CLASSES),
    }
    # Only when used: the default dataset's meta.json stays byte-identical to earlier versions.
    if label_noise:
        meta["label_noise"] = label_noise
    if imbalance != 1:
        meta["imbalance"] = imbalance
    return meta


def long_tailed_counts(per_class: int, imbalance: float, num_classes: int = len(CLASSES)) -> list[int]:
    """Videos per class of a long-tailed split: ``per_class * imbalance ** (-c / (C - 1))``,
    rounded, at least 1; class 0 keeps ``per_class``, the last ``per_class / imbalance``."""
    if imbalance < 1:
        raise ValueError(f"imbalance is a ratio of the largest to the smallest class, >= 1; got {imbalance}")
    return [max(1, round(per_class * imbalance ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def flip_labels(labels: list[int], fraction: float, seed: int,
                num_classes: int = len(CLASSES)) -> tuple[list[int], list[int]]:
    """``(given_labels, flipped_rows)``: exactly ``round(fraction * len(labels))`` rows, drawn
    from ``seed`` alone, get a label drawn uniformly from the other classes."""
    if not 0 <= fraction < 1:
        raise ValueError(f"label noise is the fraction of training labels to flip, in [0, 1); got {fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"label_noise")]))
    count = round(fraction * len(labels))
    rows = sorted(int(i) for i in rng.choice(len(labels), size=count, replace=False))
    given = list(labels)
    for row in rows:
        given[row] = (labels[row] + int(rng.integers(1, num_classes))) % num_classes
    return given, rows


def generate_dataset(
    root: str | Path,
    seed: int = 0,
    train_per_class: int = 32,
    val_per_class: int = 10,
    workers: int = 2,
    *,
    label_noise: float = 0.0,
    imbalance: float = 1.0,
) -> Path:
    """Write the dataset under ``root`` and return ``root``; a no-op if it is already complete.

    Layout: ``classes.txt``, ``train.csv`` / ``val.csv`` (``videos/<split>/NNNNN.mp4,label``,
    labels interleaved so every prefix is balanced), ``videos/<split>/*.mp4``, and
    ``meta.json`` written last: a dataset without it, or with other parameters, is
    regenerated from scratch.

    ``imbalance`` R > 1 makes the training split long-tailed (:func:`long_tailed_counts`: the
    same videos as the balanced split, the first ``n_c`` of each class). ``label_noise`` p > 0
    flips ``round(p * N)`` training labels (:func:`flip_labels`; the videos show their true
    class) and lists them in ``train_noise.csv`` (``path,true_label,given_label``). Validation
    labels are never changed.
    """
    root = Path(root)
    if train_per_class < 1 or val_per_class < 1 or workers < 1:
        raise ValueError(f"need positive counts, got {train_per_class=} {val_per_class=} {workers=}")
    meta = _meta(seed, train_per_class, val_per_class, label_noise, imbalance)
    kept = long_tailed_counts(train_per_class, imbalance)
    if not 0 <= label_noise < 1:
        raise ValueError(f"label_noise is the fraction of training labels to flip, in [0, 1); "
                         f"got {label_noise}")
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return root
        except json.JSONDecodeError:
            pass
    ours = {"classes.txt", "meta.json", "videos", NOISE_FILE} | {f"{split}.csv" for split in SPLITS}
    if root.exists():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in ours)
        if foreign:
            raise FileExistsError(f"{root}: holds {foreign[:3]}, not a synthetic dataset; not writing there")
    meta_path.unlink(missing_ok=True)
    shutil.rmtree(root / "videos", ignore_errors=True)
    (root / NOISE_FILE).unlink(missing_ok=True)

    jobs = []
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        (root / "videos" / split).mkdir(parents=True)
        rows = []
        for index in range(per_class * len(CLASSES)):
            label = index % len(CLASSES)
            if split == "train" and index // len(CLASSES) >= kept[label]:
                continue
            relative = f"videos/{split}/{index:05d}.mp4"
            rows.append((relative, label))
            jobs.append((seed, split, index, label, root / relative))
        given = [label for _, label in rows]
        if split == "train" and label_noise:
            given, flipped = flip_labels(given, label_noise, seed)
            (root / NOISE_FILE).write_text("path,true_label,given_label\n" + "".join(
                f"{rows[i][0]},{rows[i][1]},{given[i]}\n" for i in flipped))
        lines = [f"{relative},{label}\n" for (relative, _), label in zip(rows, given)]
        (root / f"{split}.csv").write_text("".join(lines))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))

    # Threads, not processes: the numpy array maths and the libx264/swscale calls release
    # the GIL, and threads start at no cost (a process would import the whole package).
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(_make_video, *job) for job in jobs]:
            future.result()

    meta_path.write_text(json.dumps(meta, indent=2) + "\n")  # cut short, it no longer parses
    return root
