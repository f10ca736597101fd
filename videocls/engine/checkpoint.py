"""Checkpoints that survive preemption: atomic writes, full resume state, signal handling.

Preemption (SIGTERM, or Slurm's SIGUSR1 warning) sets a :class:`PreemptionFlag`; the training
loop saves ``last.pt`` at the next optimiser step and raises :class:`Preempted`, which
``tools/train.py`` turns into exit status 128 + the signal number (143 for SIGTERM, 138 for
SIGUSR1). DataLoader workers ignore both signals (``videocls.data.loader``): the job's signal
reaches the whole process group, and a worker that died of it would crash the loop before the
save.
"""

from __future__ import annotations

import _thread
import errno
import io
import logging
import os
import random
import re
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

#: mkstemp's names for save_atomic's temporary files: ``.<name>.<8 random characters>.tmp``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
#: errno values of a write that failed for lack of room, with the words the error uses.
_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file size limit exceeded"}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written for lack of room; the previous file is untouched."""


class _RecordingWriter(io.RawIOBase):
    """The file torch.save writes through, keeping the ``OSError`` of a failed write.

    torch reports a failed write as ``RuntimeError: ... unexpected pos`` (or ``PytorchStreamWriter
    failed``) and drops the errno; this keeps it, so a full disk can be named as such.
    """

    def __init__(self, raw) -> None:
        super().__init__()
        self.raw, self.error = raw, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.raw.flush()
        except OSError as exc:
            self.error = exc
            raise


def remove_stale_temp_files(directory: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files of interrupted :func:`save_atomic` writes (of ``name`` only,
    or of every ``*.pt``), returning them. Only one writer per directory may call this: the
    run-directory lock (``videocls.engine.run_lock``) makes the trainer that writer."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for candidate in directory.iterdir():
        match = _TEMP_NAME.match(candidate.name)
        if match is None or not candidate.is_file():
            continue
        if match["name"] == name or (name is None and match["name"].endswith(".pt")):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    if removed:
        log.warning("removed %d temporary file(s) of interrupted checkpoint writes: %s",
                    len(removed), ", ".join(p.name for p in removed))
    return removed


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A kill at any moment leaves either the old file or the new one, never a torn one; the
    temporary files such kills leave behind are removed by the next save of the same name.
    A full disk (or quota, or ``ulimit -f``) raises :class:`CheckpointWriteError` saying so,
    after removing the partial temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, path.name)
    tmp, writer = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = writer.error if writer is not None and writer.error is not None else exc
        if isinstance(cause, OSError) and cause.errno in _NO_ROOM:
            kept = (f"the last checkpoint {path} is intact" if path.is_file()
                    else f"no earlier {path.name} existed")
            raise CheckpointWriteError(cause.errno, f"{_NO_ROOM[cause.errno]} writing {path}; {kept} "
                                                    "(the partial temporary file was removed)") from exc
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load a videocls training checkpoint (tensors, numbers, strings, RNG states only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """Every generator a training step can draw from (the data pipeline seeds its own)."""
    _, py_internal, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": list(py_internal),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_rest": [int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Preempted(BaseException):
    """Training stopped on a preemption signal after saving what a rerun resumes from.

    A ``BaseException`` (like ``KeyboardInterrupt``): a handler for bad videos or failed
    metrics that catches ``Exception`` must not swallow it. ``exit_code`` is 128 + the
    signal number, what a shell reports for a process ended by that signal.
    """

    def __init__(self, signum: int | None, message: str) -> None:
        # A rank stopped by another rank's signal (any_rank) reports SIGTERM, the usual one.
        self.signum = int(signum or signal.SIGTERM)
        self.exit_code = 128 + self.signum
        super().__init__(message.format(signal=signal.Signals(self.signum).name))


class PreemptionFlag:
    """Sets a flag on SIGTERM/SIGUSR1 (what Slurm sends before preemption).

    The loop checks the flag at each optimiser-step boundary, saves ``last.pt`` and exits,
    so no step is half-applied and no work since the last step is lost. With
    ``interrupt=True`` (the final test, which changes no state) the signal instead raises
    :class:`Preempted` at once, so a long evaluation does not outlive the job's grace period.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, interrupt: bool = False, message: str = "stopped by {signal}") -> None:
        """``message`` (with ``{signal}`` for the signal's name) is the ``Preempted`` it raises."""
        self.received: int | None = None
        self.interrupt, self.message = interrupt, message
        self._previous = {}
        self._done = threading.Event()

    def __enter__(self) -> PreemptionFlag:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.interrupt:
            if self.received is None:
                # An exception raised from a signal handler is lost where it lands in code that
                # ignores exceptions (an at-fork hook, a __del__): repeat it until one escapes.
                threading.Thread(target=self._repeat, args=(signum,), daemon=True).start()
            self.received = signum
            raise Preempted(signum, self.message)
        self.received = signum
        log.warning("received %s: will save a checkpoint and exit at the next step",
                    signal.Signals(signum).name)

    def _repeat(self, signum: int) -> None:
        while not self._done.wait(0.5):
            _thread.interrupt_main(signum)  # runs this flag's handler in the main thread again

    def __exit__(self, *exc) -> None:
        self._done.set()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.received is not None


def worker_killed_by_signal(exc: BaseException, received: int | None = None) -> int | None:
    """The preemption signal (SIGTERM/SIGUSR1) that killed a DataLoader worker, if ``exc`` (or an
    exception it was raised from) is the loader's ``RuntimeError: DataLoader worker (pid N) is
    killed by signal: Terminated.``; or ``received``, the main process's own preemption signal,
    when ``exc`` is any loader error about a dead worker ("exited unexpectedly").

    Workers ignore those signals from their init function on; one signalled in the instant
    between its start and that function still dies of it, and that is preemption, not a crash.
    """
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    texts = [str(e) for e in chain if isinstance(e, RuntimeError) and "DataLoader worker" in str(e)]
    for sig in PreemptionFlag.SIGNALS:
        if any(f"killed by signal: {signal.strsignal(sig)}" in text for text in texts):
            return int(sig)
    return received if texts and received in PreemptionFlag.SIGNALS else None
