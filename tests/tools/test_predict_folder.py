"""tools/predict.py over the whole shared folder of real videos with a tiny videocls checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from videocls.data.io.access import VideoDecodeError
from videocls.data.io.reader import open_video

REPO = Path(__file__).resolve().parents[2]
REAL_VIDEOS = REPO.parent / "shared" / "real-videos"


def _readable(path: Path) -> bool:
    try:
        open_video(path).close()
    except VideoDecodeError:
        return False
    return True


def test_a_folder_gives_one_row_per_video_file(tiny_run):
    if not REAL_VIDEOS.is_dir():
        pytest.skip(f"{REAL_VIDEOS} is missing")
    manifest = (REAL_VIDEOS / "MANIFEST.tsv").read_text().splitlines()[1:]
    videos = sorted(REAL_VIDEOS / line.split("\t")[0] for line in manifest)
    # afl-small_movie.mp4 (12 packets, 11 decodable frames) opens: it is classified from those.
    readable = {str(path): _readable(path) for path in videos}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "predict.py"), str(REAL_VIDEOS), "--weights",
         str(tiny_run / "checkpoints" / "last.pt"), "--num-clips", "1", "--num-crops", "1", "--topk", "3",
         "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == (0 if all(readable.values()) else 1), proc.stderr[-3000:]  # 1: some file failed
    rows = json.loads(proc.stdout)
    assert [row["video"] for row in rows] == [str(path) for path in videos]  # MANIFEST.tsv left out, sorted
    for row in rows:
        if readable[row["video"]]:
            assert len(row["topk"]) == 3 and 0 < sum(p["prob"] for p in row["topk"]) <= 1 + 1e-5, row
        else:
            assert row["video"] in row["error"], row
    assert "checkpoint's data config" in proc.stderr
