import json

import numpy as np
import pytest
import torch
from PIL import Image

from videocls.metrics.calibration import (
    calibration_bins,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    temperature_scaling_report,
)
from videocls.metrics.plots import plot_reliability_diagram


def test_ece_by_hand():
    probs = torch.tensor(
        [
            [0.90, 0.05, 0.05],  # conf .90 correct -> bin (13/15, 14/15]
            [0.95, 0.03, 0.02],  # conf .95 wrong   -> bin (14/15, 1]
            [0.20, 0.50, 0.30],  # conf .50 correct -> bin (7/15, 8/15]
            [0.48, 0.30, 0.22],  # conf .48 wrong   -> bin (7/15, 8/15]
            [0.10, 0.70, 0.20],  # conf .70 correct -> bin (10/15, 11/15]
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 1, 2, 1])
    # gaps: |1-.90| = .10, |0-.95| = .95, |1/2 - (.50+.48)/2| = .01 (two samples), |1-.70| = .30
    # ECE = (.10 + .95 + 2 * .01 + .30) / 5 = 1.37 / 5
    assert expected_calibration_error(probs, labels) == pytest.approx(0.274, abs=1e-12)
    bins = calibration_bins(probs, labels)
    assert bins.count.tolist() == [0] * 7 + [2, 0, 0, 1, 0, 0, 1, 1]
    assert bins.confidence[7].item() == pytest.approx(0.49) and bins.accuracy[7].item() == 0.5
    assert bins.accuracy[0].isnan()
    assert np.isnan(expected_calibration_error(probs[:0], labels[:0]))


def test_bins_are_open_below_closed_above():
    # with 4 bins the edges 0.25, 0.5, 0.75 are exact in binary floating point
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.75, 0.25, 0.0], [1.0, 0.0, 0.0]])
    bins = calibration_bins(probs, torch.tensor([0, 1, 0]), num_bins=4)
    assert bins.count.tolist() == [0, 1, 1, 1]  # .5 in (.25, .5], .75 in (.5, .75], 1 in (.75, 1]


def _loop_ece(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Reference ECE written the long way: one sample at a time, bins searched linearly."""
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    conf_sum, hit_sum, count = [0.0] * num_bins, [0.0] * num_bins, [0] * num_bins
    for row, label in zip(probs, labels):
        conf = float(max(row))
        hit = float(int(np.argmax(row)) == int(label))
        for b in range(num_bins):
            if edges[b] < conf <= edges[b + 1]:
                conf_sum[b] += conf
                hit_sum[b] += hit
                count[b] += 1
                break
    total = sum(count)
    ece = 0.0
    for b in range(num_bins):
        if count[b]:
            ece += abs(hit_sum[b] / count[b] - conf_sum[b] / count[b]) * count[b] / total
    return ece


def test_ece_matches_loop_reference_on_random_data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (1000,), generator=g)
    probs = logits.softmax(dim=1)
    reference = _loop_ece(probs.numpy(), labels.numpy())
    assert expected_calibration_error(probs, labels) == pytest.approx(reference, abs=1e-12)


def _overconfident(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z) make z calibrated; the model reports 5 z, so T* = 5."""
    g = torch.Generator().manual_seed(seed)
    calibrated = torch.randn(n, 10, generator=g, dtype=torch.float64) * 1.5
    labels = torch.multinomial(calibrated.softmax(dim=1), 1, generator=g).squeeze(1)
    return calibrated * 5, labels


def test_temperature_scaling_recovers_t_and_lowers_ece():
    fit_logits, fit_labels = _overconfident(4000, seed=1)
    eval_logits, eval_labels = _overconfident(4000, seed=2)
    temperature = fit_temperature(fit_logits, fit_labels)
    assert temperature == pytest.approx(5.0, rel=0.1)
    assert fit_temperature(fit_logits, fit_labels) == temperature  # deterministic

    # independent check of the optimiser: brute-force NLL on a 0.01 grid around 5
    grid = torch.arange(4.6, 5.4, 0.01, dtype=torch.float64)
    losses = [negative_log_likelihood(fit_logits, fit_labels, t.item()) for t in grid]
    assert temperature == pytest.approx(grid[int(np.argmin(losses))].item(), abs=0.01)

    report = temperature_scaling_report(fit_logits, fit_labels, eval_logits, eval_labels)
    assert report["temperature"] == temperature
    assert report["ece_before"] > 0.3 and report["ece_after"] < report["ece_before"] / 5
    assert report["nll_after"] < report["nll_before"]
    assert torch.equal((eval_logits / temperature).argmax(1), eval_logits.argmax(1))
    json.dumps(report)


def test_fit_temperature_below_one_for_underconfident_logits():
    logits, labels = _overconfident(2000, seed=3)
    assert fit_temperature(logits / 10, labels) == pytest.approx(0.5, rel=0.1)  # reported 0.5 z
    with pytest.raises(ValueError, match="N x C logits"):
        fit_temperature(logits, labels[:10])


def test_reliability_diagram_png(tmp_path):
    logits, labels = _overconfident(500, seed=4)
    probs = logits.softmax(1)
    fig = plot_reliability_diagram(probs, labels, tmp_path / "reliability.png", title="val")
    assert fig.axes[0].get_title() == f"val: ECE = {100 * expected_calibration_error(probs, labels):.2f}%"
    data = (tmp_path / "reliability.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(tmp_path / "reliability.png") as im:
        im.verify()
    with Image.open(tmp_path / "reliability.png") as im:
        assert im.width > 100 and im.height > 100
