"""tools/validate_dataset.py over the real corpus: the broken file is flagged, the rest pass."""

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest

from videocls.data.validate import check_videos

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
    ok_lines = [
        line
        for line in annotations.read_bytes().splitlines(keepends=True)
        if not line.startswith(BROKEN.encode())
    ]
    assert clean.read_bytes() == b"".join(ok_lines)
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            f"{len(files)} videos: {len(files) - 1} ok, "
            + (
                "1 unreadable, 0 partial"
                if videos[BROKEN]["status"] == "unreadable"
                else "0 unreadable, 1 partial"
            )
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
