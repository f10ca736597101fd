"""Decision thresholds tuned on validation scores: pure functions of score tensors.

Multi-label (one independent score per class): class ``c`` is predicted when
``score >= thresholds[c]``; :func:`f1_thresholds` maximises each class's F1,
:func:`cost_thresholds` minimises ``cost_fp * FP + cost_fn * FN`` per class.

Single-label (softmax probabilities): the top class is predicted when its probability is at
least ``p`` and the model abstains otherwise; :func:`coverage_accuracy_curve` gives coverage
and accuracy for every ``p``, :func:`abstain_threshold` picks ``p`` for costs of a wrong answer
and of an abstention (or for a target accuracy).

Every search is exact: the scores are sorted once and every distinct cut is evaluated. A chosen
threshold lies midway between the lowest score kept and the highest score left out (so it does
not sit on a validation score), above the highest score when nothing is kept.
"""

from __future__ import annotations

import torch

__all__ = [
    "sweep",
    "f1_thresholds",
    "cost_thresholds",
    "apply_thresholds",
    "multilabel_cost",
    "per_class_prf",
    "coverage_accuracy_curve",
    "abstain_threshold",
    "abstain_cost",
]


def _above(x: torch.Tensor) -> torch.Tensor:
    """The next float64 above ``x``: a threshold nothing at ``x`` reaches."""
    return torch.nextafter(x, torch.tensor(float("inf"), dtype=torch.float64))


def sweep(scores: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every distinct cut of 1-D ``scores``: ``(thresholds, kept, true_kept)``, K + 1 entries each.

    Cut ``k`` keeps the items with ``score >= thresholds[k]``: ``kept[k]`` of them, of which
    ``true_kept[k]`` are ``positive``. Cut 0 keeps nothing; the cuts then lower the threshold
    one distinct score at a time until everything is kept.
    """
    scores = scores.double().flatten()
    positive = positive.bool().flatten()
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.numel()} scores but {positive.numel()} targets")
    if scores.numel() == 0:
        raise ValueError("no scores to tune a threshold on")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    order = torch.argsort(scores, descending=True, stable=True)
    s, p = scores[order], positive[order].double()
    cum_true = torch.cumsum(p, 0)
    # The last item of every run of equal scores: a cut may only fall after it.
    ends = torch.nonzero(torch.cat([s[1:] != s[:-1], torch.tensor([True])])).flatten()
    lower = torch.cat([s[ends[:-1] + 1], s[-1:]])  # the next lower score after each cut (none after the last)
    mids = (s[ends] + lower) / 2
    mids[-1] = s[-1]  # keeping everything: the lowest score itself
    # Rounding can put a midpoint of two adjacent floats onto the lower one; then use the upper.
    mids = torch.where(mids > lower, mids, s[ends])
    mids[-1] = s[-1]
    thresholds = torch.cat([_above(s[:1]), mids])
    kept = torch.cat([torch.zeros(1, dtype=torch.float64), (ends + 1).double()])
    true_kept = torch.cat([torch.zeros(1, dtype=torch.float64), cum_true[ends]])
    return thresholds, kept, true_kept


def _per_class(value, num_classes: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(num_classes)
    if t.numel() != num_classes:
        raise ValueError(f"{name}: {t.numel()} values for {num_classes} classes (give one, or one per class)")
    if (t < 0).any() or not torch.isfinite(t).all():
        raise ValueError(f"{name}: costs must be finite and non-negative")
    return t


def _check(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"expected N x C scores and N x C 0/1 targets, got {tuple(scores.shape)} and "
            f"{tuple(targets.shape)}"
        )


def f1_thresholds(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the threshold of highest F1 on ``(scores, targets)`` and that F1.

    Ties go to the higher threshold (fewer positives). A class without positives gets a
    threshold above all its scores (F1 0: predicting it can only add false positives).
    """
    _check(scores, targets)
    thresholds, best = [], []
    for c in range(scores.shape[1]):
        t, kept, tp = sweep(scores[:, c], targets[:, c])
        positives = tp[-1]
        f1 = torch.where(kept + positives > 0, 2 * tp / (kept + positives).clamp_min(1), torch.zeros_like(tp))
        k = int(torch.argmax(f1))  # first maximum: the highest threshold among ties
        thresholds.append(t[k])
        best.append(f1[k])
    return torch.stack(thresholds), torch.stack(best)


def cost_thresholds(
    scores: torch.Tensor, targets: torch.Tensor, cost_fp, cost_fn
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the threshold minimising ``cost_fp * FP + cost_fn * FN`` and that total cost.

    ``cost_fp`` / ``cost_fn``: a number or one per class. Ties go to the higher threshold.
    """
    _check(scores, targets)
    num_classes = scores.shape[1]
    c_fp, c_fn = _per_class(cost_fp, num_classes, "cost_fp"), _per_class(cost_fn, num_classes, "cost_fn")
    thresholds, best = [], []
    for c in range(num_classes):
        t, kept, tp = sweep(scores[:, c], targets[:, c])
        cost = c_fp[c] * (kept - tp) + c_fn[c] * (tp[-1] - tp)
        k = int(torch.argmin(cost))
        thresholds.append(t[k])
        best.append(cost[k])
    return torch.stack(thresholds), torch.stack(best)


def apply_thresholds(scores: torch.Tensor, thresholds) -> torch.Tensor:
    """N x C booleans: ``scores >= thresholds`` (one threshold per class, or one for all)."""
    return scores.double() >= torch.as_tensor(thresholds, dtype=torch.float64)


def multilabel_cost(scores: torch.Tensor, targets: torch.Tensor, thresholds, cost_fp, cost_fn) -> float:
    """Mean cost per video of thresholded predictions: ``sum_c cost_fp[c] FP_c + cost_fn[c] FN_c`` over N."""
    _check(scores, targets)
    predicted, truth = apply_thresholds(scores, thresholds), targets.bool()
    c_fp = _per_class(cost_fp, scores.shape[1], "cost_fp")
    c_fn = _per_class(cost_fn, scores.shape[1], "cost_fn")
    fp = (predicted & ~truth).double().sum(0)
    fn = (~predicted & truth).double().sum(0)
    return float((c_fp * fp + c_fn * fn).sum() / scores.shape[0])


def per_class_prf(predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class precision, recall, F1 and support of N x C boolean predictions (0 where undefined)."""
    _check(predicted, targets)
    predicted, truth = predicted.bool(), targets.bool()
    tp = (predicted & truth).double().sum(0)
    n_pred, n_true = predicted.double().sum(0), truth.double().sum(0)
    precision = torch.where(n_pred > 0, tp / n_pred.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(n_true > 0, tp / n_true.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(n_pred + n_true > 0, 2 * tp / (n_pred + n_true).clamp_min(1), torch.zeros_like(tp))
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_true}


def _confidence(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"expected N x C probabilities and N labels, got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    confidence, predicted = probs.double().max(dim=1)
    return confidence, predicted == labels


def coverage_accuracy_curve(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """For every distinct "abstain below p": ``threshold``, ``coverage`` (fraction answered) and
    ``accuracy`` on the answered videos (NaN when none is answered), from p above the top
    confidence (coverage 0) down to the lowest (coverage 1, plain argmax)."""
    confidence, correct = _confidence(probs, labels)
    t, kept, right = sweep(confidence, correct)
    accuracy = torch.where(kept > 0, right / kept.clamp_min(1), torch.full_like(right, float("nan")))
    return {"threshold": t, "coverage": kept / len(labels), "accuracy": accuracy}


def abstain_threshold(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    cost_error: float | None = None,
    cost_abstain: float | None = None,
    target_accuracy: float | None = None,
) -> float:
    """The ``p`` of "abstain below p": the one of least ``cost_error * wrong + cost_abstain *
    abstained`` (ties to the lower p, answering more), or the lowest whose answered videos reach
    ``target_accuracy`` (the highest coverage that does; above every score if none does)."""
    confidence, correct = _confidence(probs, labels)
    t, kept, right = sweep(confidence, correct)
    if target_accuracy is not None:
        if cost_error is not None or cost_abstain is not None:
            raise ValueError("give either costs or a target accuracy, not both")
        ok = torch.nonzero(right >= target_accuracy * kept - 1e-12).flatten()
        return float(t[ok[-1]])  # cut 0 (nothing answered) always qualifies
    if cost_error is None or cost_abstain is None or cost_error < 0 or cost_abstain < 0:
        raise ValueError(
            "abstention needs non-negative costs of a wrong answer and of an abstention "
            "(--cost-error, --cost-abstain) or a target accuracy (--target-accuracy)"
        )
    cost = cost_error * (kept - right) + cost_abstain * (len(labels) - kept)
    best = torch.nonzero(cost == cost.min()).flatten()
    return float(t[best[-1]])


def abstain_cost(
    probs: torch.Tensor, labels: torch.Tensor, threshold: float, *, cost_error: float, cost_abstain: float
) -> dict[str, float]:
    """Mean cost per video of "abstain below ``threshold``", with its coverage and accuracy."""
    confidence, correct = _confidence(probs, labels)
    answered = confidence >= threshold
    n = len(labels)
    wrong = float((answered & ~correct).sum())
    abstained = float((~answered).sum())
    kept = float(answered.sum())
    return {
        "cost": (cost_error * wrong + cost_abstain * abstained) / n,
        "coverage": kept / n,
        "accuracy": float((answered & correct).sum()) / kept if kept else float("nan"),
    }
