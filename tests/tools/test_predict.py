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


def _predict(*args: str) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_predict", REPO / "tools" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([*args, "--device", "cpu"])


def test_a_class_list_that_does_not_fit_the_weights_is_refused(tmp_path, capsys):
    """DeepMind's 400-way head with 10 names: an error naming both counts, never a random 10-way head."""
    classes = tmp_path / "ten.txt"
    classes.write_text("".join(f"class {i}\n" for i in range(10)))
    weights = WEIGHTS / "i3d-kinetics-400.ckpt"
    assert _predict(str(REAL_VIDEOS / "g1.avi"), "--model", "i3d_inception_v1", "--weights", str(weights),
                    "--classes", str(classes)) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing was classified
    expected = f"class file {classes} lists 10 class names: {weights}: the checkpoint's classifier has 400"
    assert expected in err, err


def test_a_videocls_run_refuses_a_wrong_or_empty_class_list(tiny_run, tmp_path, capsys):
    video = str(REAL_VIDEOS / "g1.avi")
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    assert _predict(video, "--weights", str(tiny_run), "--classes", str(three)) == 2
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    expected = f"class file {three} lists 3 class names but {checkpoint} scores 10 classes"
    assert expected in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert _predict(video, "--weights", str(tiny_run), "--classes", str(empty)) == 2
    out, err = capsys.readouterr()
    assert out == "" and str(empty) in err, err
