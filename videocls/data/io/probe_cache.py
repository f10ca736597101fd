"""The cache of :mod:`~videocls.data.io.probe`'s verdicts, in process and on disk, and its key.

``$VIDEOCLS_CACHE_DIR/decord_probe.jsonl`` (default ``~/.cache/videocls``; an empty value
turns the disk cache off) is an append-only file of JSON lines, one verdict each, that
concurrent processes share under ``flock``; past twice as many lines as files it is
rewritten with the newest record of each file. A record is valid for the file key it
stores (:func:`file_key`: path, size, mtime, inode, ctime and a hash of the first and last
64 KiB, so a file rewritten in place with its old size and mtime is probed again).

Records of version 3 (written before the probe counted keyframes) are still served, with
``num_keyframes`` unknown, so an existing cache is not probed again.

The file is untrusted shared state: a line that is not a record of this version with
fields of the right types is ignored, and the file is rewritten without it at the next
append; a cache path that cannot be read or written (a directory, a FIFO, a device, a
file where the directory should be, no permission, a full disk) is not used again by
this process. Either costs only re-probes and one warning per process naming the file.
:func:`preload`, called in the main process before it forks DataLoader workers (which are
re-created every epoch), reads the cache once for all of them and gives that warning once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from stat import S_ISREG

from videocls.data.io.access import VideoDecodeError

__all__ = ["Probe", "file_key", "lookup", "preload", "store"]

VERSION = 4
_OLD_VERSIONS = (3,)  # read, never written: records without num_keyframes
log = logging.getLogger(__name__)
_lock = threading.Lock()


@dataclass(frozen=True)
class Probe:
    """What a file really holds, and which random-access paths reproduce it.

    ``decord_failure`` is None when decord passed, else the reason it cannot serve the file.
    ``num_keyframes``: the decoded frames flagged as keyframes (equal to ``num_frames`` on an
    all-intra file), None when unknown (a record cached by an older version).
    """

    num_frames: int
    fps: float
    duration: float
    height: int
    width: int
    decord_failure: str | None
    pyav_seekable: bool
    num_keyframes: int | None = None


_FINGERPRINT_BLOCK = 64 * 1024


def _fingerprint(path: str, size: int) -> str:
    """A hash of the first and last 64 KiB: a file rewritten in place with its old size and
    mtime restored (``os.utime``) still gets a new key."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(_FINGERPRINT_BLOCK))
        if size > _FINGERPRINT_BLOCK:
            f.seek(max(_FINGERPRINT_BLOCK, size - _FINGERPRINT_BLOCK))
            digest.update(f.read(_FINGERPRINT_BLOCK))
    return digest.hexdigest()


def file_key(path: str) -> tuple[str, int, int, int, int, str]:
    """``(abspath, size, mtime_ns, inode, ctime_ns, fingerprint)``: what a cached verdict
    is valid for. Any write through the file system changes the ctime (``os.utime``
    included), and the fingerprint catches content changes where ctime is not kept."""
    try:
        stat = os.stat(path)
        # Only regular files are read for the fingerprint: opening a FIFO would block here.
        fingerprint = _fingerprint(path, stat.st_size) if S_ISREG(stat.st_mode) else ""
    except OSError as error:
        raise VideoDecodeError(path, f"cannot read ({error.strerror or error})") from error
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns, fingerprint


# Newest known probe per file: path -> (rest of the file key, probe).
_probes: dict[str, tuple[tuple, Probe]] = {}
# How far this process has read the disk cache, to read only what was appended since;
# "compact" asks the next append to rewrite the file (it holds malformed lines).
_disk = {"file": None, "inode": None, "offset": 0, "lines": 0, "compact": False}
# Cache files this process found broken: it neither reads (unreadable) nor writes
# (unwritable) them again, and warns once per file.
_unreadable: set[Path] = set()
_unwritable: set[Path] = set()
_warned: set[Path] = set()
_INT_FIELDS = ("size", "mtime_ns", "ino", "ctime_ns", "num_frames", "height", "width")
_RECORD_FIELDS = {"v", "path", "fingerprint", "fps", "duration", "decord_failure", "pyav_seekable",
                  "num_keyframes", *_INT_FIELDS}
_OLD_RECORD_FIELDS = _RECORD_FIELDS - {"num_keyframes"}


def _cache_file() -> Path | None:
    root = os.environ.get("VIDEOCLS_CACHE_DIR")
    if root == "":
        return None
    return Path(root or Path.home() / ".cache" / "videocls") / "decord_probe.jsonl"


def _warn_cache(file: Path, problem: str) -> None:
    """One warning per cache file and process: a broken cache only costs re-probes."""
    if file not in _warned:
        _warned.add(file)
        log.warning(
            "probe cache %s %s; videos are probed again (fix or delete it, or set VIDEOCLS_CACHE_DIR)",
            file,
            problem,
        )


def _record_line(key: tuple, probe: Probe) -> str:
    path, size, mtime_ns, ino, ctime_ns, fingerprint = key
    record = {"v": VERSION, "path": path, "size": size, "mtime_ns": mtime_ns, "ino": ino}
    record.update(ctime_ns=ctime_ns, fingerprint=fingerprint, **asdict(probe))
    return json.dumps(record) + "\n"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and 0 < value < float("inf")


def _parse_record(record) -> tuple[str, tuple, Probe] | None:
    """``(path, rest of the key, probe)`` of a valid record of this version (or an old one still
    read), else None.
    Every field is type-checked: a wrong-typed verdict would fail later, far from here."""
    if record["v"] in _OLD_VERSIONS:
        record = {**record, "num_keyframes": None} if set(record) == _OLD_RECORD_FIELDS else {}
    keyframes = record.get("num_keyframes")
    if (
        set(record) != _RECORD_FIELDS
        or not isinstance(record["path"], str)
        or not isinstance(record["fingerprint"], str)
        or not all(_is_int(record[name]) for name in _INT_FIELDS)
        or min(record["num_frames"], record["height"], record["width"]) < 1
        or not (keyframes is None or (_is_int(keyframes) and 0 <= keyframes <= record["num_frames"]))
        or not (_is_positive(record["fps"]) and _is_positive(record["duration"]))
        or not (record["decord_failure"] is None or isinstance(record["decord_failure"], str))
        or not isinstance(record["pyav_seekable"], bool)
    ):
        return None
    rest = tuple(record[name] for name in ("size", "mtime_ns", "ino", "ctime_ns", "fingerprint"))
    probe = Probe(**{name: record[name] for name in Probe.__dataclass_fields__})
    return record["path"], rest, probe


def _parse_line(line: bytes) -> tuple[str, tuple, Probe] | None | bool:
    """A record's entry; False for a line of another version of this code (skipped
    quietly); None for a malformed line."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    version = record.get("v")
    if version != VERSION and version not in _OLD_VERSIONS:
        return False if _is_int(version) else None
    return _parse_record(record)


def _parse_lines(file: Path, data: bytes) -> None:
    bad = []
    for line in data.splitlines():
        _disk["lines"] += 1
        entry = _parse_line(line)
        if entry:
            path, rest, probe = entry
            _probes[path] = (rest, probe)
        elif entry is None:
            bad.append(_disk["lines"])
    if bad:
        _disk["compact"] = True  # the next append rewrites the file without them
        _warn_cache(file, f"has {len(bad)} malformed line(s) (first: line {bad[0]}), ignored")


def _open_regular(file: Path, flags: int) -> int:
    """A descriptor of ``file``, which must be a regular file. O_NONBLOCK: a FIFO placed
    there must not block the open."""
    fd = os.open(file, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    if not S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"not a regular file: {file}")
    return fd


def _read_disk_cache(file: Path) -> None:
    """Load the records (JSON lines, one a probe) appended since this process last looked."""
    if _disk["file"] != file:
        _disk.update(file=file, inode=None)
    try:
        fd = _open_regular(file, os.O_RDONLY)
    except FileNotFoundError:
        return  # nothing cached yet
    except OSError as error:
        _unreadable.add(file)
        _warn_cache(file, f"cannot be read ({error.strerror or error})")
        return
    try:
        with open(fd, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            stat = os.fstat(f.fileno())
            # New, compacted by another process, or cut short by hand: read from the start.
            if stat.st_ino != _disk["inode"] or stat.st_size < _disk["offset"]:
                _disk.update(inode=stat.st_ino, offset=0, lines=0)
            f.seek(_disk["offset"])
            data = f.read()
    except OSError as error:
        _unreadable.add(file)
        _warn_cache(file, f"cannot be read ({error.strerror or error})")
        return
    complete = data[: data.rfind(b"\n") + 1]
    _disk["offset"] += len(complete)
    _parse_lines(file, complete)


def _append_disk_cache(file: Path, key: tuple, probe: Probe) -> None:
    """Append one record; past twice as many lines as files, or after malformed lines were
    read, rewrite it with the newest valid record of each file."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(_open_regular(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(_record_line(key, probe))
            f.flush()
            if _disk["compact"] or _disk["lines"] > 2 * len(_probes) + 1024:
                _compact_disk_cache(file)
    except OSError as error:
        # A read-only or full cache costs a re-probe in the next process, nothing else.
        _unwritable.add(file)
        _warn_cache(file, f"cannot be written ({error.strerror or error})")


def _compact_disk_cache(file: Path) -> None:
    """With the cache's exclusive lock held, rewrite it keeping the newest valid line of
    each file. A record another process appends to the old file meanwhile is lost: a
    re-probe later."""
    newest = {}
    for line in file.read_bytes().splitlines(keepends=True):
        entry = _parse_line(line)
        if entry and line.endswith(b"\n"):
            newest[entry[0]] = line
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(b"".join(newest.values()))
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
    _disk.update(inode=None, compact=False)


def lookup(key: tuple) -> Probe | None:
    """The verdict cached for ``key`` (a :func:`file_key`), else None."""
    path, rest = key[0], key[1:]
    file = _cache_file()
    with _lock:
        entry = _probes.get(path)
        if (entry is None or entry[0] != rest) and file is not None and file not in _unreadable:
            _read_disk_cache(file)
            entry = _probes.get(path)
        return entry[1] if entry is not None and entry[0] == rest else None


def store(key: tuple, probe: Probe) -> None:
    """Cache ``probe`` as the verdict for ``key``, in process and on disk."""
    file = _cache_file()
    with _lock:
        _probes[key[0]] = (key[1:], probe)
        if file is not None and file not in _unwritable:
            _append_disk_cache(file, key, probe)


def preload() -> None:
    """Read the disk cache and check that it can be appended to, now. Called in the main
    process before it forks workers, which inherit the records (instead of each parsing
    the file again every epoch) and what is known to be broken (so the warning is given
    once, not by every worker of every epoch)."""
    file = _cache_file()
    if file is None:
        return
    with _lock:
        if file not in _unreadable:
            _read_disk_cache(file)
        if file not in _unwritable:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                os.close(_open_regular(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
            except OSError as error:
                _unwritable.add(file)
                _warn_cache(file, f"cannot be written ({error.strerror or error})")
