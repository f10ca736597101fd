"""Per-class thresholds and abstention: hand-computed cases and brute force over every threshold."""

import math

import pytest
import torch

from videocls.metrics.thresholds import (
    abstain_cost,
    abstain_threshold,
    apply_thresholds,
    cost_thresholds,
    coverage_accuracy_curve,
    f1_thresholds,
    multilabel_cost,
    per_class_prf,
)

SCORES = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.2]])
TARGETS = torch.tensor([[1], [0], [1], [1], [0]])


def test_f1_optimal_threshold_by_hand():
    # Keeping the top 1..5: F1 = 2/4, 2/5, 4/6, 6/7, 6/8 -> keep 4, threshold midway 0.6 / 0.2.
    thresholds, f1 = f1_thresholds(SCORES, TARGETS)
    assert thresholds.tolist() == pytest.approx([0.4])
    assert f1.tolist() == pytest.approx([6 / 7])


@pytest.mark.parametrize(
    "cost_fp, cost_fn, threshold, cost",
    [
        (1.0, 5.0, 0.4, 1.0),  # totals 15, 10, 11, 6, 1, 2 for keeping 0..5
        (5.0, 1.0, 0.85, 2.0),  # totals 3, 2, 7, 6, 5, 10
    ],
)
def test_cost_optimal_threshold_by_hand(cost_fp, cost_fn, threshold, cost):
    thresholds, best = cost_thresholds(SCORES, TARGETS, cost_fp, cost_fn)
    assert thresholds.tolist() == pytest.approx([threshold])
    assert best.tolist() == pytest.approx([cost])
    assert multilabel_cost(SCORES, TARGETS, thresholds, cost_fp, cost_fn) == pytest.approx(cost / 5)


def _brute_force(scores, target, objective):
    """Objective of the rule ``score >= t`` for t at every score and above them all."""
    candidates = sorted(set(scores.tolist())) + [math.inf]
    values = []
    for t in candidates:
        predicted = scores >= t
        tp = int((predicted & target).sum())
        fp = int((predicted & ~target).sum())
        fn = int((~predicted & target).sum())
        values.append(objective(tp, fp, fn))
    return values


def test_matches_brute_force_with_ties_and_per_class_costs():
    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(60, 4, generator=gen) * 10).round() / 10  # many ties
    targets = torch.rand(60, 4, generator=gen) < torch.tensor([0.5, 0.2, 0.05, 0.0])
    thresholds, f1 = f1_thresholds(scores, targets)
    cost_fp, cost_fn = torch.tensor([1.0, 2.0, 1.0, 3.0]), torch.tensor([4.0, 1.0, 10.0, 1.0])
    c_thresholds, costs = cost_thresholds(scores, targets, cost_fp, cost_fn)
    for c in range(4):
        s, t = scores[:, c], targets[:, c]
        f1s = _brute_force(s, t, lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        assert f1[c].item() == pytest.approx(max(f1s))
        achieved = per_class_prf(apply_thresholds(scores, thresholds), targets)["f1"][c].item()
        assert achieved == pytest.approx(max(f1s))
        c_fp, c_fn = cost_fp[c].item(), cost_fn[c].item()
        totals = _brute_force(s, t, lambda tp, fp, fn, c_fp=c_fp, c_fn=c_fn: c_fp * fp + c_fn * fn)
        assert costs[c].item() == pytest.approx(min(totals))
        kept = apply_thresholds(scores, c_thresholds)[:, c]
        assert (cost_fp[c] * (kept & ~t).sum() + cost_fn[c] * (~kept & t).sum()).item() == pytest.approx(
            min(totals)
        )
    # A class without positives: nothing is predicted.
    assert not apply_thresholds(scores, thresholds)[:, 3].any()


def test_per_class_prf_by_hand():
    predicted = torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool)
    targets = torch.tensor([[1, 0], [0, 1], [1, 0]])
    m = per_class_prf(predicted, targets)
    assert m["precision"].tolist() == pytest.approx([0.5, 1.0])
    assert m["recall"].tolist() == pytest.approx([0.5, 1.0])
    assert m["f1"].tolist() == pytest.approx([0.5, 1.0])
    assert m["support"].tolist() == [2, 1]


def _probs(confidences, correct, num_classes=3):
    """Rows whose top class (0) has the given confidence; the label is 0 when correct, else 1."""
    rows = []
    for p in confidences:
        rest = (1 - p) / (num_classes - 1)
        rows.append([p] + [rest] * (num_classes - 1))
    return torch.tensor(rows), torch.tensor([0 if ok else 1 for ok in correct])


def test_abstention_curve_and_cost_by_hand():
    probs, labels = _probs([0.95, 0.9, 0.8, 0.6, 0.5], [True, True, False, True, False])
    curve = coverage_accuracy_curve(probs, labels)
    assert curve["coverage"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["accuracy"][1:].tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5])
    # Error 10, abstain 1: answering 0..5 costs 5, 4, 3, 12, 11, 20 -> answer the top two.
    p = abstain_threshold(probs, labels, cost_error=10, cost_abstain=1)
    assert p == pytest.approx(0.85)
    assert abstain_cost(probs, labels, p, cost_error=10, cost_abstain=1) == pytest.approx(
        {"cost": 3 / 5, "coverage": 0.4, "accuracy": 1.0}
    )
    assert abstain_cost(probs, labels, 0.0, cost_error=10, cost_abstain=1)["cost"] == pytest.approx(20 / 5)
    # Target accuracy 0.75: the highest coverage that reaches it answers four.
    assert abstain_threshold(probs, labels, target_accuracy=0.75) == pytest.approx(0.55)


def test_abstention_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(80, 5, generator=gen) * 2, dim=1).round(decimals=2)
    labels = torch.randint(0, 5, (80,), generator=gen)
    confidence = probs.max(1).values
    for cost_error, cost_abstain in ((10.0, 1.0), (3.0, 1.0), (1.0, 5.0)):
        best = min(
            abstain_cost(probs, labels, t, cost_error=cost_error, cost_abstain=cost_abstain)["cost"]
            for t in sorted(set(confidence.tolist())) + [math.inf]
        )
        p = abstain_threshold(probs, labels, cost_error=cost_error, cost_abstain=cost_abstain)
        assert abstain_cost(probs, labels, p, cost_error=cost_error, cost_abstain=cost_abstain)[
            "cost"
        ] == pytest.approx(best)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="cost_fp: 3 values for 1 classes"):
        cost_thresholds(SCORES, TARGETS, [1, 2, 3], 1)
    with pytest.raises(ValueError, match="N x C"):
        f1_thresholds(SCORES.flatten(), TARGETS.flatten())
    with pytest.raises(ValueError, match="NaN"):
        f1_thresholds(torch.tensor([[float("nan")]]), torch.tensor([[1]]))
