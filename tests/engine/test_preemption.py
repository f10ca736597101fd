"""Preemption as a cluster does it, with DataLoader workers running.

The job's SIGTERM reaches every process: the whole process group under plain python (Slurm
signals each process of the step; ``kill -TERM -- -PGID``), and torchrun forwards its own
SIGTERM to each worker's process group with ``os.killpg`` (one node or many: every node's
agent does the same). Each time the run saves, exits with the documented status, and a rerun
of the same command resumes and ends with the weights of an uninterrupted run (bitwise, with
``trainer.deterministic=true``).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import compose_config, tiny_overrides

REPO = Path(__file__).resolve().parents[2]
# 10 steps an epoch (20 videos, 2 a batch), two loader workers, every step logged.
EXTRA = ["trainer.max_epochs=2", "trainer.deterministic=true", "data.batch_size=2", "data.num_workers=2",
         "trainer.log_every_n_steps=1"]
# A final test long enough (300 views) for a signal to land inside it.
LONG_TEST = ["test.num_clips=10", "test.num_crops=3"]
TIMEOUT = 900


def _overrides(data_root: Path, run_dir: Path) -> list[str]:
    return tiny_overrides(data_root, run_dir, *EXTRA, *LONG_TEST)


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # the line being written
            pass
    return records


def _wait_for(proc: subprocess.Popen, run_dir: Path, ready) -> None:
    """Poll metrics.jsonl until ``ready(records)``; fail if the run ends first."""
    deadline = time.time() + TIMEOUT
    while not ready(_records(run_dir)):
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before the signal"
        assert time.time() < deadline, "the run never got there"
        time.sleep(0.05)


def _mid_epoch(records: list[dict]) -> bool:
    return any(r["step"] >= 3 and "train/loss" in r for r in records)


def _training_done(records: list[dict]) -> bool:
    return any(str(r.get("checkpoint", "")).endswith("last.pt") and r["step"] == 20 for r in records)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    # Its own session: the signal to "the whole job" must not reach pytest.
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    proc.wait(timeout=TIMEOUT)
    return proc.returncode, log.read_text()


def _last_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def _last(run_dir: Path) -> dict:
    return torch.load(_last_path(run_dir), map_location="cpu", weights_only=True)


def _assert_same_training_state(resumed: dict, reference: dict) -> None:
    assert resumed["global_step"] == reference["global_step"] == 20 and resumed["epoch"] == 2
    assert resumed["model"].keys() == reference["model"].keys()
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for index, moments in reference["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], value), (index, key)


@pytest.fixture(scope="module")
def reference(tiny_synthetic, tmp_path_factory) -> dict:
    """last.pt of the same run, uninterrupted (in this process: the test protocol cannot change
    the weights, so it runs the short one)."""
    from videocls.engine.trainer import fit

    run_dir = tmp_path_factory.mktemp("reference")
    try:
        fit(compose_config(tiny_overrides(tiny_synthetic, run_dir, *EXTRA)), run_dir)
    finally:
        torch.use_deterministic_algorithms(False)  # trainer.deterministic=true sets it process-wide
    return _last(run_dir)


def test_sigterm_to_the_process_group_mid_epoch_and_in_the_final_test(tiny_synthetic, tmp_path, reference):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), *_overrides(tiny_synthetic, run_dir)]

    # 1. Mid-epoch, while both loader workers are alive: saved at the next step, status 143.
    proc = _start(cmd, tmp_path / "first.log")
    _wait_for(proc, run_dir, _mid_epoch)
    os.killpg(proc.pid, signal.SIGTERM)
    status, log = _finish(proc, tmp_path / "first.log")
    assert status == 128 + signal.SIGTERM == 143, log[-3000:]
    assert "DataLoader worker" not in log and "results:" not in log
    stopped = _last(run_dir)
    assert stopped["epoch"] == 0 and 3 <= stopped["batches_done"] < 10  # mid-epoch
    assert f"preempted: stopped by SIGTERM at epoch 0, batch {stopped['batches_done']}" in log

    # 2. The rerun resumes there; SIGTERM during its final test stops it at once, status 143,
    #    with the finished training in last.pt and no results.json.
    proc = _start(cmd, tmp_path / "second.log")
    _wait_for(proc, run_dir, _training_done)
    os.killpg(proc.pid, signal.SIGTERM)
    status, log = _finish(proc, tmp_path / "second.log")
    assert status == 143, log[-3000:]
    assert f"resumed from {_last_path(run_dir)} at epoch 0, batch {stopped['batches_done']}" in log
    assert "preempted: stopped by SIGTERM during the final test" in log
    assert not (run_dir / "results.json").exists()
    _assert_same_training_state(_last(run_dir), reference)

    # 3. The next rerun trains nothing more and runs the test again.
    proc = _start(cmd, tmp_path / "third.log")
    status, log = _finish(proc, tmp_path / "third.log")
    assert status == 0, log[-3000:]
    assert f"resumed from {_last_path(run_dir)} at epoch 2, batch 0" in log
    assert f"results: {run_dir / 'results.json'}" in log
    assert json.loads((run_dir / "results.json").read_text())["num_views"] == 10 * 10 * 3  # the full test
    _assert_same_training_state(_last(run_dir), reference)


def test_sigterm_to_torchrun_mid_epoch(tiny_synthetic, tmp_path, reference):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(REPO / "tools" / "train.py"), *_overrides(tiny_synthetic, run_dir)]

    proc = _start(cmd, tmp_path / "first.log")
    _wait_for(proc, run_dir, _mid_epoch)
    os.kill(proc.pid, signal.SIGTERM)  # torchrun alone: it forwards SIGTERM to its workers' groups
    status, log = _finish(proc, tmp_path / "first.log")
    # torchrun reports its own signal (SignalException: status 1) after the worker saved and
    # exited 143 (its "preempted:" line).
    assert status == 1, log[-3000:]
    assert "DataLoader worker" not in log and "results:" not in log
    stopped = _last(run_dir)
    assert stopped["epoch"] == 0 and 3 <= stopped["batches_done"] < 10
    assert f"preempted: stopped by SIGTERM at epoch 0, batch {stopped['batches_done']}" in log

    proc = _start(cmd, tmp_path / "second.log")
    status, log = _finish(proc, tmp_path / "second.log")
    assert status == 0, log[-3000:]
    assert f"resumed from {_last_path(run_dir)} at epoch 0, batch {stopped['batches_done']}" in log
    assert f"results: {run_dir / 'results.json'}" in log
    _assert_same_training_state(_last(run_dir), reference)
