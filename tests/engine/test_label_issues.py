"""Label-issue finding: cleanlab on probabilities with known flips, and end to end on features."""

import csv
import json

import numpy as np
import pytest
from feature_files import clusters, write_features

from videocls.engine.label_issues import find_issues, label_issues, precision_recall


def test_flags_exactly_the_flipped_labels_of_a_confident_model():
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(4), 50)
    probs = np.full((200, 4), 0.1 / 3)
    probs[np.arange(200), true] = 0.9  # a model right about every video
    flipped = np.sort(rng.choice(200, 20, replace=False))
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, 4, 20)) % 4
    ranked, scores, noise = label_issues(given, probs)
    assert sorted(ranked.tolist()) == flipped.tolist()
    np.testing.assert_allclose(scores, probs[np.arange(200), given])  # self-confidence
    # Estimated noise per given class: the flipped share of the videos carrying that label.
    expected = [np.mean(given[given == c] != true[given == c]) for c in range(4)]
    np.testing.assert_allclose(noise, expected, atol=1e-9)


def test_precision_recall_by_hand():
    m = precision_recall({"a", "b", "c", "d"}, {"a", "b", "x"})
    assert (m["precision"], m["recall"], m["found"]) == (0.5, 2 / 3, 2)


def test_end_to_end_on_features_with_a_noise_file(tmp_path):
    x, true = clusters(40, 5)
    rng = np.random.default_rng(3)
    flipped = np.sort(rng.choice(len(true), 20, replace=False))
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, 5, 20)) % 5
    features = write_features(tmp_path / "train.npz", x, given, list("abcde"))
    noise = tmp_path / "train_noise.csv"
    noise.write_text(
        "path,true_label,given_label\n" + "".join(f"v{i:03d}.mp4,{true[i]},{given[i]}\n" for i in flipped)
    )  # list-relative, as make_dataset writes
    summary = find_issues(features, tmp_path / "out", folds=5, noise_file=noise)
    check = summary["against_noise_file"]
    # The probe learns the noise too (its probabilities of the true class vary), so confident
    # learning's estimate of the noise is conservative: nothing clean flagged, most flips found.
    assert check["precision"] == 1.0 and check["recall"] >= 0.7
    with open(tmp_path / "out" / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["video"][-7:-4]) for r in rows} <= set(flipped.tolist()) and len(rows) == check["flagged"]
    assert [float(r["score"]) for r in rows] == sorted(float(r["score"]) for r in rows)  # worst first
    for r in rows:
        i = int(r["video"][-7:-4])
        assert (int(r["given_label"]), int(r["suggested_label"]), r["given_name"]) == (
            given[i],
            true[i],
            "abcde"[given[i]],
        )
    stored = json.loads((tmp_path / "out" / "label_issues_summary.json").read_text())
    flagged_rows = [int(r["video"][-7:-4]) for r in rows]
    assert [c["flagged"] for c in stored["per_class"]] == np.bincount(
        given[flagged_rows], minlength=5
    ).tolist()
    # Separable clusters: every flipped video's out-of-sample prediction is its true class (and
    # one clean video near a boundary is misclassified: flagging all disagreements is less precise).
    summary = find_issues(
        features, tmp_path / "all", folds=5, noise_file=noise, filter_by="predicted_neq_given"
    )
    assert summary["against_noise_file"]["recall"] == 1.0
    assert summary["against_noise_file"]["precision"] == pytest.approx(20 / 21)


def test_too_few_videos_per_class_for_the_folds(tmp_path):
    x, y = clusters(3, 2)
    features = write_features(tmp_path / "f.npz", x, y, ["a", "b"])
    with pytest.raises(ValueError, match="fewer than --folds 5"):
        find_issues(features, tmp_path / "out", folds=5)
