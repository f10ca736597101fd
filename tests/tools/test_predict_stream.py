"""tools/predict.py --stream: a videocls run (segment-sampled, as the demo) over a real file as
JSON lines."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
FPS = 30000 / 1001  # carphone_distorted.mp4: 120 frames


def _predict(*args: str) -> int:
    spec = importlib.util.spec_from_file_location("tool_predict", REPO / "tools" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([*args, "--device", "cpu"])


def test_stream_a_run_over_a_real_file_as_json_lines(tiny_run, tiny_synthetic, real_videos_dir, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/engine/test_stream.py
    try:
        code = _predict("--stream", str(real_videos_dir / "carphone_distorted.mp4"),
                        "--weights", str(tiny_run), "--window", "1.0", "--stride", "0.4", "--speed", "4",
                        "--jsonl", "--topk", "2")
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "views: 4 frames (segments" in err  # the run's own test views
    lines = [json.loads(line) for line in out.splitlines()]
    decisions, summary = lines[:-1], lines[-1]["summary"]
    # 4 segments over a 1 s window: a frame every 0.25 s (the nearest: 0, 7, 15, 22, ...); the
    # ring is full at frame 22 (t = 0.734 s), the last kept frame is 112 (3.75 s, as 4.0 s is past
    # frame 119), and a decision is due every 0.4 s on the kept frame nearest its time.
    kept = [int(math.floor(k * 0.25 * FPS + 0.5)) for k in range(16)]  # 0, 7, 15, 22, ...
    assert all(d["frames"] == kept[kept.index(d["frames"][0]):][:4] for d in decisions)
    expected = 1 + math.floor(((112 - 22) / FPS + 0.125) / 0.4)
    assert expected == 8 and len(decisions) + summary["skipped_decisions"] == expected
    names = (tiny_synthetic / "classes.txt").read_text().split()  # the run's class file names them
    assert all(len(d["topk"]) == 2 and d["latency_ms"] > 0 for d in decisions)
    assert all(t["label"] in names for d in decisions for t in d["topk"])
    assert summary["plan"] == {"window_s": 1.0, "stride_s": 0.4, "frame_interval_s": 0.25, "ring_frames": 4,
                               "clips_per_decision": 1}
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p95_ms"]
    assert summary["frames_kept"] == 16 and summary["queue_max"] <= summary["queue_bound"] == 4


def test_stream_refuses_a_segment_model_without_a_window(tiny_run, real_videos_dir, capsys):
    assert _predict("--stream", str(real_videos_dir / "g1.avi"), "--weights", str(tiny_run)) == 2
    assert "pass --window SECONDS" in capsys.readouterr().err
