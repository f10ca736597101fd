"""Loader workers and the job's preemption signal: they survive it; a worker that dies of it
anyway is recognised as preemption, not a crash."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from torch.utils.data import DataLoader, Dataset

from videocls.data.loader import build_loader
from videocls.engine.checkpoint import worker_killed_by_signal


class PidDataset(Dataset):
    """Item i is (i, the pid of the process that made it), slowly enough to signal mid-epoch."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> dict:
        time.sleep(0.02)
        return {"index": i, "pid": os.getpid(), "skipped": []}


class SuicidalDataset(Dataset):
    """Each worker sends itself ``sig`` with the default action, as if its start raced the job's
    signal (before the worker init could ignore it)."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        if self.sig != signal.SIGKILL:
            signal.signal(self.sig, signal.SIG_DFL)
        os.kill(os.getpid(), self.sig)
        time.sleep(5)
        return i


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_loader_workers_survive_the_jobs_signal(sig):
    loader = build_loader(PidDataset(), batch_size=2, num_workers=2, train=False)
    seen, signalled = [], set()
    for batch in loader:
        seen += batch["index"].tolist()
        for pid in set(batch["pid"].tolist()) - signalled - {os.getpid()}:
            # From another process, as torchrun's os.killpg or Slurm (the parent's own SIGTERM
            # means "exit": multiprocessing's way to end its workers).
            subprocess.run(["kill", f"-{signal.Signals(sig).name[3:]}", str(pid)], check=True)
            signalled.add(pid)
    assert len(signalled) == 2  # both workers were signalled mid-epoch...
    assert sorted(seen) == list(range(24))  # ...and still delivered every item


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_worker_killed_by_preemption_signal_is_recognised(sig):
    loader = DataLoader(SuicidalDataset(sig), batch_size=1, num_workers=1)
    with pytest.raises(RuntimeError) as caught:
        list(loader)
    assert worker_killed_by_signal(caught.value) == sig


def test_other_worker_deaths_and_errors_are_not_preemption():
    loader = DataLoader(SuicidalDataset(signal.SIGKILL), batch_size=1, num_workers=1)
    with pytest.raises(RuntimeError) as caught:
        list(loader)
    assert "DataLoader worker" in str(caught.value)
    assert worker_killed_by_signal(caught.value) is None
    assert worker_killed_by_signal(RuntimeError("CUDA out of memory")) is None
    assert worker_killed_by_signal(ValueError("DataLoader worker is killed by signal: Terminated")) is None


def test_a_dead_worker_while_the_main_process_was_signalled_is_preemption():
    error = RuntimeError("DataLoader worker (pid(s) 123) exited unexpectedly")
    assert worker_killed_by_signal(error, received=signal.SIGUSR1) == signal.SIGUSR1
    assert worker_killed_by_signal(error) is None
    assert worker_killed_by_signal(RuntimeError("shape mismatch"), received=signal.SIGTERM) is None


def test_an_error_with_live_workers_still_exits():
    # At exit multiprocessing SIGTERMs its daemonic children and waits for them: workers must
    # still obey their parent's SIGTERM, or an uncaught error with a live iterator hangs forever.
    code = textwrap.dedent("""
        import os, time
        from torch.utils.data import Dataset
        from videocls.data.loader import build_loader

        class Slow(Dataset):
            def __len__(self):
                return 100

            def __getitem__(self, i):
                time.sleep(0.01)
                return {"index": i, "skipped": []}

        iterator = iter(build_loader(Slow(), batch_size=2, num_workers=2, train=False))
        next(iterator)
        raise FloatingPointError("a crash mid-epoch")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "FloatingPointError: a crash mid-epoch" in proc.stderr
    assert "Exception ignored" not in proc.stderr  # the exit hook ended both workers quietly
