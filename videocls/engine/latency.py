"""Latency of one decision at batch 1: what a live deployment (``tools/predict.py --stream``)
is sized by, for the PyTorch model at each precision and for an export (``tools/export.py``).

:func:`time_calls` is the one timing loop (``engine/quantize.py``'s fp32-vs-INT8 comparison
uses it too): untimed warm-up rounds, then timed rounds, each round calling every callable
once in order (interleaved, so that load from other processes falls on all alike), each call
timed alone (``perf_counter`` around it, CUDA synchronised). :func:`time_latency` times one
callable: p50 and p95 are percentiles of the per-call times, and the sustained rate is the
number of timed calls over the wall time of the whole back-to-back loop (so it includes
whatever happens between calls). :func:`benchmark_latency` builds a registered model
at its full size (the registry's clip and crop, random weights: latency does not depend on
them) or at its demo size (``experiment=demo``'s clip and crop), and times one clip of its
input layout (SlowFast's two pathways included) in fp32, bf16 and, on CUDA, fp16 under the
trainer's autocast, then the export's fp32 and INT8 graphs through their runner. Nothing
here claims a speed-up: the rows are measured side by side and the ratio is printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videocls.data.datamodule import model_input
from videocls.data.sampling import pack_pathways
from videocls.engine.runtime import Runtime
from videocls.models import create_model, get_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Latency:
    name: str
    p50_ms: float
    p95_ms: float
    mean_ms: float
    decisions_per_s: float  # sustained: timed calls / wall seconds of the back-to-back loop
    repeats: int

    def row(self) -> str:
        return (f"{self.name:<40} {self.p50_ms:9.2f} {self.p95_ms:9.2f} {self.decisions_per_s:12.2f} "
                f"{self.repeats:8d}")

    @staticmethod
    def header() -> str:
        return f"{'model / precision':<40} {'p50 ms':>9} {'p95 ms':>9} {'decisions/s':>12} {'repeats':>8}"


@dataclass(frozen=True)
class CallTimes:
    seconds: dict[str, np.ndarray]  # per callable, its timed calls in call order
    wall_s: float  # the whole timed loop, all callables and whatever ran between the calls


def time_calls(calls: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int,
               sync: Callable[[], None] | None = None) -> CallTimes:
    """Every callable of ``calls`` called in ``warmup`` untimed rounds, then in ``repeats`` timed
    rounds; a round calls each once, in ``calls``' order. ``sync`` (e.g. a CUDA synchronise)
    runs after the warm-up and inside each call's timing, so queued device work is counted."""
    if repeats < 1 or warmup < 0 or not calls:
        raise ValueError(f"repeats={repeats}, warmup={warmup}, {len(calls)} callables: "
                         "need at least one timed call")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for call in calls.values():
            call()
    sync()
    times: dict[str, list[float]] = {name: [] for name in calls}
    loop_start = time.perf_counter()
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            sync()
            times[name].append(time.perf_counter() - start)
    wall = time.perf_counter() - loop_start
    return CallTimes({name: np.asarray(t) for name, t in times.items()}, wall)


def summary_ms(seconds: np.ndarray) -> dict[str, float]:
    """``p50_ms``, ``p95_ms`` and ``mean_ms`` of per-call times in seconds."""
    ms = 1000 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean())}


def device_sync(device: torch.device | str) -> Callable[[], None] | None:
    """What :func:`time_calls` must wait for on ``device``: its CUDA queue, nothing on the CPU."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def time_latency(name: str, call: Callable[[], object], *, repeats: int = 20, warmup: int = 3,
                 device: torch.device | str = "cpu") -> Latency:
    """``call()`` timed ``repeats`` times after ``warmup`` untimed calls (module docstring)."""
    timed = time_calls({name: call}, repeats=repeats, warmup=warmup, sync=device_sync(device))
    return Latency(name, **summary_ms(timed.seconds[name]), decisions_per_s=repeats / timed.wall_s,
                   repeats=repeats)


def build_model(name: str, size: str = "full") -> tuple[nn.Module, tuple[int, int]]:
    """A registered model with random weights at ``size`` ("full": the registry's; "demo": its
    ``configs/model_size/demo`` file) and its test clip ``(frames, crop)``."""
    if size == "full":
        config = get_model_config(name)
        return create_model(name), (config.num_frames, config.crop_size)
    if size != "demo":
        raise ValueError(f"size {size!r}: use 'full' or 'demo'")
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"model={name}"])
    return instantiate(cfg.model), (int(cfg.data.num_frames), int(cfg.data.test_crop))


def model_clip(model: nn.Module, frames: int, crop: int):
    """One random clip in ``model``'s input layout (``[slow, fast]`` for two pathways)."""
    clip = torch.randn(1, 3, frames, crop, crop)
    alpha = model_input(model)["pathway_alpha"]
    return [p[None] for p in pack_pathways(clip[0], alpha)] if alpha else clip


def torch_precisions(device: torch.device) -> list[str]:
    """Autocast precisions (``trainer.precision`` values) worth timing on ``device``."""
    if device.type == "cuda":
        return ["32", "16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["32", "bf16"]


def benchmark_latency(name: str, *, size: str = "full", device: str = "cpu",
                      precisions: list[str] | None = None, export_dir: str | Path | None = None,
                      int8: bool = False, repeats: int = 20, warmup: int = 3,
                      threads: int | None = None) -> list[Latency]:
    """Batch-1 latency of ``name`` at ``size`` on ``device`` for each autocast precision and, with
    ``export_dir``, of that export's fp32 graph (and INT8 graph with ``int8``) on the CPU with
    ``threads`` threads (default: torch's)."""
    device = torch.device(device)
    torch.manual_seed(0)
    model, (frames, crop) = build_model(name, size)
    model = model.eval().to(device)
    clip = Runtime(device).to_device(model_clip(model, frames, crop))
    results = []
    for precision in precisions or torch_precisions(device):
        runtime = Runtime(device, precision=precision)

        @torch.inference_mode()
        def forward(runtime=runtime):
            with runtime.autocast():
                return model(list(clip) if isinstance(clip, list) else clip)

        label = {"32": "fp32", "16": "fp16"}.get(precision, precision)
        results.append(time_latency(f"{name} {size} torch {label} {device.type}", forward, repeats=repeats,
                                    warmup=warmup, device=device))
    if export_dir is not None:
        from videocls.engine.exported import ExportedModel

        for precision in ["fp32"] + (["int8"] if int8 else []):
            exported = ExportedModel.load(export_dir, precision=precision,
                                          threads=threads or torch.get_num_threads())
            inputs = [torch.randn(*[1 if isinstance(s, str) else s for s in i["shape"]])
                      for i in exported.spec["inputs"]]
            inputs = inputs if len(inputs) > 1 else inputs[0]
            results.append(time_latency(f"{exported.spec['model']} {exported.spec['format']} {precision} cpu",
                                        lambda e=exported, x=inputs: e(x), repeats=repeats, warmup=warmup))
    return results
