import csv

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from videocls.metrics.per_class import (
    confusion_matrix,
    metrics_from_confusion,
    per_class_metrics,
    write_confusion_csv,
    write_per_class_csv,
)
from videocls.metrics.plots import plot_confusion_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_per_class_metrics_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 0, 0])
    m = per_class_metrics(preds, labels, num_classes=3)
    # class 0: TP 2, predicted 4, support 3 -> P 1/2, R 2/3, F1 = 2*2/(4+3) = 4/7
    # class 1: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
    # class 2: TP 0, never predicted, support 1 -> 0, 0, 0
    assert torch.allclose(m["precision"], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert torch.allclose(m["recall"], torch.tensor([2 / 3, 0.5, 0.0], dtype=torch.float64))
    assert torch.allclose(m["f1"], torch.tensor([4 / 7, 0.5, 0.0], dtype=torch.float64))
    assert m["support"].tolist() == [3, 2, 1]


def test_per_class_metrics_match_sklearn_with_never_predicted_and_absent_classes():
    g = torch.Generator().manual_seed(0)
    num_classes = 7
    labels = torch.randint(0, 6, (300,), generator=g)  # class 6 never appears
    scores = torch.randn(300, num_classes, generator=g)
    scores[:, 4] = -100.0  # class 4 is never predicted
    scores[torch.arange(300), labels] += 1.0  # better than chance, so TP > 0 elsewhere
    m = per_class_metrics(scores, labels, num_classes)
    p, r, f, s = precision_recall_fscore_support(
        labels.numpy(), scores.argmax(1).numpy(), labels=list(range(num_classes)), zero_division=0
    )
    assert np.allclose(m["precision"].numpy(), p)
    assert np.allclose(m["recall"].numpy(), r)
    assert np.allclose(m["f1"].numpy(), f)
    assert m["support"].tolist() == s.tolist()
    assert m["precision"][4] == 0 and m["support"][6] == 0
    # predictions given directly give the same numbers as scores
    from_preds = per_class_metrics(scores.argmax(1), labels, num_classes)
    assert all(torch.equal(m[k], from_preds[k]) for k in m)


def test_confusion_matrix_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (200,), generator=g)
    preds = torch.randint(0, 4, (200,), generator=g)
    ours = confusion_matrix(preds, labels, num_classes=6)
    ref = sk_confusion_matrix(labels.numpy(), preds.numpy(), labels=list(range(6)))
    assert ours.dtype == torch.int64 and ours.shape == (6, 6)
    assert np.array_equal(ours.numpy(), ref)
    assert torch.equal(metrics_from_confusion(ours)["support"], ours.sum(1))


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must lie"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), num_classes=3)
    with pytest.raises(ValueError, match="predictions but"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), num_classes=3)
    with pytest.raises(ValueError, match="N x C scores"):
        confusion_matrix(torch.zeros(2, 3, 1), torch.tensor([0, 1]), num_classes=3)


def test_csv_writers(tmp_path):
    labels = torch.tensor([0, 0, 1, 2])
    preds = torch.tensor([0, 1, 1, 1])
    names = ["walk", "run, fast", "jump"]  # a comma must survive quoting
    matrix = confusion_matrix(preds, labels, 3)
    write_confusion_csv(matrix, tmp_path / "confusion.csv", names)
    rows = list(csv.reader(open(tmp_path / "confusion.csv")))
    assert rows[0] == ["true \\ predicted", *names]
    assert rows[1:] == [["walk", "1", "1", "0"], ["run, fast", "0", "1", "0"], ["jump", "0", "1", "0"]]

    write_per_class_csv(per_class_metrics(preds, labels, 3), tmp_path / "per_class.csv", names)
    rows = list(csv.DictReader(open(tmp_path / "per_class.csv")))
    assert [r["class"] for r in rows] == names
    # run: TP 1, predicted 3, support 1 -> P 1/3, R 1, F1 2/4
    assert float(rows[1]["precision"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(rows[1]["recall"]) == 1.0 and float(rows[1]["f1"]) == 0.5
    assert [r["support"] for r in rows] == ["2", "1", "1"]
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        write_confusion_csv(matrix, tmp_path / "bad.csv", names[:2])


@pytest.mark.parametrize("num_classes, labelled", [(12, True), (120, False)])
def test_confusion_png(tmp_path, num_classes, labelled):
    g = torch.Generator().manual_seed(2)
    labels, preds = torch.randint(0, num_classes, (2, 500), generator=g)
    matrix = confusion_matrix(preds, labels, num_classes)
    names = [f"class_{c}" for c in range(num_classes)]
    fig = plot_confusion_matrix(matrix, tmp_path / "cm.png", names)
    data = (tmp_path / "cm.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(tmp_path / "cm.png") as im:
        assert im.width > 100 and im.height > 100
    tick_labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert (tick_labels == names) is labelled
