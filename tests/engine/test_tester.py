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


def test_stored_thresholds_reach_results_and_predictions(tiny_run, tmp_path):
    """Abstain thresholds beside a checkpoint: at p >= 0 every video is answered (accuracy is top-1),
    above 1 none is; tools/test.py's results and the predictor's decisions say so."""
    import shutil

    from videocls.engine.predictor import load_predictor
    from videocls.engine.run_loading import load_run
    from videocls.engine.tester import evaluate_checkpoint
    from videocls.engine.thresholds import save_thresholds

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    val = load_run(checkpoint).data.dataset("val", train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    first_val = val.records[0].path

    save_thresholds(checkpoint, {"kind": "abstain", "threshold": 0.0})
    summary = evaluate_checkpoint(load_run(checkpoint), tmp_path / "all")
    assert summary["thresholds"]["coverage"] == 1.0
    assert summary["thresholds"]["accuracy"] == pytest.approx(summary["video"]["top1"])
    answered = load_predictor(checkpoint, num_clips=1, num_crops=1).predict(first_val)
    assert answered["decision"] == answered["topk"][0]["label"]

    save_thresholds(checkpoint, {"kind": "abstain", "threshold": 1.01})
    summary = evaluate_checkpoint(load_run(checkpoint), tmp_path / "none")
    assert summary["thresholds"]["coverage"] == 0.0
    assert load_predictor(checkpoint, num_clips=1, num_crops=1).predict(first_val)["decision"] is None
    assert "decision" not in load_predictor(checkpoint, num_clips=1, num_crops=1,
                                            calibrated=False).predict(first_val)
