"""Preemption: SIGTERM mid-epoch, rerun the same command, end with the uninterrupted weights."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpers import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
EXTRA = ["trainer.max_epochs=2", "trainer.deterministic=true", "data.batch_size=2", "trainer.log_every_n_steps=1"]


def _cmd(data_root: Path, run_dir: Path) -> list[str]:
    return [sys.executable, str(REPO / "tools" / "train.py"), *tiny_overrides(data_root, run_dir, *EXTRA)]


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return max((json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()), default=0)


def test_sigterm_then_rerun_resumes_exactly(tiny_synthetic, tmp_path):
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(_cmd(tiny_synthetic, reference_dir), check=True, capture_output=True, cwd=REPO, timeout=900)

    proc = subprocess.Popen(_cmd(tiny_synthetic, resumed_dir), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while _logged_steps(resumed_dir) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "results:" not in out  # it stopped early instead of finishing
    stopped = torch.load(resumed_dir / "checkpoints" / "last.pt", weights_only=True)
    assert stopped["epoch"] == 0 and 3 <= stopped["batches_done"] < 10  # mid-epoch (10 batches/epoch)

    rerun = subprocess.run(_cmd(tiny_synthetic, resumed_dir), capture_output=True, text=True, cwd=REPO, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert f"resumed from {resumed_dir / 'checkpoints' / 'last.pt'} at epoch 0, batch {stopped['batches_done']}" in log

    reference = torch.load(reference_dir / "checkpoints" / "last.pt", weights_only=True)
    resumed = torch.load(resumed_dir / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 20
    for name, weight in reference["model"].items():
        assert torch.equal(resumed["model"][name], weight), name
