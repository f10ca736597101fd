import math

import pytest
import torch

from videocls.metrics.classification import aggregate_views, mean_class_accuracy, topk_accuracy


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 2])
    acc = topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc["top1"] == 0.25
    assert acc["top2"] == 0.5  # rows 0 and 1
    assert acc["top5"] == 1.0  # k capped at 3 classes


def test_mean_class_accuracy_ignores_absent_classes():
    preds = torch.tensor([0, 0, 1, 1, 1])
    labels = torch.tensor([0, 1, 1, 1, 0])
    # class 0: 1/2, class 1: 2/3, class 2 absent
    assert math.isclose(mean_class_accuracy(preds, labels, 3), (0.5 + 2 / 3) / 2)


def test_aggregate_views_three_methods_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0], [0.0, 0.0]])
    video_idx = torch.tensor([5, 5, 2, 2, 9])
    ids, averaged = aggregate_views(logits, video_idx, "mean_logits")
    assert ids.tolist() == [2, 5, 9]
    assert torch.allclose(averaged, torch.tensor([[2.0, 0.5], [1.0, 0.5], [0.0, 0.0]]))
    sm = lambda a, b: torch.tensor([a, b]).softmax(0)  # noqa: E731
    _, mean = aggregate_views(logits, video_idx, "mean_softmax")
    assert torch.allclose(mean[1], (sm(2.0, 0.0) + sm(0.0, 1.0)) / 2)
    assert torch.allclose(mean[0], (sm(1.0, 1.0) + sm(3.0, 0.0)) / 2)
    _, mx = aggregate_views(logits, video_idx, "max")
    assert torch.allclose(mx[1], torch.maximum(sm(2.0, 0.0), sm(0.0, 1.0)))
    assert torch.allclose(mx[2], torch.tensor([0.5, 0.5]))


def test_mean_softmax_ranks_as_pyslowfasts_summed_softmax_ensemble():
    # PySlowFast's default ENSEMBLE_METHOD "sum" adds the views' softmax outputs.
    torch.manual_seed(0)
    logits, video_idx = torch.randn(12, 5), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    _, mean = aggregate_views(logits, video_idx, "mean_softmax")
    summed = logits.softmax(1).view(4, 3, 5).sum(1)
    assert torch.allclose(mean * 3, summed)
    assert torch.allclose(mean.sum(1), torch.ones(4))  # still probabilities


def test_old_sum_logits_name_warns_and_means_mean_logits():
    logits, video_idx = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    with pytest.warns(FutureWarning, match="sum_logits is deprecated.*mean_logits"):
        _, old = aggregate_views(logits, video_idx, "sum_logits")
    assert torch.allclose(old, torch.tensor([[1.0, 0.5]]))


def test_unknown_aggregation_names_the_choices():
    with pytest.raises(ValueError, match="'sum_softmax'.*mean_softmax, mean_logits, max"):
        aggregate_views(torch.zeros(1, 2), torch.tensor([0]), "sum_softmax")
