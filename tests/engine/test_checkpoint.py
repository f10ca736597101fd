import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import torch

from videocls.engine.checkpoint import PreemptionFlag, load_checkpoint, rng_state, save_atomic, set_rng_state


def test_save_atomic_roundtrip_and_no_temp_left(tmp_path):
    path = save_atomic({"w": torch.arange(5), "epoch": 3}, tmp_path / "ck" / "last.pt")
    state = load_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(5)) and state["epoch"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_kill_during_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"w": torch.zeros(3), "epoch": 1}, path)
    # A child process starts writing a large checkpoint and is killed with SIGKILL mid-write.
    code = textwrap.dedent(f"""
        import os, signal, torch
        from videocls.engine import checkpoint
        real_save = torch.save
        def slow_save(obj, f):
            real_save(obj, f)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # dies after bytes hit the temp file, before rename
        checkpoint.torch.save = slow_save
        checkpoint.save_atomic({{"w": torch.ones(1_000_000), "epoch": 2}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.zeros(3))


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # populate gauss caches
    save_atomic({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    assert got == expected


def test_preemption_flag_catches_sigterm_and_sigusr1():
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        with PreemptionFlag() as flag:
            assert not flag
            os.kill(os.getpid(), sig)
            assert flag and flag.received == sig
