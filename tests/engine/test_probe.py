"""Linear probe: hand-countable accuracy on separable features, the results.json of tools/test.py."""

import csv
import json

import numpy as np
import pytest
from feature_files import clusters, write_features

from videocls.engine.probe import run_probe, split_holdout


def test_probe_accuracy_against_hand_counts(tmp_path):
    classes = ["a", "b", "c"]
    x, y = clusters(30, 3)
    train = write_features(tmp_path / "train.npz", x, y, classes)
    # Held out: 4 per class, separable, but 3 videos carry another class's label -> 9 / 12 right.
    xv, yv = clusters(4, 3, seed=1)
    given = yv.copy()
    given[[0, 4, 5]] = [1, 2, 0]  # one wrong in class 0 (index 0), two in class 1 (4, 5)
    val = write_features(tmp_path / "val.npz", xv, given, classes, prefix="w")
    summary = run_probe(train, tmp_path / "out", val=val)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["video"]["top1"] == pytest.approx(9 / 12)
    assert results["video"]["top5"] == pytest.approx(1.0)  # k capped at 3 classes
    # Given-label classes: "a" holds 0,1,2,3 + 5 (wrong) ... per-class recall of the given labels.
    recalls = [np.mean([yv[i] == c for i in range(12) if given[i] == c]) for c in range(3)]
    assert results["video"]["mean_class_acc"] == pytest.approx(np.mean(recalls))
    assert results["clip"] == {} and results["num_videos"] == 12
    assert results["probe"]["train_top1"] == 1.0 and summary["video"] == results["video"]
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["pred"]) for r in rows] == yv.tolist()  # the probe predicts the true clusters
    assert rows[0]["video"] == "/data/w000.mp4"
    assert (tmp_path / "out" / "per_class.csv").is_file()


def test_holdout_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), 10)
    fit, held = split_holdout(labels, 0.2, seed=0)
    assert len(held) == 6 and np.bincount(labels[held]).tolist() == [2, 2, 2]
    assert set(fit).isdisjoint(held) and len(fit) + len(held) == 30
    with pytest.raises(ValueError, match="holdout"):
        split_holdout(labels, 1.5, seed=0)


def test_holdout_probe_and_mismatched_files(tmp_path):
    x, y = clusters(10, 3)
    train = write_features(tmp_path / "train.npz", x, y, ["a", "b", "c"])
    results = run_probe(train, tmp_path / "out", holdout=0.3)
    assert results["num_videos"] == 9 and results["video"]["top1"] == 1.0
    other = write_features(tmp_path / "other.npz", x[:, :4], y, ["a", "b", "c"])
    with pytest.raises(ValueError, match="other.npz: features or classes differ"):
        run_probe(train, tmp_path / "out2", val=other)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a features file"):
        run_probe(tmp_path / "junk.npz", tmp_path / "out3")
