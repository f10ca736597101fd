import math

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
    ids, summed = aggregate_views(logits, video_idx, "sum_logits")
    assert ids.tolist() == [2, 5, 9]
    assert torch.allclose(summed, torch.tensor([[4.0, 1.0], [2.0, 1.0], [0.0, 0.0]]))
    sm = lambda a, b: torch.tensor([a, b]).softmax(0)  # noqa: E731
    _, mean = aggregate_views(logits, video_idx, "mean_softmax")
    assert torch.allclose(mean[1], (sm(2.0, 0.0) + sm(0.0, 1.0)) / 2)
    assert torch.allclose(mean[0], (sm(1.0, 1.0) + sm(3.0, 0.0)) / 2)
    _, mx = aggregate_views(logits, video_idx, "max")
    assert torch.allclose(mx[1], torch.maximum(sm(2.0, 0.0), sm(0.0, 1.0)))
    assert torch.allclose(mx[2], torch.tensor([0.5, 0.5]))
