"""Confidence calibration: expected calibration error and temperature scaling.

ECE follows Guo et al. (2017), "On Calibration of Modern Neural Networks": the top-1
confidence of each sample goes into one of ``num_bins`` equal-width bins with edges
``(lo, hi]``, and ECE is the bin-size-weighted mean of |accuracy - mean confidence|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_BINS = 15


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics behind ECE and the reliability diagram (empty bins hold NaN)."""

    edges: torch.Tensor  # num_bins + 1 edges from 0 to 1
    confidence: torch.Tensor  # mean top-1 confidence in each bin
    accuracy: torch.Tensor  # fraction of correct top-1 predictions in each bin
    count: torch.Tensor  # samples per bin (int64)


def calibration_bins(
    probs: torch.Tensor, labels: torch.Tensor, num_bins: int = DEFAULT_BINS
) -> CalibrationBins:
    """Bin ``N x C`` class probabilities by top-1 confidence; a confidence equal to an edge
    belongs to the bin below it, and a confidence of exactly 0 to the first bin."""
    if probs.ndim != 2 or probs.shape[0] != labels.numel():
        raise ValueError(
            f"expected N x C probabilities and N labels, got {tuple(probs.shape)} and {labels.numel()}"
        )
    confidence, predictions = probs.double().max(dim=1)
    correct = (predictions == labels.view(-1)).double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)
    # bucketize with right=False returns i such that edges[i] < x <= edges[i + 1] for the inner edges.
    bin_index = torch.bucketize(confidence, edges[1:-1], right=False)
    count = torch.bincount(bin_index, minlength=num_bins)
    sum_conf = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bin_index, confidence)
    sum_correct = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bin_index, correct)
    denom = count.double().where(count > 0, torch.tensor(float("nan"), dtype=torch.float64))
    return CalibrationBins(edges, sum_conf / denom, sum_correct / denom, count)


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, num_bins: int = DEFAULT_BINS
) -> float:
    """ECE of ``N x C`` class probabilities (apply softmax to logits first); NaN when N = 0."""
    bins = calibration_bins(probs, labels, num_bins)
    if bins.count.sum() == 0:
        return float("nan")
    filled = bins.count > 0
    gaps = (bins.accuracy[filled] - bins.confidence[filled]).abs()
    return (gaps * bins.count[filled]).sum().item() / bins.count.sum().item()


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``logits / temperature``."""
    return F.cross_entropy(logits.double() / temperature, labels.long().view(-1)).item()


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = (0.01, 100.0), tol: float = 1e-7
) -> float:
    """Temperature T minimising the NLL of ``softmax(logits / T)`` on a held-out split.

    NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over
    ``log T`` within ``bounds`` finds the global minimum with no step size to tune and is
    deterministic. A result at a bound means the optimum lies beyond it (e.g. T -> 0 when
    every held-out prediction is right).
    """
    logits, labels = logits.double(), labels.long().view(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.numel() or labels.numel() == 0:
        raise ValueError(
            f"expected N x C logits and N labels (N > 0), got {tuple(logits.shape)} and {labels.numel()}"
        )

    def nll(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, math.exp(log_t))

    inv_phi = (math.sqrt(5) - 1) / 2
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    f_a, f_b = nll(a), nll(b)
    while hi - lo > tol:
        if f_a <= f_b:
            hi, b, f_b = b, a, f_a
            a = hi - inv_phi * (hi - lo)
            f_a = nll(a)
        else:
            lo, a, f_a = a, b, f_b
            b = lo + inv_phi * (hi - lo)
            f_b = nll(b)
    return math.exp((lo + hi) / 2)


def temperature_scaling_report(
    fit_logits: torch.Tensor,
    fit_labels: torch.Tensor,
    eval_logits: torch.Tensor,
    eval_labels: torch.Tensor,
    num_bins: int = DEFAULT_BINS,
) -> dict[str, float]:
    """Fit T on one split and report ECE and NLL on another before and after scaling."""
    temperature = fit_temperature(fit_logits, fit_labels)
    eval_logits = eval_logits.double()
    scaled_probs = (eval_logits / temperature).softmax(dim=1)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(eval_logits.softmax(dim=1), eval_labels, num_bins),
        "ece_after": expected_calibration_error(scaled_probs, eval_labels, num_bins),
        "nll_before": negative_log_likelihood(eval_logits, eval_labels),
        "nll_after": negative_log_likelihood(eval_logits, eval_labels, temperature),
    }
