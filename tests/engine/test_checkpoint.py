import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from videocls.engine.checkpoint import (
    CheckpointWriteError,
    Preempted,
    PreemptionFlag,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_atomic,
    set_rng_state,
)
from videocls.engine.run_lock import (
    RunDirInUse,
    acquire_run_lock,
    claim_run_dir,
    lock_users,
    release_if_taken_since,
)


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
    # The killed write left its temporary file; the next save of last.pt removes it.
    (stale,) = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.")]
    assert stale.stat().st_size > 4_000_000
    save_atomic({"epoch": 3}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # populate gauss caches
    save_atomic({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(),
                torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    assert got == expected


def test_preemption_flag_catches_sigterm_and_sigusr1():
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        with PreemptionFlag() as flag:
            assert not flag
            os.kill(os.getpid(), sig)
            assert flag and flag.received == sig


def test_interrupting_flag_raises_preempted_with_the_shell_exit_status():
    for sig, status in ((signal.SIGTERM, 143), (signal.SIGUSR1, 138)):
        with pytest.raises(Preempted) as caught:
            with PreemptionFlag(interrupt=True, message="stopped by {signal} during the test"):
                os.kill(os.getpid(), sig)
        assert caught.value.exit_code == status == 128 + sig
        assert str(caught.value) == f"stopped by {signal.Signals(sig).name} during the test"
        assert not isinstance(caught.value, Exception)  # an `except Exception` cannot swallow it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_stale_temp_files_are_removed_by_name(tmp_path):
    names = [".last.pt.abcd1234.tmp", ".best.pt.zz_9y8x7.tmp", ".last.pt.calibration.json.abcdefgh.tmp",
             "notes.tmp", ".last.pt.short.tmp", "last.pt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    save_atomic({"epoch": 1}, tmp_path / "best.pt")  # removes only best.pt's leftovers
    assert not (tmp_path / ".best.pt.zz_9y8x7.tmp").exists() and (tmp_path / ".last.pt.abcd1234.tmp").exists()
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".last.pt.abcd1234.tmp"]
    kept = {".last.pt.calibration.json.abcdefgh.tmp", "notes.tmp", ".last.pt.short.tmp", "last.pt", "best.pt"}
    assert {p.name for p in tmp_path.iterdir()} == kept


def _small_tmpfs(mountpoint):
    """A 1 MiB tmpfs (root only); None where it cannot be mounted."""
    mountpoint.mkdir()
    if os.geteuid() != 0:
        return None
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                          capture_output=True)
    return mountpoint if proc.returncode == 0 else None


def test_disk_full_is_named_and_keeps_the_last_checkpoint(tmp_path):
    disk = _small_tmpfs(tmp_path / "disk")
    if disk is None:
        pytest.skip("mounting a small tmpfs needs root; test_file_size_limit_... covers the same path")
    try:
        path = save_atomic({"w": torch.arange(1000.0), "epoch": 1}, disk / "last.pt")
        with pytest.raises(CheckpointWriteError) as caught:
            save_atomic({"w": torch.ones(1_000_000), "epoch": 2}, path)  # 4 MB onto a 1 MiB disk
        assert caught.value.errno == errno.ENOSPC
        assert str(caught.value).endswith(
            f"no space left on device writing {path}; the last checkpoint {path} is intact "
            "(the partial temporary file was removed)")
        assert [p.name for p in disk.iterdir()] == ["last.pt"]
        state = load_checkpoint(path)
        assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(1000.0))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_file_size_limit_is_named_and_keeps_the_last_checkpoint(tmp_path):
    # A real failing write: RLIMIT_FSIZE makes write() fail with EFBIG once the file would pass
    # 1 MiB (SIGXFSZ ignored, else the kernel kills the process instead).
    path = tmp_path / "last.pt"
    code = textwrap.dedent(f"""
        import resource, signal, torch
        from videocls.engine.checkpoint import CheckpointWriteError, save_atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        save_atomic({{"w": torch.arange(1000.0), "epoch": 1}}, {str(path)!r})
        try:
            save_atomic({{"w": torch.ones(1_000_000), "epoch": 2}}, {str(path)!r})
        except CheckpointWriteError as exc:
            print(exc.errno, exc.strerror)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"{errno.EFBIG} file size limit exceeded writing {path}; the last "
                                   f"checkpoint {path} is intact (the partial temporary file was removed)")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from videocls.engine.run_lock import acquire_run_lock
    acquire_run_lock(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
""")


def test_second_run_on_a_locked_dir_refuses_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirInUse) as caught:
            acquire_run_lock(tmp_path)
        message = str(caught.value)
        assert f"run directory {tmp_path} is in use by another run (pid {holder.pid} on host " in message
        assert f"{socket.gethostname()}, started 20" in message and f": -c {tmp_path})" in message  # its argv
        assert f"lock file: {tmp_path / '.lock'}" in message
    finally:
        holder.kill()
        holder.wait()
    # The holder died (kill -9): its lock file stays behind, and the next run simply takes it.
    assert (tmp_path / ".lock").is_file()
    lock = acquire_run_lock(tmp_path)
    try:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_lock_is_shared_within_a_process_and_released_by_the_last_user(tmp_path):
    first, second = acquire_run_lock(tmp_path), acquire_run_lock(tmp_path)
    assert first is second and first.held
    first.release()
    # Another process's view, with the bare system call (and no slow imports).
    probe = [sys.executable, "-c", "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | "
             "fcntl.LOCK_NB)", str(tmp_path / ".lock")]
    assert subprocess.run(probe, capture_output=True).returncode == 1  # still held by `second`
    second.release()
    assert not second.held
    assert subprocess.run(probe, capture_output=True).returncode == 0


def test_claiming_a_run_dir_clears_checkpoint_temp_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".last.pt.k2j4h5g6.tmp").write_bytes(b"torn")
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"kept")
    lock = claim_run_dir(tmp_path)
    try:
        assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]
    finally:
        lock.release()


def test_an_interrupt_lost_in_code_that_ignores_exceptions_is_repeated():
    # As when the signal's handler runs inside an at-fork hook or a __del__, which drop exceptions.
    start = time.monotonic()
    with pytest.raises(Preempted):
        with PreemptionFlag(interrupt=True):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except Preempted:
                pass  # lost
            while time.monotonic() - start < 30:
                time.sleep(0.01)
    assert time.monotonic() - start < 5


def test_train_and_trainer_refuse_a_run_dir_in_use_before_touching_it(tmp_path):
    from helpers import compose_config, tiny_overrides

    from videocls.engine.trainer import Trainer

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the first run's config\n")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        overrides = tiny_overrides(tmp_path / "no-data-needed", run_dir)
        with pytest.raises(RunDirInUse, match=f"in use by another run \\(pid {holder.pid} on host "):
            Trainer(compose_config(overrides), run_dir)
        train = subprocess.run([sys.executable, "tools/train.py", *overrides], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[2], timeout=600)
        assert train.returncode == 1
        assert f"error: run directory {run_dir} is in use by another run (pid {holder.pid} on host " \
            in train.stderr
        # Refused before Hydra wrote anything: the first run's recorded config is untouched.
        assert (run_dir / ".hydra" / "config.yaml").read_text() == "the first run's config\n"
        assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", ".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_start_gives_back_only_the_lock_it_took(tmp_path):
    outer = acquire_run_lock(tmp_path)  # e.g. tools/train.py's, taken before Hydra
    users = lock_users(tmp_path)
    acquire_run_lock(tmp_path)  # the Trainer's, whose __init__ then fails
    release_if_taken_since(tmp_path, users)
    assert lock_users(tmp_path) == users == 1 and outer.held
    release_if_taken_since(tmp_path, users)  # nothing more was taken: nothing given back
    assert outer.held
    outer.release()
    assert lock_users(tmp_path) == 0 and not outer.held
