"""The probe cache is untrusted shared state: whatever it holds, videos read correctly.

Each case opens real videos with a broken ``$VIDEOCLS_CACHE_DIR`` and checks the frame
count and frames against a plain sequential PyAV decode, that exactly one warning names
the cache file, and that the verdict of a changed file is never served from the cache.
"""

import json
import logging
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from videocls.data.io import probe, probe_cache
from videocls.data.io.reader import open_video

REAL_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "real-videos"
FRESH_DISK = {"file": None, "inode": None, "offset": 0, "lines": 0, "compact": False}


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test starts as a new process would: nothing probed, nothing found broken."""
    monkeypatch.setattr(probe_cache, "_probes", {})
    monkeypatch.setattr(probe_cache, "_disk", dict(FRESH_DISK))
    for name in ("_unreadable", "_unwritable", "_warned"):
        monkeypatch.setattr(probe_cache, name, set())


def sequential(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def assert_reads_correctly(path) -> None:
    reference = sequential(path)
    reader = open_video(path)
    assert len(reader) == len(reference)
    got = reader.get_frames([0, len(reference) - 1]).numpy()
    assert np.array_equal(got[0], reference[0]) and np.array_equal(got[1], reference[-1])


def cache_warnings(caplog, cache_file) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return [m for m in messages if str(cache_file) in m]


def count_probes(monkeypatch) -> list[str]:
    probes = []
    run_probe = probe.run_probe

    def counting(path, index):
        probes.append(Path(path).name)
        return run_probe(path, index)

    monkeypatch.setattr(probe, "run_probe", counting)
    return probes


def test_malformed_lines_cost_a_reprobe_and_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "decord_probe.jsonl"
    g1 = str((REAL_VIDEOS / "g1.avi").resolve())
    wrong_types = {"v": probe_cache.VERSION, "path": g1, "size": "184832", "mtime_ns": 0, "ino": 0}
    wrong_types.update(ctime_ns=0, fingerprint="", num_frames="16", fps=None, duration=[], height=1, width=1)
    wrong_types.update(decord_failure=0, pyav_seekable="yes")
    lines = ["0", "null", "[1, 2]", '"text"', "{not json", "[" * 100000, json.dumps(wrong_types)]
    lines += [json.dumps({"v": probe_cache.VERSION, "path": ["a list"]}), json.dumps({"v": "3"})]
    other_version = json.dumps({"v": 1, "path": g1, "num_frames": 5})  # quietly skipped
    cache.write_bytes(("\n".join([*lines, other_version]) + "\n").encode() + b"\xff\xfe\n")
    probes = count_probes(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert_reads_correctly(REAL_VIDEOS / "g1.avi")
        assert_reads_correctly(REAL_VIDEOS / "g2.avi")
    assert probes == ["g1.avi", "g2.avi"]
    warnings = cache_warnings(caplog, cache)
    assert len(warnings) == 1 and "10 malformed line(s) (first: line 1)" in warnings[0]
    # The first append rewrote the cache with the valid records only.
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [(Path(r["path"]).name, r["num_frames"]) for r in records] == [("g1.avi", 16), ("g2.avi", 16)]


def test_valid_record_of_the_same_file_is_served(tmp_path, monkeypatch):
    """The check above is not vacuous: a well-formed record with the file's key is trusted."""
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    path = tmp_path / "g1.avi"
    shutil.copyfile(REAL_VIDEOS / "g1.avi", path)
    key = probe_cache.file_key(str(path))
    forged = probe_cache.Probe(num_frames=16, fps=7.0, duration=16 / 7, height=300, width=400,
                             decord_failure="open_failed", pyav_seekable=True)
    (tmp_path / "decord_probe.jsonl").write_text(probe_cache._record_line(key, forged))
    assert open_video(path).fps == 7.0


@pytest.mark.parametrize("field", [1, 2, 3, 4, 5])  # size, mtime_ns, ino, ctime_ns, fingerprint
def test_record_with_any_other_key_field_is_not_served(tmp_path, monkeypatch, field):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    path = tmp_path / "g1.avi"
    shutil.copyfile(REAL_VIDEOS / "g1.avi", path)
    key = list(probe_cache.file_key(str(path)))
    key[field] = "0" * 32 if field == 5 else key[field] + 1
    forged = probe_cache.Probe(num_frames=16, fps=7.0, duration=16 / 7, height=300, width=400,
                             decord_failure="open_failed", pyav_seekable=True)
    (tmp_path / "decord_probe.jsonl").write_text(probe_cache._record_line(tuple(key), forged))
    assert open_video(path).fps == 25.0


def test_file_rewritten_in_place_with_same_size_and_mtime_is_probed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "clip.avi"
    first = (REAL_VIDEOS / "retroMars2018.avi").read_bytes()  # 25 frames, 1024x768
    second = (REAL_VIDEOS / "g1.avi").read_bytes()  # 16 frames, 400x300
    second += b"\0" * (len(first) - len(second))  # the same size
    path.write_bytes(first)
    stat = path.stat()
    assert len(open_video(path)) == 25
    path.write_bytes(second)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert_reads_correctly(path)  # in this process
    monkeypatch.setattr(probe_cache, "_probes", {})
    monkeypatch.setattr(probe_cache, "_disk", dict(FRESH_DISK))
    assert_reads_correctly(path)  # in a new one, from the disk cache
    assert open_video(path).get_frames([0]).shape == (1, 300, 400, 3)


def broken_cache_dirs(tmp_path):
    """(VIDEOCLS_CACHE_DIR, the cache file the warning names) for each kind of breakage."""
    as_dir = tmp_path / "dir-at-file"
    (as_dir / "decord_probe.jsonl").mkdir(parents=True)
    fifo = tmp_path / "fifo-at-file"
    fifo.mkdir()
    os.mkfifo(fifo / "decord_probe.jsonl")  # opening it must not block
    file_at_dir = tmp_path / "file-at-dir"
    file_at_dir.write_text("not a directory\n")
    device = tmp_path / "device-at-file"
    device.mkdir()
    (device / "decord_probe.jsonl").symlink_to("/dev/full")  # reads forever, writes fail
    return {"directory": as_dir, "fifo": fifo, "file_at_dir": file_at_dir, "device": device}


@pytest.mark.parametrize("kind", ["directory", "fifo", "file_at_dir", "device"])
def test_cache_path_of_the_wrong_type(tmp_path, monkeypatch, caplog, kind):
    root = broken_cache_dirs(tmp_path)[kind]
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(root))
    probes = count_probes(monkeypatch)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert_reads_correctly(REAL_VIDEOS / "g1.avi")
            assert_reads_correctly(REAL_VIDEOS / "g2.avi")
    assert probes == ["g1.avi", "g2.avi"]  # the in-process cache still works
    assert len(cache_warnings(caplog, root / "decord_probe.jsonl")) == 1


def unwritable_dir(tmp_path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        return locked / "cache"
    target = Path("/sys/videocls-probe-cache-test")  # sysfs refuses new entries, even to root
    try:
        target.mkdir()
    except OSError:
        return target
    target.rmdir()
    pytest.skip("no directory this test can make unwritable")


def test_unwritable_cache_dir(tmp_path, monkeypatch, caplog):
    root = unwritable_dir(tmp_path)
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(root))
    with caplog.at_level(logging.WARNING):
        assert_reads_correctly(REAL_VIDEOS / "g1.avi")
        assert_reads_correctly(REAL_VIDEOS / "g2.avi")
    warnings = cache_warnings(caplog, root / "decord_probe.jsonl")
    assert len(warnings) == 1 and "cannot be written" in warnings[0]


def test_unreadable_cache_file(tmp_path, monkeypatch, caplog):
    if os.geteuid() == 0:
        pytest.skip("root reads any file (the FIFO and directory cases cover unreadable paths)")
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "decord_probe.jsonl"
    cache.write_text("")
    cache.chmod(0)
    with caplog.at_level(logging.WARNING):
        assert_reads_correctly(REAL_VIDEOS / "g1.avi")
    assert len(cache_warnings(caplog, cache)) == 1


def broken(kind: str, tmp_path) -> Path:
    """A VIDEOCLS_CACHE_DIR broken in the way ``kind`` says."""
    if kind == "malformed":
        (tmp_path / "decord_probe.jsonl").write_text("0\nnull\n")
        return tmp_path
    if kind == "unwritable":
        return unwritable_dir(tmp_path)
    return broken_cache_dirs(tmp_path)[kind]


@pytest.mark.parametrize("kind", ["malformed", "unwritable", "directory"])
def test_dataloader_workers_of_every_epoch_warn_once_in_all(real_videos_dir, tmp_path, monkeypatch, kind):
    """Workers are re-created every epoch; the dataset reads the cache in the main process,
    so they inherit the verdict on the cache instead of each warning again."""
    from torch.utils.data import DataLoader

    from videocls.data.datamodule import VideoData
    from videocls.data.loader import collate_clips

    root = broken(kind, tmp_path)
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(root))
    listed = tmp_path / "val.txt"
    listed.write_text("".join(f"{real_videos_dir / name} 0\n" for name in ("g1.avi", "g2.avi", "bikes.mp4")))
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)  # inherited by the forked workers
    handler.setFormatter(logging.Formatter("%(levelname)s %(process)d %(message)s"))
    logger = logging.getLogger("videocls.data.io.probe_cache")
    logger.addHandler(handler)
    try:
        data = VideoData(train_list=str(listed), val_list=str(listed), num_classes=1, num_frames=2,
                         sampling_rate=1, test_short_side=32, test_crop=32)
        val = data.dataset("val", train=False, mean=(0.5,) * 3, std=(0.25,) * 3, num_clips=1, num_crops=1)
        loader = DataLoader(val, batch_size=1, num_workers=2, collate_fn=collate_clips,
                            multiprocessing_context="fork")
        for epoch in range(2):
            val.set_epoch(epoch)
            assert sum(len(batch["video"]) for batch in loader) == 3
    finally:
        logger.removeHandler(handler)
        handler.close()
    warnings = [line for line in log_file.read_text().splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and str(root / "decord_probe.jsonl") in warnings[0]
    assert warnings[0].split()[1] == str(os.getpid())  # given by the main process
