"""tools/predict.py with DeepMind's Kinetics-400 I3D on real files, and a per-file error."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REAL_VIDEOS, WEIGHTS = REPO.parent / "shared" / "real-videos", REPO.parent / "shared" / "weights"
CYCLING = {"riding a bike", "riding mountain bike", "riding unicycle"}


def test_predict_g1_is_cycling_and_bad_files_do_not_stop_it(tmp_path):
    missing = tmp_path / "missing.mp4"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "predict.py"), str(REAL_VIDEOS / "g1.avi"), str(missing),
         "--model", "i3d_inception_v1", "--weights", str(WEIGHTS / "i3d-kinetics-400.ckpt"),
         "--classes", str(WEIGHTS / "kinetics400_classes.txt"), "--json", "--topk", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 1  # one file failed; the others were still classified
    g1, broken = json.loads(proc.stdout)
    labels = [entry["label"] for entry in g1["topk"]]
    assert CYCLING & set(labels), labels
    probs = [entry["prob"] for entry in g1["topk"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0  # probabilities, not logits
    assert broken["video"] == str(missing) and str(missing) in broken["error"]
