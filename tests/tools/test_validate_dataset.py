"""tools/validate_dataset.py over the real corpus: the broken file is flagged, the rest pass;
partial files are kept or dropped by the frames they lost; bad output paths are refused first."""

import csv
import importlib.util
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from videocls.data.validate import check_videos, keeps

REPO = Path(__file__).resolve().parents[2]
BROKEN = "afl-small_movie.mp4"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def probe_cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path_factory.mktemp("videocls-cache")))
        yield


def manifest(real_videos_dir) -> dict[str, dict]:
    with open(real_videos_dir / "MANIFEST.tsv") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def test_real_corpus_acceptance(real_videos_dir, tmp_path, capsys):
    files = sorted(manifest(real_videos_dir))
    annotations = tmp_path / "all.txt"
    annotations.write_text("".join(f"{name} 0\n" for name in files))
    report, clean = tmp_path / "report.json", tmp_path / "clean.txt"
    argv = [
        str(annotations),
        "--root",
        str(real_videos_dir),
        "-j",
        "2",
        "--report",
        str(report),
        "--clean",
        str(clean),
    ]
    assert load_tool("validate_dataset").main(argv) == 0

    videos = {Path(v["path"]).name: v for v in json.loads(report.read_text())["videos"]}
    assert set(videos) == set(files)
    assert videos[BROKEN]["status"] in ("unreadable", "partial")
    assert {name: v["status"] for name, v in videos.items() if name != BROKEN} == {
        n: "ok" for n in files if n != BROKEN
    }
    assert all(v["kept"] and v["lost_frames"] == 0 for name, v in videos.items() if name != BROKEN)
    broken_partial = videos[BROKEN]["status"] == "partial"
    if broken_partial:
        # 12 packets, 11 frames decode: one frame lost, within the default allowance of 2.
        broken = videos[BROKEN]
        assert (broken["frames"], broken["lost_frames"], broken["kept"]) == (11, 1, True)
    kept_lines = [
        line
        for line in annotations.read_bytes().splitlines(keepends=True)
        if broken_partial or not line.startswith(BROKEN.encode())
    ]
    assert clean.read_bytes() == b"".join(kept_lines)
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            f"{len(files)} videos: {len(files) - 1} ok, "
            + ("0 unreadable, 1 partial (1 kept, 0 dropped)" if broken_partial else
               "1 unreadable, 0 partial (0 kept, 0 dropped)")
        )
    )

    # The reported properties, against the corpus manifest and what test_video_io establishes.
    for name, row in manifest(real_videos_dir).items():
        if name != BROKEN:
            assert f"{videos[name]['width']}x{videos[name]['height']}" == row["size"], name
    assert (videos["g1.avi"]["frames"], videos["g1.avi"]["fps"], videos["g1.avi"]["duration"]) == (
        16,
        25.0,
        0.64,
    )
    assert videos["tree.avi"]["header_frames"] == 444 and videos["tree.avi"]["frames"] == 68
    assert videos["bikes.mp4"]["backend"] == "decord" and videos["bikes.mp4"]["decord_accurate"] is True
    assert videos["Megamind.avi"]["backend"] == "pyav" and videos["Megamind.avi"]["decord_accurate"] is False
    assert videos["Megamind.avi"]["decord_failure"] is not None


def test_truncated_avi_is_partial_and_hanging_file_times_out(real_videos_dir, tmp_path):
    truncated = tmp_path / "g1_half.avi"
    data = (real_videos_dir / "g1.avi").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    fifo = tmp_path / "never_written.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: a hanging file
    whole = str(real_videos_dir / "g1.avi")
    checks = check_videos([str(fifo), str(truncated), whole], jobs=1, timeout=4)
    assert checks[str(fifo)].status == "unreadable" and "timed out" in checks[str(fifo)].reason
    # The worker killed for the FIFO is replaced and the remaining files are still checked.
    assert checks[str(truncated)].status == "partial"
    assert "header counts 16 frames" in checks[str(truncated)].reason
    assert checks[whole].status == "ok" and checks[whole].reason is None


def test_missing_annotation_file_is_the_tools_own_error(tmp_path, capsys):
    assert load_tool("validate_dataset").main([str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: annotation file not found" in capsys.readouterr().err


def cut_before_last_packets(src: Path, dst: Path, k: int) -> None:
    """``dst``: ``src`` cut where its k-th last video packet starts (the AVI header keeps
    counting every frame), so exactly k frames are lost."""
    with av.open(str(src)) as container:
        starts = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    dst.write_bytes(src.read_bytes()[: starts[-k]])


def test_partial_videos_are_kept_when_they_lost_few_frames(real_videos_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path / "cache"))
    g1 = real_videos_dir / "g1.avi"  # 16 frames; the header says 16
    cut = {k: tmp_path / f"g1_cut{k}.avi" for k in (1, 3, 8)}
    for k, path in cut.items():
        cut_before_last_packets(g1, path, k)
    annotations = tmp_path / "list.txt"
    annotations.write_text(f"# header comment\n{g1} 0\n" + "".join(f"{p} {k}\n" for k, p in cut.items()))
    lines = annotations.read_bytes().splitlines(keepends=True)
    tool = load_tool("validate_dataset")

    def run(*options) -> tuple[dict, bytes, str]:
        report, clean = tmp_path / "report.json", tmp_path / "clean.txt"
        argv = [str(annotations), "-j", "2", "--report", str(report), "--clean", str(clean), *options]
        assert tool.main(argv) == 0
        videos = {Path(v["path"]).name: v for v in json.loads(report.read_text())["videos"]}
        return videos, clean.read_bytes(), capsys.readouterr().out

    videos, clean, out = run()
    assert {n: (v["status"], v["frames"], v["lost_frames"]) for n, v in videos.items()} == {
        "g1.avi": ("ok", 16, 0),
        "g1_cut1.avi": ("partial", 15, 1),
        "g1_cut3.avi": ("partial", 13, 3),
        "g1_cut8.avi": ("partial", 8, 8),
    }
    # Default allowance max(2, floor(1% of 16)) = 2 frames.
    assert {n: v["kept"] for n, v in videos.items()} == {
        "g1.avi": True, "g1_cut1.avi": True, "g1_cut3.avi": False, "g1_cut8.avi": False
    }
    assert clean == b"".join(lines[:3])  # the comment, g1 and g1_cut1
    assert "g1_cut1.avi: the header counts 16 frames but the packets span 15 (kept, 1 frame(s) lost)" in out
    assert "g1_cut3.avi: the header counts 16 frames but the packets span 13 (dropped, 3 frame(s) lost)" \
        in out
    assert out.strip().endswith("4 videos: 1 ok, 0 unreadable, 3 partial (1 kept, 2 dropped)")

    videos, clean, _ = run("--max-lost-frames", "3")
    assert [n for n, v in videos.items() if v["kept"]] == ["g1.avi", "g1_cut1.avi", "g1_cut3.avi"]
    assert clean == b"".join(lines[:4])
    videos, clean, _ = run("--max-lost-frames", "0", "--max-lost-fraction", "0.5")  # floor(0.5 * 16) = 8
    assert all(v["kept"] for v in videos.values()) and clean == b"".join(lines)
    videos, clean, out = run("--max-lost-frames", "0", "--max-lost-fraction", "0")
    assert [n for n, v in videos.items() if v["kept"]] == ["g1.avi"] and clean == b"".join(lines[:2])


def encode_h264(path: Path, frames: int) -> list[tuple[int, int]]:
    """A small H.264 video (MP4 or AVI by the suffix); returns each packet's (pos, size)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "8", "bf": "0"}
        for i in range(frames):
            image = np.full((64, 64, 3), 5 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]


def test_h264_off_by_one_files_are_partial_and_kept(tmp_path, monkeypatch):
    """The two off-by-one shapes of real datasets, in H.264: an MP4 whose last packet does
    not decode (N packets, N - 1 frames) and an AVI whose header counts one frame more than
    its packets hold."""
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path / "cache"))
    mp4, avi = tmp_path / "last_packet_bad.mp4", tmp_path / "header_one_more.avi"
    packets = encode_h264(mp4, 40)
    data = bytearray(mp4.read_bytes())
    pos, size = packets[-1]
    data[pos : pos + size] = bytes(size)  # the last frame's data is lost, its packet stays
    mp4.write_bytes(bytes(data))
    packets = encode_h264(avi, 40)
    avi.write_bytes(avi.read_bytes()[: packets[-1][0]])
    checks = check_videos([str(mp4), str(avi)], jobs=2)
    mp4_check, avi_check = checks[str(mp4)], checks[str(avi)]
    assert (mp4_check.status, mp4_check.packets, mp4_check.frames, mp4_check.lost_frames) == (
        "partial", 40, 39, 1
    )
    assert (avi_check.status, avi_check.header_frames, avi_check.frames, avi_check.lost_frames) == (
        "partial", 40, 39, 1
    )
    assert keeps(mp4_check) and keeps(avi_check)
    assert not keeps(mp4_check, max_lost_frames=0) and not keeps(avi_check, max_lost_frames=0)


@pytest.fixture
def one_video_list(real_videos_dir, tmp_path, monkeypatch):
    """An annotation file of one real video, and the probe cache the check would write to.
    The video is a fresh copy: no process has probed it yet, so any check writes the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(cache))
    video = tmp_path / "g1-copy.avi"
    shutil.copyfile(real_videos_dir / "g1.avi", video)
    annotations = tmp_path / "list.txt"
    annotations.write_text(f"{video} 0\n")
    return annotations, cache / "decord_probe.jsonl"


def refused(argv, capsys, probe_cache) -> str:
    """The tool's error message; asserts it exits 2 before any video was probed."""
    assert load_tool("validate_dataset").main([str(a) for a in argv]) == 2
    assert not probe_cache.exists(), "videos were checked before the refusal"
    return capsys.readouterr().err


def test_clean_onto_its_own_input_is_refused_before_any_work(one_video_list, tmp_path, capsys):
    annotations, probe_cache = one_video_list
    before = annotations.read_bytes()
    link = tmp_path / "link.txt"
    link.symlink_to(annotations)
    for same in (annotations, tmp_path / "sub" / ".." / annotations.name, link):
        (tmp_path / "sub").mkdir(exist_ok=True)
        err = refused([annotations, "--clean", same], capsys, probe_cache)
        assert f"--clean {same} is the annotation file being checked" in err
        err = refused([annotations, "--report", same], capsys, probe_cache)
        assert "--report" in err and "is the annotation file being checked" in err
    assert annotations.read_bytes() == before
    out = tmp_path / "out"
    err = refused([annotations, "--report", out, "--clean", out], capsys, probe_cache)
    assert "--report and --clean are the same file" in err


def test_unwritable_outputs_are_refused_before_any_work(one_video_list, tmp_path, capsys):
    annotations, probe_cache = one_video_list
    missing_dir = tmp_path / "no-such-dir" / "report.json"
    err = refused([annotations, "--report", missing_dir], capsys, probe_cache)
    assert f"--report {missing_dir}: directory {missing_dir.parent} does not exist" in err
    err = refused([annotations, "--clean", tmp_path], capsys, probe_cache)
    assert f"--clean {tmp_path} is a directory" in err
    if os.geteuid() == 0:
        unwritable = Path("/sys/report.json")  # sysfs refuses new files, even to root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        unwritable = locked / "report.json"
    err = refused([annotations, "--report", unwritable], capsys, probe_cache)
    assert f"--report {unwritable}: cannot write in {unwritable.parent}" in err
    # The same outputs in a writable place run (and probe) normally.
    assert load_tool("validate_dataset").main([str(annotations), "--report", str(tmp_path / "r.json")]) == 0
    assert [json.loads(line)["path"] for line in probe_cache.read_text().splitlines()] == [
        str(tmp_path / "g1-copy.avi")
    ]


def test_labels_outside_num_classes_are_refused_before_any_work(one_video_list, capsys):
    annotations, probe_cache = one_video_list
    video = annotations.read_text().split()[0]
    annotations.write_text(f"{video} 0\n{video} 3\n")
    err = refused([annotations, "--num-classes", "3"], capsys, probe_cache)
    assert f"{annotations}:2: label 3 is outside 0..2 for num_classes=3" in err
    assert load_tool("validate_dataset").main([str(annotations), "--num-classes", "4"]) == 0
