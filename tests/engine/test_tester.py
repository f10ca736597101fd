"""The test protocol's probabilities: aggregated logits become a softmax, probabilities stay."""

import pytest
import torch

from videocls.engine.evaluator import EvalResult
from videocls.engine.tester import video_probabilities


def _result(scores: torch.Tensor) -> EvalResult:
    n = scores.shape[0]
    return EvalResult({}, {}, n, n, torch.arange(n), scores, torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("aggregation", ["mean_logits", "sum_logits"])
def test_logit_aggregations_are_turned_into_probabilities(aggregation):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    with pytest.warns(FutureWarning) if aggregation == "sum_logits" else _no_warning():
        probs = video_probabilities(_result(logits), aggregation)
    expected = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize("aggregation", ["mean_softmax", "max"])
def test_probability_aggregations_are_left_as_they_are(aggregation):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert torch.equal(video_probabilities(_result(probs), aggregation), probs)


def _no_warning():
    import contextlib

    return contextlib.nullcontext()
