"""Loader workers and the job's preemption signal: they survive it; a worker that dies of it
anyway is recognised as preemption, not a crash."""

import os
import signal
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
            os.kill(pid, sig)  # what torchrun's os.killpg / Slurm does to every process
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
