"""The training loop end to end on the built-in dataset, and one optimiser step in isolation."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from helpers import compose_config, tiny_overrides
from videocls import create_model
from videocls.engine.trainer import fit

REPO = Path(__file__).resolve().parents[2]


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("i3d_r50", num_classes=4, width=4, stage_blocks=(1, 1, 1, 1), dropout=0.0)
    clips, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_fit_writes_results_checkpoint_and_metrics(tiny_synthetic, tmp_path):
    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path))
    summary = fit(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["clip"]) >= {"top1", "top5"}
    assert set(results["video"]) >= {"top1", "top5", "mean_class_acc"}
    assert results["num_videos"] == 10 and results["num_views"] == 20  # 10 val videos x 2 clips
    assert 0.0 <= results["video"]["top1"] <= 1.0
    assert summary["results_path"] == str(tmp_path / "results.json")
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 5  # 20 train videos / batch 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val/video_top1" in r for r in rows)


def test_train_tool_prints_results_path_last(tiny_synthetic, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), *tiny_overrides(tiny_synthetic, tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"results: {tmp_path / 'results.json'}"
    assert json.loads((tmp_path / "results.json").read_text())["num_videos"] == 10
