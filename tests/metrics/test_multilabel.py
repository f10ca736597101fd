import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from videocls.metrics.multilabel import average_precision, mean_average_precision


def test_average_precision_by_hand_with_ties():
    scores = torch.tensor([[0.9, 0.9], [0.8, 0.8], [0.7, 0.8], [0.6, 0.1]])
    targets = torch.tensor([[1, 1], [0, 0], [1, 1], [0, 0]])
    ap = average_precision(scores, targets)
    # column 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2
    # column 1: ranks 2 and 3 tie; the positive in the tie gets the precision after it, 2/3,
    # not 1 (which it would get if it were ranked first within the tie)
    assert ap.tolist() == pytest.approx([5 / 6, 5 / 6])


def test_map_matches_sklearn_and_skips_classes_without_positives():
    g = torch.Generator().manual_seed(0)
    n, c = 300, 9
    targets = (torch.rand(n, c, generator=g) < 0.15).long()
    targets[:, [2, 7]] = 0  # no positives: excluded, as PySlowFast's get_map drops them
    logits = torch.randn(n, c, generator=g) + 1.5 * targets
    scores = (logits.sigmoid() * 20).round() / 20  # coarse scores: many ties
    ap = average_precision(scores, targets)
    keep = targets.any(dim=0).numpy()
    ref = average_precision_score(targets.numpy()[:, keep], scores.numpy()[:, keep], average=None)
    assert np.allclose(ap.numpy()[keep], ref)
    assert ap[2].isnan() and ap[7].isnan()
    assert math.isclose(mean_average_precision(scores, targets), float(np.mean(ref)), rel_tol=1e-12)
    # ranking only: logits and their sigmoid give the same mAP
    from_logits = mean_average_precision(logits, targets)
    assert math.isclose(from_logits, mean_average_precision(logits.sigmoid(), targets))


def test_average_precision_rejects_bad_input():
    with pytest.raises(ValueError, match="multi-hot"):
        average_precision(torch.rand(3, 2), torch.tensor([[0, 2], [1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="N x C"):
        average_precision(torch.rand(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(torch.tensor([[float("nan")], [0.5]]), torch.tensor([[1], [0]]))
    assert math.isnan(mean_average_precision(torch.rand(4, 2), torch.zeros(4, 2)))
