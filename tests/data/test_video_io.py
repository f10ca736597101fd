"""The video reader against the real corpus: every frame served must equal a plain sequential PyAV decode."""

import gc
import json
import multiprocessing
import os
import pickle
from fractions import Fraction
from functools import cache
from pathlib import Path
from queue import Empty

import av
import decord
import numpy as np
import pytest
import torch

from videocls.data.io import probe, probe_cache
from videocls.data.io.access import VideoDecodeError
from videocls.data.io.demux import open_container
from videocls.data.io.reader import fallback_counts, open_video

REAL_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "real-videos"
ALL_FILES = sorted(p.name for p in REAL_VIDEOS.glob("*") if p.name != "MANIFEST.tsv")
# decord serves these exactly (and is trusted to): both backends must agree on them.
DECORD_EXACT = ["bikes.mp4", "balle1-vp9.avi", "tree.avi", "carphone_distorted.mp4"]


@pytest.fixture(autouse=True, scope="module")
def probe_cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("videocls-cache")
        mp.setenv("VIDEOCLS_CACHE_DIR", str(cache))
        yield cache


@cache
def stream_facts(name: str) -> tuple[int, list[int], Fraction, int]:
    """Frame count and pts of a plain sequential decode, the time base and the header count."""
    with av.open(str(REAL_VIDEOS / name)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
        return len(pts), pts, stream.time_base, stream.frames


def sequential_frames(name: str, indices) -> dict[int, np.ndarray]:
    """The reference: frames of a plain decode from the start, kept where ``indices`` want."""
    wanted = set(indices)
    with av.open(str(REAL_VIDEOS / name)) as container:
        return {
            i: frame.to_ndarray(format="rgb24")
            for i, frame in enumerate(container.decode(container.streams.video[0]))
            if i in wanted
        }


def assert_frames_equal(reader, name: str, indices) -> None:
    reference = sequential_frames(name, indices)
    got = reader.get_frames(indices)
    assert got.dtype == torch.uint8 and got.shape == (len(indices), *reference[indices[0]].shape)
    for frame, i in zip(got.numpy(), indices, strict=True):
        assert np.array_equal(frame, reference[i]), f"{name}: frame {i} differs ({reader.backend})"


@pytest.mark.parametrize("name", ALL_FILES)
def test_random_frames_equal_sequential_decode(name):
    reader = open_video(REAL_VIDEOS / name)
    assert len(reader) == stream_facts(name)[0]
    rng = np.random.default_rng(sum(name.encode()))
    indices = rng.integers(0, len(reader), 8).tolist()
    indices += [indices[0], len(reader) - 1]  # a repeat, and the last frame (decoder flush)
    assert_frames_equal(reader, name, indices)


def test_real_corpus_is_complete():
    assert len(ALL_FILES) == 21


def test_frame_count_is_what_decodes_not_the_header():
    # tree.avi's header counts 444 frames (dropped ones included); 68 decode.
    assert stream_facts("tree.avi")[3] == 444 and len(open_video(REAL_VIDEOS / "tree.avi")) == 68


def test_broken_file_yields_the_frames_that_exist():
    name = "afl-small_movie.mp4"
    reader = open_video(REAL_VIDEOS / name)
    assert stream_facts(name)[3] == 12 and len(reader) == stream_facts(name)[0] == 11
    assert reader.backend == "pyav"
    assert_frames_equal(reader, name, list(range(11))[::-1])
    with pytest.raises(IndexError, match=name):
        reader.get_frames([11])


def test_truncated_avi_whose_keyframe_flags_lie(tmp_path):
    # Cut before its index, an AVI flags every packet a keyframe; seeking to them is wrong.
    name = tmp_path / "vtest-cut.avi"
    name.write_bytes((REAL_VIDEOS / "vtest.avi").read_bytes()[:800_000])
    with av.open(str(name)) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    for backend in ("auto", "pyav"):
        reader = open_video(name, backend=backend)
        assert len(reader) == len(reference) and reader.backend == "pyav"
        indices = [70, 9, 40, 41, len(reference) - 1]
        for frame, i in zip(reader.get_frames(indices).numpy(), indices, strict=True):
            assert np.array_equal(frame, reference[i]), f"frame {i}"


@pytest.mark.parametrize("name", DECORD_EXACT)
def test_decord_and_pyav_give_identical_frames(name):
    by_decord = open_video(REAL_VIDEOS / name, backend="decord")
    by_pyav = open_video(REAL_VIDEOS / name, backend="pyav")
    assert (by_decord.backend, by_pyav.backend) == ("decord", "pyav")
    assert open_video(REAL_VIDEOS / name).backend == "decord"
    indices = np.random.default_rng(0).integers(0, len(by_decord), 12).tolist() + [len(by_decord) - 1]
    assert np.array_equal(by_decord.get_frames(indices).numpy(), by_pyav.get_frames(indices).numpy())
    assert_frames_equal(by_pyav, name, indices)


def test_megamind_decord_seek_error_is_detected_and_served_exactly():
    name = "Megamind.avi"
    raw = decord.VideoReader(str(REAL_VIDEOS / name), num_threads=1)
    wrong = raw.get_batch([194]).asnumpy()[0]
    assert not np.array_equal(wrong, sequential_frames(name, [194])[194])  # the bug is real

    before = fallback_counts().get("decord_index_mismatch", 0)
    reader = open_video(REAL_VIDEOS / name)
    assert reader.backend == "pyav"
    assert fallback_counts()["decord_index_mismatch"] == before + 1
    assert_frames_equal(reader, name, [194, 40, 269, 0, 97, 98, 99, 153, 154, 155, 194])
    with pytest.raises(VideoDecodeError, match="Megamind.avi"):
        open_video(REAL_VIDEOS / name, backend="decord")


@pytest.mark.parametrize("name", ["Effet_force_magnetique.ogv", "sage-example.wmv"])
def test_files_decord_cannot_open_fall_back_to_pyav(name):
    with pytest.raises(decord.DECORDError):
        decord.VideoReader(str(REAL_VIDEOS / name))
    before = fallback_counts().get("decord_open_failed", 0)
    reader = open_video(REAL_VIDEOS / name)
    assert reader.backend == "pyav" and fallback_counts()["decord_open_failed"] == before + 1
    assert_frames_equal(reader, name, list(range(len(reader)))[::-1])


def test_frame_rate_and_timestamps():
    # No header rate: from the timestamps (Theora, 1/25 s time base).
    assert open_video(REAL_VIDEOS / "Effet_force_magnetique.ogv").fps == 25.0
    megamind = open_video(REAL_VIDEOS / "Megamind.avi")
    assert megamind.fps == pytest.approx(2997 / 125) and megamind.duration == pytest.approx(270 * 125 / 2997)
    # tree.avi: 68 frames over 443 ticks of 1/15 s; the header's 15 fps counts dropped frames.
    tree = open_video(REAL_VIDEOS / "tree.avi")
    _, pts, time_base, _ = stream_facts("tree.avi")
    assert tree.fps == pytest.approx(67 / float((pts[-1] - pts[0]) * time_base))
    seconds = tree.get_timestamps([0, 1, 67, 1]).numpy()
    expected = [float((pts[i] - pts[0]) * time_base) for i in (0, 1, 67, 1)]
    np.testing.assert_allclose(seconds, expected)
    # Megamind's decoded pts come out of order; timestamps follow presentation order.
    seconds = megamind.get_timestamps([0, 3, 4, 269]).numpy()
    np.testing.assert_allclose(seconds, np.array([0, 3, 4, 269]) * 125 / 2997)


def test_pickled_reader_after_use_works():
    for name in ("bikes.mp4", "Megamind.avi"):  # one served by decord, one by PyAV
        reader = open_video(REAL_VIDEOS / name)
        first = reader.get_frames([5, 100]).numpy()
        copy = pickle.loads(pickle.dumps(reader))
        assert copy.backend == reader.backend and len(copy) == len(reader)
        assert np.array_equal(copy.get_frames([5, 100]).numpy(), first)
        assert_frames_equal(copy, name, [200, 3])
        reader.close()
        copy.close()


def _read_in_child(reader, indices, queue):
    queue.put(reader.get_frames(indices).numpy())


def test_forked_child_opens_its_own_decoder():
    ctx = multiprocessing.get_context("fork")
    for name in ("bikes.mp4", "Megamind.avi"):
        reader = open_video(REAL_VIDEOS / name)
        reader.get_frames([10])  # the parent's decoder is open when the child is forked
        queue = ctx.Queue()
        child = ctx.Process(target=_read_in_child, args=(reader, [120, 7], queue))
        child.start()
        try:
            frames = queue.get(timeout=60)  # before join: the child flushes the queue on exit
        except Empty:
            pytest.fail(f"{name}: the forked child returned nothing")
        finally:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
        assert child.exitcode == 0
        reference = sequential_frames(name, [120, 7])
        assert np.array_equal(frames[0], reference[120]) and np.array_equal(frames[1], reference[7])
        assert_frames_equal(reader, name, [11])  # the parent's decoder is untouched


def test_bad_paths_raise_errors_naming_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        open_video(missing)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video, just text\n" * 20)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        open_video(text)
    reader = open_video(REAL_VIDEOS / "g1.avi")
    for bad in ([16], [-1]):
        with pytest.raises(IndexError, match="g1.avi"):
            reader.get_frames(bad)
    with pytest.raises(ValueError, match="backend"):
        open_video(REAL_VIDEOS / "g1.avi", backend="opencv")


def _probe_in_child(names):
    for name in names:
        open_video(REAL_VIDEOS / name)


def test_probe_cache_is_shared_through_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(probe_cache, "_probes", {})
    names = ["g1.avi", "g2.avi", "retroMars2018.avi", "Principe_inertie.avi", "sage-example.flv"]
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_probe_in_child, args=(names[i:] + names[:i],)) for i in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    lines = (tmp_path / "decord_probe.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # concurrent appends left no torn line
    assert {Path(r["path"]).name for r in records} == set(names)

    def no_probe(*args):
        raise AssertionError("probed again although the disk cache holds the verdict")

    monkeypatch.setattr(probe, "run_probe", no_probe)
    for name in names:
        reader = open_video(REAL_VIDEOS / name)
        assert len(reader) == stream_facts(name)[0]
    assert open_video(REAL_VIDEOS / "Principe_inertie.avi").backend == "pyav"


def test_changed_file_is_probed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    copy = tmp_path / "g1-copy.avi"
    copy.write_bytes((REAL_VIDEOS / "g1.avi").read_bytes())
    assert len(open_video(copy)) == 16
    probes = []
    run_probe = probe.run_probe

    def counting_probe(path, index):
        probes.append(path)
        return run_probe(path, index)

    monkeypatch.setattr(probe, "run_probe", counting_probe)
    open_video(copy)
    assert probes == []
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert len(open_video(copy)) == 16 and probes == [str(copy.resolve())]


def test_disk_cache_is_compacted_when_mostly_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(probe_cache, "_probes", {})
    path = str((REAL_VIDEOS / "g1.avi").resolve())
    key = probe_cache.file_key(path)
    stale = probe_cache.Probe(num_frames=1, fps=1.0, duration=1.0, height=1, width=1, decord_failure=None,
                            pyav_seekable=True)
    cache = tmp_path / "decord_probe.jsonl"
    cache.write_text("".join(probe_cache._record_line((*key[:2], t, *key[3:]), stale) for t in range(1100)))
    assert len(open_video(path)) == 16  # stale records are not trusted: probed again
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(records) == 1 and records[0]["num_frames"] == 16


class _Cycle:
    """A reference cycle: only the garbage collector frees what it holds."""


def _collect_and_exit() -> None:
    gc.collect()


def test_a_forked_child_does_not_free_its_parents_decoders():
    """A decoder left in garbage by the parent (here an open, threaded PyAV container in a
    reference cycle) is not freed by a forked child's garbage collector, which would join codec
    threads that only exist in the parent: without the fork rule of videocls.data.io.demux the
    child hangs (or segfaults) in gc.collect()."""
    ctx = multiprocessing.get_context("fork")
    gc.disable()  # the garbage must still be there when the child is forked
    try:
        container, stream = open_container(str(REAL_VIDEOS / "bikes.mp4"))
        for _, _frame in zip(range(3), container.decode(stream)):
            pass
        holder = _Cycle()
        holder.container, holder.me = container, holder
        del holder, container, stream, _frame
        child = ctx.Process(target=_collect_and_exit)
        child.start()
    finally:
        gc.enable()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung freeing its parent's decoder")
    assert child.exitcode == 0
    gc.collect()  # the parent frees it, where its threads live
