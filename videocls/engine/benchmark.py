"""Throughput of the training step and of the data pipeline, each against pytorchvideo's.

``benchmark_model`` times forward + backward + SGD step of a registered model and, for the
ResNet families, of pytorchvideo's hub model of the same architecture on the same input.
``benchmark_data`` times three loaders over the same files with the same worker count:
videocls's training pipeline, pytorchvideo's ``LabeledVideoDataset`` (PyAV decoder, same clip
duration, same transforms) and the decode-only floor (decord fetching the sampled frames).
``benchmark_pipeline`` runs real training steps of a composed config twice, fed by the real
loader and by the same batches held in memory: the gap is the data stall, what more workers
(or cores) would buy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from videocls.data.annotations import VideoRecord
from videocls.data.datamodule import model_input
from videocls.data.dataset import VideoClipDataset
from videocls.data.io.access import VideoDecodeError
from videocls.data.io.reader import open_video
from videocls.data.loader import build_loader
from videocls.data.sampling import ClipSampler
from videocls.data.transforms import ClipTransform
from videocls.engine.runtime import Runtime
from videocls.models import create_model, get_model_config
from videocls.models.complexity import example_input

#: Models whose pytorchvideo hub builder (same name) has the same architecture.
PYTORCHVIDEO_REFERENCES = frozenset({"c2d_r50", "i3d_r50", "slow_r50", "slowfast_r50", "slowfast_r101",
                                     "x3d_xs", "x3d_s", "x3d_m", "x3d_l"})
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class Throughput:
    name: str
    clips_per_s: float
    peak_memory_mb: float | None = None  # CUDA only

    def row(self) -> str:
        memory = f"{self.peak_memory_mb:10.0f}" if self.peak_memory_mb is not None else f"{'-':>10}"
        return f"{self.name:<28} {self.clips_per_s:10.1f} {memory}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_steps(
    name: str, model: nn.Module, inputs, *, runtime: Runtime, steps: int = 20, warmup: int = 5
) -> Throughput:
    """Clips/s of ``steps`` forward + backward + SGD steps after ``warmup`` untimed ones, on
    ``runtime``'s device, precision and memory format (the same autocast as training)."""
    device = runtime.device
    model = model.to(device).train()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    inputs = runtime.to_device(inputs)
    batch = (inputs[0] if isinstance(inputs, list) else inputs).shape[0]
    target = torch.zeros(batch, dtype=torch.long, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        with runtime.autocast():
            # A fresh list each step: pytorchvideo's multi-pathway blocks overwrite their input list.
            loss = F.cross_entropy(model(list(inputs) if isinstance(inputs, list) else inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Throughput(name, steps * batch / elapsed, peak)


def pytorchvideo_reference(name: str) -> nn.Module:
    """pytorchvideo's hub model with the same architecture (random weights, 400 classes)."""
    from pytorchvideo.models import hub

    return getattr(hub, name)(pretrained=False)


def benchmark_model(
    name: str, *, batch_size: int, runtime: Runtime, steps: int = 20, warmup: int = 5, reference: bool = True
) -> list[Throughput]:
    """Our model (and pytorchvideo's, where one exists) at the recipe's clip size, 224 crops."""
    config = get_model_config(name)
    one = example_input(config, (config.num_frames, config.crop_size, config.crop_size))
    inputs = [x.repeat(batch_size, 1, 1, 1, 1) for x in one] if isinstance(one, list) else one.repeat(
        batch_size, 1, 1, 1, 1
    )
    results = []
    torch.manual_seed(0)
    results.append(
        time_training_steps(f"videocls {name}", create_model(name), inputs, runtime=runtime, steps=steps,
                            warmup=warmup)
    )
    if reference and name in PYTORCHVIDEO_REFERENCES:
        torch.manual_seed(0)
        results.append(
            time_training_steps(f"pytorchvideo {name}", pytorchvideo_reference(name), inputs, runtime=runtime,
                                steps=steps, warmup=warmup)
        )
    return results


# --------------------------------------------------------------------------- data


class _DecodeOnly(Dataset):
    """The floor: decord opens the file and fetches the sampled frames; nothing else."""

    def __init__(self, paths: Sequence[str], sampler: ClipSampler, seed: int = 0) -> None:
        self.paths, self.sampler, self.seed = list(paths), sampler, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        import decord

        reader = decord.VideoReader(self.paths[index], num_threads=1)
        rng = np.random.default_rng([self.seed, index])
        indices = self.sampler(len(reader), reader.get_avg_fps(), train=True, rng=rng)
        return torch.from_numpy(reader.get_batch(indices.tolist()).asnumpy())


def readable_videos(folder: str | Path, decord_only: bool = False) -> tuple[list[str], list[str]]:
    """Files in ``folder`` that both the public reader and decord open (the floor needs decord),
    and, with ``decord_only``, that decord serves frame-accurately; and the ones left out, why."""
    import decord

    kept, left_out = [], []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix.lower() in {".tsv", ".txt", ".md", ".json", ".csv"}:
            continue
        try:
            reader = open_video(path)
        except VideoDecodeError as error:
            left_out.append(f"{path.name}: {error}")
            continue
        try:
            decord.VideoReader(str(path), num_threads=1).get_batch([0]).asnumpy()
        except decord.DECORDError:
            left_out.append(f"{path.name}: decord cannot read it, so it has no decode-only floor")
            continue
        if decord_only and reader.backend != "decord":
            left_out.append(f"{path.name}: served by PyAV (decord is not frame-accurate on it)")
            continue
        kept.append(str(path))
    return kept, left_out


def _clips_per_s(
    batches: Iterable, count: Callable[[object], int], *, num_clips: int, warmup_clips: int
) -> float:
    """Clips/s over ``num_clips`` clips, timed after the first ``warmup_clips`` (worker start-up)."""
    seen, start = 0, None
    for batch in batches:
        seen += count(batch)
        if start is None and seen >= warmup_clips:
            start, seen = time.perf_counter(), 0
        elif start is not None and seen >= num_clips:
            break
    if start is None or seen == 0:
        raise RuntimeError("the loader ran out of clips before timing began; raise --clips or add videos")
    return seen / (time.perf_counter() - start)


def _repeat(make_loader: Callable[[int], Iterable], epochs: int):
    for epoch in range(epochs):
        yield from make_loader(epoch)


def benchmark_data(
    paths: Sequence[str],
    *,
    num_frames: int = 8,
    sampling_rate: int = 8,
    crop_size: int = 224,
    num_workers: int = 1,
    num_clips: int = 200,
    warmup_clips: int = 10,
    reference: bool = True,
    target_fps: float = 30.0,
) -> list[Throughput]:
    """Clips/s of the three loaders over ``paths`` (batch 1, ``num_workers`` workers each)."""
    sampler = ClipSampler(num_frames, sampling_rate)
    epochs = -(-(num_clips + warmup_clips) // len(paths)) + 1
    transform = ClipTransform(crop_size=crop_size, min_short_side=256, max_short_side=320, mean=KINETICS_MEAN,
                              std=KINETICS_STD, train=True)
    ours = VideoClipDataset([VideoRecord(p, 0) for p in paths], sampler, transform, train=True)

    def our_loader(epoch: int):
        ours.set_epoch(epoch)
        return build_loader(ours, 1, num_workers, train=True, seed=epoch)

    def timed(batches: Iterable, count: Callable[[object], int]) -> float:
        return _clips_per_s(batches, count, num_clips=num_clips, warmup_clips=warmup_clips)

    floor = _DecodeOnly(paths, sampler)
    results = [
        Throughput("videocls", timed(_repeat(our_loader, epochs), lambda b: len(b["video"]))),
        Throughput("decode-only floor (decord)", timed(
            _repeat(lambda e: DataLoader(floor, batch_size=1, shuffle=True, num_workers=num_workers), epochs),
            len)),
    ]
    if reference:
        clip_seconds = num_frames * sampling_rate / target_fps
        dataset = _pytorchvideo_dataset(paths, num_frames=num_frames, clip_seconds=clip_seconds,
                                        crop_size=crop_size)
        loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
        results.append(Throughput("pytorchvideo (PyAV)", timed(_repeat(lambda e: loader, epochs),
                                                               lambda b: len(b["video"]))))
    return results


def _pytorchvideo_dataset(paths: Sequence[str], *, num_frames: int, clip_seconds: float, crop_size: int):
    """pytorchvideo's Kinetics training pipeline: random clip, uniform subsample, scale jitter, crop."""
    import videocls.compat  # noqa: F401  (before any pytorchvideo transform)

    # isort: split
    from pytorchvideo.data import LabeledVideoDataset, make_clip_sampler
    from pytorchvideo.transforms import (
        ApplyTransformToKey,
        Normalize,
        RandomShortSideScale,
        UniformTemporalSubsample,
    )
    from torchvision.transforms import Compose, Lambda, RandomCrop

    transform = ApplyTransformToKey(
        "video",
        Compose([
            UniformTemporalSubsample(num_frames),
            Lambda(lambda x: x / 255.0),
            Normalize(KINETICS_MEAN, KINETICS_STD),
            RandomShortSideScale(256, 320),
            RandomCrop(crop_size),
        ]),
    )
    return LabeledVideoDataset(
        [(p, {"label": 0}) for p in paths],
        make_clip_sampler("random", clip_seconds),
        video_sampler=torch.utils.data.RandomSampler,
        transform=transform,
        decode_audio=False,
        decoder="pyav",
    )


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class PipelineResult:
    """Training steps fed by the real loader against the same batches already in memory."""

    steps: int
    clips_per_step: int
    loader_clips_per_s: float
    preloaded_clips_per_s: float
    data_wait_frac: float  # share of the loader run's wall time spent waiting for a batch

    @property
    def fed_ratio(self) -> float:
        """Loader-fed speed over pre-loaded speed: 1.0 means the data pipeline never stalls."""
        return self.loader_clips_per_s / self.preloaded_clips_per_s

    def report(self) -> str:
        return "\n".join([
            f"{'training steps fed by':<28} {'clips/s':>10}",
            f"{'the loader':<28} {self.loader_clips_per_s:10.2f}",
            f"{'batches in memory':<28} {self.preloaded_clips_per_s:10.2f}",
            f"ratio loader / in memory: {self.fed_ratio:.2f}",
            f"data wait fraction: {self.data_wait_frac:.2f}",
        ])


def _timed_steps(step: Callable[[dict], None], batches: Iterable[dict], *, steps: int, warmup: int):
    """Run ``warmup + steps`` steps; return (clips, seconds, seconds waiting for batches)
    of the timed ones."""
    clips, waited, start = 0, 0.0, None
    iterator = iter(batches)
    for index in range(warmup + steps):
        if index == warmup:
            start = time.perf_counter()
        before = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            raise RuntimeError(f"the loader gave {index} batches, fewer than the {warmup + steps} asked for; "
                               "lower --steps or use more videos") from None
        if start is not None:
            waited += time.perf_counter() - before
            clips += len(batch["label"])
        step(batch)
    return clips, time.perf_counter() - start, waited


def benchmark_pipeline(cfg, *, steps: int = 20, warmup: int = 3, device: str = "cpu") -> PipelineResult:
    """Real training steps (forward, loss, backward, optimiser step) of ``cfg``'s model on its
    training split, first fed by its own loader (``data.num_workers`` workers), then by the same
    batches pre-loaded; ``cfg`` is a composed ``configs/train.yaml``, as ``tools/train.py`` sees it."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    # The run's precision and memory format, as the trainer would use them, on the device asked for.
    runtime = Runtime.from_config(cfg.trainer, torch.device(device))
    data = instantiate(cfg.data)
    data.prepare()
    model = instantiate(cfg.model).to(runtime.device).train()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    dataset = data.dataset("train", train=True, **model_input(model), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(batch: dict) -> None:
        with runtime.autocast():
            video, label = runtime.to_device(batch["video"]), batch["label"].to(runtime.device)
            loss = F.cross_entropy(model(video), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def loader():
        """Epoch after epoch, so a small training split still gives every step a batch."""
        for epoch in range(warmup + steps):
            dataset.set_epoch(epoch)
            yield from build_loader(dataset, data.batch_size, data.num_workers, train=True, seed=epoch)

    clips, seconds, waited = _timed_steps(step, loader(), steps=steps, warmup=warmup)
    batches = loader()
    in_memory = [batch for _, batch in zip(range(warmup + steps), batches)]
    batches.close()  # ends the loader's workers: none may take cores from the timed steps
    clips_mem, seconds_mem, _ = _timed_steps(step, in_memory, steps=steps, warmup=warmup)
    return PipelineResult(steps=steps, clips_per_step=clips // steps, loader_clips_per_s=clips / seconds,
                          preloaded_clips_per_s=clips_mem / seconds_mem, data_wait_frac=waited / seconds)
