"""tools/benchmark.py's measurements: what is timed is what is claimed (CPU, small inputs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videocls.engine.benchmark import _clips_per_s, benchmark_data, readable_videos, time_training_steps
from videocls.engine.runtime import Runtime

REAL_VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "real-videos"
needs_videos = pytest.mark.skipif(not REAL_VIDEOS.is_dir(), reason=f"{REAL_VIDEOS} is missing")


def test_training_steps_are_real_sgd_steps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 4 * 4, 5))
    before = [p.detach().clone() for p in model.parameters()]
    result = time_training_steps("linear", model, torch.randn(6, 3, 2, 4, 4),
                                 runtime=Runtime(torch.device("cpu")), steps=3, warmup=1)
    assert result.name == "linear" and result.clips_per_s > 0 and result.peak_memory_mb is None
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_clip_counting_starts_after_the_warmup_and_stops_at_the_count():
    batches = iter([[0] * 4] * 100)  # 4 clips a batch
    assert _clips_per_s(batches, len, num_clips=12, warmup_clips=8) > 0
    # 2 warm-up batches (8 clips), then exactly 3 timed batches (12 clips): 95 left.
    assert sum(1 for _ in batches) == 95
    with pytest.raises(RuntimeError, match="ran out of clips"):
        _clips_per_s(iter([[0]]), len, num_clips=5, warmup_clips=2)


@needs_videos
def test_readable_videos_leave_out_what_decord_cannot_read():
    import decord

    kept, left_out = readable_videos(REAL_VIDEOS)
    names = {Path(p).name for p in kept}
    assert "MANIFEST.tsv" not in names and "carphone_distorted.mp4" in names
    assert any(line.startswith("sage-example.wmv: decord cannot read it") for line in left_out)
    for path in kept:
        assert decord.VideoReader(path, num_threads=1).get_batch([0]).asnumpy().shape[-1] == 3


@needs_videos
def test_data_benchmark_times_all_three_pipelines():
    paths = [str(REAL_VIDEOS / "carphone_distorted.mp4"), str(REAL_VIDEOS / "bikes.mp4")]
    results = benchmark_data(paths, num_frames=4, sampling_rate=2, crop_size=64, num_workers=0, num_clips=4,
                             warmup_clips=1)
    assert [r.name for r in results] == ["videocls", "decode-only floor (decord)", "pytorchvideo (PyAV)"]
    assert all(r.clips_per_s > 0 for r in results)


def test_model_benchmark_cli_prints_the_ratio_to_pytorchvideo():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        # X3D-XS (0.6 GFLOPs a clip): the cheapest model pytorchvideo's hub also has
        [sys.executable, str(root / "tools" / "benchmark.py"), "model", "--model", "x3d_xs",
         "--batch-size", "2", "--steps", "2", "--warmup", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    assert "videocls x3d_xs" in out and "pytorchvideo x3d_xs" in out
    ratio = float(out.strip().splitlines()[-1].rsplit(":", 1)[1])
    # The same architecture: equal speed up to noise and our memory format (on CPU X3D takes its
    # input channels-last at the stem, ~1.7x faster than pytorchvideo's contiguous depthwise convs).
    assert 0.3 < ratio < 4.0


def test_timed_steps_count_only_the_timed_batches_and_their_waits():
    import time

    from videocls.engine.benchmark import _timed_steps

    def slow_batches():
        for _ in range(10):
            time.sleep(0.02)  # a loader that makes the step wait
            yield {"label": torch.zeros(3)}

    seen = []
    clips, seconds, waited = _timed_steps(seen.append, slow_batches(), steps=4, warmup=2)
    assert len(seen) == 6 and clips == 12
    assert 4 * 0.02 <= waited <= seconds
    in_memory = [{"label": torch.zeros(2)}] * 6
    clips, seconds, waited = _timed_steps(lambda b: time.sleep(0.02), in_memory, steps=4, warmup=2)
    assert clips == 8 and waited < 0.2 * seconds  # batches in memory: the wait is only list iteration
    with pytest.raises(RuntimeError, match="fewer than the 6"):
        _timed_steps(seen.append, [{"label": torch.zeros(1)}] * 3, steps=4, warmup=2)


def test_pipeline_benchmark_runs_real_steps_on_the_demo_config(tiny_synthetic):
    from helpers import compose_config, tiny_overrides

    from videocls.engine.benchmark import benchmark_pipeline

    cfg = compose_config(tiny_overrides(tiny_synthetic, Path("unused")))
    result = benchmark_pipeline(cfg, steps=2, warmup=1)
    assert result.steps == 2 and result.clips_per_step == cfg.data.batch_size
    assert result.loader_clips_per_s > 0 and result.preloaded_clips_per_s > 0
    assert 0.0 <= result.data_wait_frac < 1.0
    assert result.fed_ratio == pytest.approx(result.loader_clips_per_s / result.preloaded_clips_per_s)
