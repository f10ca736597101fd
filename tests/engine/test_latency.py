"""The latency benchmark's numbers against a model of known speed."""

from __future__ import annotations

import time

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
