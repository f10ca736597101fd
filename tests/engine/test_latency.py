"""The latency benchmark's numbers against a model of known speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from videocls.engine.latency import time_latency


class Sleeper(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x.mean()


def test_latency_percentiles_match_a_model_of_known_speed():
    sleep, model, x = 0.02, Sleeper(0.02), torch.zeros(1, 3, 2, 4, 4)
    started = time.perf_counter()
    result = time_latency("sleeper", lambda: model(x), repeats=12, warmup=1)
    wall = time.perf_counter() - started
    # Every call sleeps 20 ms: no percentile below it; an OS-scheduling tail above it, bounded here.
    assert 1000 * sleep <= result.p50_ms <= result.p95_ms and result.p50_ms < 1000 * sleep + 30
    assert result.mean_ms >= 1000 * sleep and result.repeats == 12
    # Sustained: 12 back-to-back calls in at least 12 x 20 ms, at most the measured wall time.
    assert 12 / wall <= result.decisions_per_s <= 1 / sleep
    assert result.decisions_per_s == pytest.approx(1000 / result.mean_ms, rel=0.1)
    with pytest.raises(ValueError, match="at least one timed call"):
        time_latency("none", lambda: None, repeats=0)


def test_demo_slowfast_is_timed_on_its_two_pathways():
    from videocls.engine.latency import benchmark_latency, build_model, model_clip

    model, (frames, crop) = build_model("slowfast_r50", "demo")
    slow, fast = model_clip(model, frames, crop)
    # The demo's 8 x 32 px clip; slow = every alpha-th of the fast frames.
    assert fast.shape == (1, 3, 8, 32, 32) and slow.shape == (1, 3, 8 // model.alpha, 32, 32)
    (result,) = benchmark_latency("i3d_r50", size="demo", precisions=["32"], repeats=2, warmup=0)
    assert result.name == "i3d_r50 demo torch fp32 cpu" and 0 < result.p50_ms <= result.p95_ms


def test_time_calls_interleaves_and_times_each_call_alone():
    """The one timing loop (latency and INT8 alike): warm-up rounds untimed, then each round calls
    every callable once in order, the sync inside each call's timing. Sleeps are lower bounds
    that load cannot break; the upper bounds allow a loaded machine's wake-up delays."""
    from videocls.engine.latency import time_calls

    log, warmup, repeats = [], 2, 5

    def a():  # call k sleeps 10 + 5k ms: the timed times must be those of calls warmup.. on
        time.sleep(0.010 + 0.005 * log.count("a"))
        log.append("a")

    def b():
        time.sleep(0.030)
        log.append("b")

    def sync():  # 5 ms of "device queue" that each call's time must include
        time.sleep(0.005)
        log.append("sync")

    started = time.perf_counter()
    timed = time_calls({"a": a, "b": b}, repeats=repeats, warmup=warmup, sync=sync)
    outside = time.perf_counter() - started
    assert log == ["a", "b"] * warmup + ["sync"] + ["a", "sync", "b", "sync"] * repeats
    # Each timed call's sleep plus its sync's 5 ms.
    expected = {"a": 0.015 + 0.005 * np.arange(warmup, warmup + repeats), "b": np.full(repeats, 0.035)}
    for name, seconds in timed.seconds.items():
        assert seconds.shape == (repeats,) and (seconds >= expected[name]).all()
        assert np.median(seconds - expected[name]) < 0.015
    # The timed loop holds every timed call and not the warm-up (10 + 15 + 2 x 30 + 5 ms).
    total = sum(s.sum() for s in timed.seconds.values())
    assert total <= timed.wall_s <= outside - 0.08
    with pytest.raises(ValueError, match="at least one timed call"):
        time_calls({}, repeats=1, warmup=0)


def test_int8_speedup_is_the_median_per_pair_ratio_of_the_shared_loop():
    from videocls.engine.quantize import measure_latency

    def sleeper(seconds):
        return lambda inputs: time.sleep(seconds)

    result = measure_latency({"fp32": sleeper(0.060), "int8": sleeper(0.020)}, None, repeats=5, warmup=1)
    # The keys spec.json["quantization"]["latency"] has always had.
    assert set(result) == {"fp32", "int8", "repeats", "speedup", "speedup_p5_p95"} and result["repeats"] == 5
    for name, floor in (("fp32", 60), ("int8", 20)):
        assert set(result[name]) == {"p50_ms", "p95_ms", "mean_ms"}
        assert floor <= result[name]["p50_ms"] <= result[name]["p95_ms"]
    low, high = result["speedup_p5_p95"]
    # 60 ms / 20 ms = 3x; the bounds allow 10-20 ms of wake-up delay on either.
    assert low <= result["speedup"] <= high and 1.5 < result["speedup"] < 3.5
