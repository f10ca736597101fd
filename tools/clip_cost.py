"""CPU-seconds a loader worker spends per training clip, on several video folders side by side.

    python tools/clip_cost.py /data/k400/gop16 /data/k400/fast --frames 8 --rate 8 --rounds 6

Each folder is read by the training pipeline's own dataset (``VideoClipDataset``: the public
reader, PySlowFast's random clip sampler, short-side jitter 256-320, random 224 crop,
normalisation) in this process, which plays the part of one loader worker (one torch
thread, decord with one thread). Folders take turns, a block of ``--clips`` items each per
round, so a machine whose speed drifts slows every folder alike; the CPU time of the process
(all its threads, user + system) over each block is divided by its clips. Every file is
opened once before timing, so the one-off probe (cached on disk) is not counted.

Printed per folder: bytes per video, CPU-ms per clip (median over rounds, and min-max),
and how many times fewer CPU-seconds per clip than the first folder, the baseline (median
of the per-round ratios). ``--mode decode`` stops after decoding (no resize, crop or
normalisation); ``--mode gpu`` is the worker's half of ``data.gpu_transforms=true`` (the
parameters drawn and the uint8 region the crop reads shipped: what a worker costs when the
transforms run on the GPU). ``--clips-per-video K`` makes K clips per item from one decode
(``data.clips_per_video``, in every mode; ``--share-frames``: K augmentations of one clip's
frames), and the cost is per clip. Like ``--backend`` and ``--mode`` they take one value for
every folder or one per folder, so arms of one folder can be measured in turns in one run:

    python tools/clip_cost.py FAST FAST FAST --backend pyav --mode gpu \
        --clips-per-video 1 2 2 --share-frames no no yes

A folder holds video files or folders of frame images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from videocls.data.annotations import VideoRecord
from videocls.data.dataset import VideoClipDataset
from videocls.data.gpu_transforms import DeferredTransform
from videocls.data.sampling import ClipSampler
from videocls.data.transforms import ClipTransform
from videocls.models.registry import KINETICS_MEAN, KINETICS_STD

SKIPPED_SUFFIXES = {".tsv", ".txt", ".json", ".csv", ".md", ".part"}


def _entries(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix.lower() not in SKIPPED_SUFFIXES)
    if not found:
        raise SystemExit(f"error: {folder}: no videos (files or frame folders) in it")
    return found


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _uint8_frames(frames: torch.Tensor, rng: np.random.Generator, spatial_idx: int = 1) -> torch.Tensor:
    return frames


def _dataset(paths: list[Path], backend: str, mode: str, *, clips_per_video: int, share_frames: bool,
             args) -> VideoClipDataset:
    cpu = ClipTransform(crop_size=args.crop, min_short_side=256, max_short_side=320, mean=KINETICS_MEAN,
                        std=KINETICS_STD, train=True)
    transform = {"decode": _uint8_frames, "gpu": DeferredTransform(base=cpu), "full": cpu}[mode]
    return VideoClipDataset(
        [VideoRecord(str(p), 0) for p in paths], ClipSampler(args.frames, args.rate), transform, train=True,
        backend=backend, max_retries=0, clips_per_video=clips_per_video, share_frames=share_frames,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path, help="folders of videos; the first is the baseline")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rate", type=int, default=8, help="sampling rate (8x8: --frames 8 --rate 8)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--clips", type=int, default=32,
                        help="items per folder and round (K clips each with --clips-per-video K)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", nargs="+", default=["auto"], choices=["auto", "decord", "pyav"],
                        help="the reader's backend: one for all folders, or one per folder")
    parser.add_argument("--mode", nargs="+", default=["full"], choices=["full", "gpu", "decode"],
                        help="full: decode + CPU transform; gpu: the worker's half of data.gpu_transforms; "
                             "decode: decoding only; one for all folders, or one per folder")
    parser.add_argument("--clips-per-video", nargs="+", type=int, default=[1],
                        help="clips per item from one decode (data.clips_per_video), one for all folders "
                             "or one per folder; costs are per clip")
    parser.add_argument("--share-frames", nargs="*", choices=["yes", "no"], default=["no"],
                        help="with --clips-per-video: augmentations of one clip's frames "
                             "(data.clips_share_frames); bare: every folder, else yes/no per folder "
                             "(a bare one goes after the folders, or it takes a folder as its value)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a loader worker
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder}: not a folder")
    args.share_frames = args.share_frames or ["yes"]  # a bare --share-frames: every folder
    per_folder = {}
    for option in ("backend", "mode", "clips_per_video", "share_frames"):
        given = getattr(args, option)
        if len(given) not in (1, len(args.folders)):
            parser.error(f"give one --{option.replace('_', '-')} or one per folder ({len(args.folders)})")
        per_folder[option] = given * len(args.folders) if len(given) == 1 else given
    backends, modes, ks = per_folder["backend"], per_folder["mode"], per_folder["clips_per_video"]
    shares = [share == "yes" for share in per_folder["share_frames"]]
    if min(ks) < 1:
        parser.error(f"--clips-per-video must be >= 1, got {min(ks)}")
    entries = [_entries(folder) for folder in args.folders]
    datasets = [_dataset(paths, backend, mode, clips_per_video=k, share_frames=share, args=args)
                for paths, backend, mode, k, share in zip(entries, backends, modes, ks, shares)]
    for dataset in datasets:  # probe every file (or read the cached verdict) before timing
        for index in range(len(dataset)):
            item = dataset[index]
            if item["skipped"]:
                raise SystemExit(f"error: cannot read {item['skipped'][0][0]}: {item['skipped'][0][1]}")
    cost = [[] for _ in datasets]
    for round_ in range(args.rounds):
        for dataset, costs in zip(datasets, cost):
            dataset.set_epoch(round_ + 1)
            start = time.process_time()
            for item in range(args.clips):
                dataset[item % len(dataset)]
            costs.append((time.process_time() - start) / (args.clips * dataset.clips_per_video) * 1000)
    print(f"{args.frames}x{args.rate} clips, {args.crop} crop, {args.rounds} rounds x {args.clips} items "
          "per folder (mode full: decode + CPU train transform; gpu: the worker's half of gpu_transforms; "
          "decode: decode only; clips/item: K from one decode, each sampling its own frames or sharing them)")
    print(f"{'folder':<40} {'backend':>8} {'mode':>6} {'clips/item':>10} {'bytes/video':>12} "
          f"{'CPU-ms/clip':>12} {'min-max':>15} {'first / this':>15}")
    for folder, backend, mode, k, share, paths, costs in zip(args.folders, backends, modes, ks, shares,
                                                             entries, cost):
        fewer = statistics.median(b / c for c, b in zip(costs, cost[0]))
        size = sum(_size(p) for p in paths) / len(paths)
        per_item = str(k) if k == 1 else f"{k}/{'shared' if share else 'own'}"
        print(f"{str(folder):<40} {backend:>8} {mode:>6} {per_item:>10} {size:>12,.0f} "
              f"{statistics.median(costs):>12.1f} {min(costs):>7.1f}-{max(costs):<7.1f} {fewer:>14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
