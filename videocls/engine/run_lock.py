"""One run per run directory: an exclusive ``flock`` on ``<run dir>/.lock``.

Two runs started on the same ``hydra.run.dir`` would both write ``last.pt``, ``best.pt`` and
``results.json`` and interleave ``metrics.jsonl``. The trainer's rank 0 takes the lock when it
starts and releases it on close; a second run refuses, naming the first (pid, host, start,
command, as the first wrote them into the lock file).

The lock is the kernel's: it dies with the process that holds it (kill -9, node crash on a
local disk), so a lock file left behind is harmless and is simply taken over. On a file
system without ``flock`` (some Lustre mounts) the run goes on unlocked, with a warning.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path

from videocls.engine.checkpoint import remove_stale_temp_files

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: This process's locks by run directory: a second Trainer in the same process (tests, a
#: notebook) shares the first one's lock instead of refusing itself.
_HELD: dict[str, RunDirLock] = {}


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunDirLock:
    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd, self._users = path, fd, 1

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop one user of the lock; the last one unlocks (the file stays: see the module doc)."""
        self._users -= 1
        if self._users > 0 or self._fd is None:
            return
        _HELD.pop(str(self.path), None)
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on host {info['host']}, started {info['started']}: "
                f"{info.get('command', '?')}")
    except (OSError, ValueError, TypeError, KeyError):
        return "a process that has not written its details yet"


def acquire_run_lock(run_dir: str | Path) -> RunDirLock:
    """Lock ``run_dir`` for this process or raise :class:`RunDirInUse` naming the holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = (run_dir / LOCK_NAME).resolve()
    if str(path) in _HELD:
        lock = _HELD[str(path)]
        lock._users += 1
        return lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirInUse(
            f"run directory {run_dir} is in use by another run ({_holder_text(path)}); wait for it "
            f"to finish or stop it, or give this run its own hydra.run.dir (lock file: {path})"
        ) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        log.warning("%s: this file system cannot lock (%s); nothing stops a second run on %s",
                    path, exc.strerror, run_dir)
        return RunDirLock(path, None)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    lock = _HELD[str(path)] = RunDirLock(path, fd)
    return lock


def lock_users(run_dir: str | Path) -> int:
    """How many users in this process share the lock of ``run_dir`` (0: not held here)."""
    lock = _HELD.get(str((Path(run_dir) / LOCK_NAME).resolve()))
    return lock._users if lock is not None else 0


def release_if_taken_since(run_dir: str | Path, users_before: int) -> None:
    """Give back the lock a failed start took (a Trainer whose ``__init__`` raised after locking)."""
    lock = _HELD.get(str((Path(run_dir) / LOCK_NAME).resolve()))
    if lock is not None and lock._users > users_before:
        lock.release()


def claim_run_dir(run_dir: str | Path) -> RunDirLock:
    """Lock ``run_dir`` (rank 0 of a training run), then clear the temporary files that killed
    checkpoint writes left in its ``checkpoints/``: only safe once no other run writes there."""
    lock = acquire_run_lock(run_dir)
    remove_stale_temp_files(Path(run_dir) / "checkpoints")
    return lock
