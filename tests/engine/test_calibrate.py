"""tools/calibrate.py stores a video-level temperature; tools/test.py and the predictor apply it."""

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videocls.data.datamodule import model_input
from videocls.engine.calibrate import calibration_path, load_calibration
from videocls.engine.predictor import load_predictor
from videocls.engine.run_loading import load_run
from videocls.engine.tester import evaluate_checkpoint
from videocls.metrics.calibration import expected_calibration_error, fit_temperature, negative_log_likelihood

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def calibrated(tiny_run, tiny_synthetic, tmp_path_factory) -> Path:
    """A copy of the tiny run calibrated by the tool on its training videos: one epoch learnt a
    little there and nothing on the held-out ones, where the fit would sit at its upper bound."""
    run = tmp_path_factory.mktemp("calibrated")
    (run / "checkpoints").mkdir()
    checkpoint = run / "checkpoints" / "last.pt"
    shutil.copy(tiny_run / "checkpoints" / "last.pt", checkpoint)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "calibrate.py"), str(run),
         f"data.val_list={tiny_synthetic / 'train.csv'}"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stored = run / "checkpoints" / "last.calibration.json"
    assert proc.stdout.strip().splitlines()[-1] == f"calibration: {stored}"
    return checkpoint


@torch.no_grad()
def _video_probabilities(checkpoint: Path, val_list: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Each video's views one at a time through the model, their softmax averaged per video."""
    run = load_run(checkpoint, [f"data.val_list={val_list}"])
    model, cfg = run.model, run.config
    dataset = run.data.dataset("val", train=False, **model_input(model), num_clips=cfg.test.num_clips,
                               num_crops=cfg.test.num_crops)
    views: dict[int, list[torch.Tensor]] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        views.setdefault(item["video_idx"], []).append(model(item["video"][None])[0].softmax(0))
    probs = torch.stack([torch.stack(views[v]).mean(0) for v in sorted(views)])
    return probs, torch.tensor([r.label for r in dataset.records])


def test_stored_temperature_is_the_fit_on_video_level_logits(calibrated, tiny_synthetic):
    record = json.loads(calibration_path(calibrated).read_text())
    probs, labels = _video_probabilities(calibrated, tiny_synthetic / "train.csv")
    logits = probs.double().log()  # video-level logits: softmax(log p) = p
    expected = fit_temperature(logits, labels)
    assert 0.05 < expected < 20  # not pinned at a bound of the search, so the comparison means something
    assert math.isclose(record["temperature"], expected, rel_tol=1e-4)
    assert record["num_videos"] == len(labels) == 20 and record["level"] == "video"
    assert math.isclose(record["nll_before"], negative_log_likelihood(logits, labels), rel_tol=1e-5)
    assert math.isclose(record["nll_after"], negative_log_likelihood(logits, labels, expected), rel_tol=1e-5)
    assert math.isclose(record["ece_before"], expected_calibration_error(probs, labels), abs_tol=1e-5)
    assert record["top1"] == (probs.argmax(1) == labels).double().mean().item()


def test_predictor_probabilities_are_softmax_of_logits_over_temperature(calibrated, tiny_synthetic):
    temperature = json.loads(calibration_path(calibrated).read_text())["temperature"]
    predictor = load_predictor(calibrated, num_clips=1, num_crops=1)
    assert predictor.temperature == temperature and f"temperature {temperature:.4f}" in predictor.describe()
    logits = []
    predictor.model.register_forward_hook(lambda module, inputs, output: logits.append(output))
    result = predictor.predict(tiny_synthetic / "videos" / "val" / "00003.mp4", topk=10)
    assert result["temperature"] == temperature
    order = {name: index for index, name in enumerate(predictor.class_names)}  # the run's class file
    got = torch.tensor([entry["prob"] for entry in sorted(result["topk"], key=lambda e: order[e["label"]])])
    expected = (logits[0][0].double() / temperature).softmax(0)
    assert torch.allclose(got.double(), expected, atol=2e-6)
    assert not torch.allclose(got.double(), logits[0][0].double().softmax(0), atol=1e-3)  # T changed them
    assert load_predictor(calibrated, num_clips=1, num_crops=1, calibrated=False).temperature is None


def test_test_protocol_applies_and_reports_the_temperature(calibrated, tiny_synthetic, tmp_path, capsys):
    record = json.loads(calibration_path(calibrated).read_text())
    run = load_run(calibrated, [f"data.val_list={tiny_synthetic / 'train.csv'}"])
    summary = evaluate_checkpoint(run, tmp_path)
    assert summary["calibration"]["temperature"] == record["temperature"]
    assert summary["calibration"]["temperature_file"] == str(calibration_path(calibrated))
    # Same protocol, same probabilities scaled by the same T: the ECE the fit reported.
    assert math.isclose(summary["calibration"]["ece"], record["ece_after"], abs_tol=1e-6)
    assert math.isclose(summary["video"]["top1"], record["top1"], rel_tol=1e-6)
    applied = f"applied temperature {record['temperature']:.4f} from {calibration_path(calibrated)}"
    assert applied in capsys.readouterr().out


def test_a_calibration_of_other_checkpoint_bytes_is_ignored(calibrated, tmp_path, caplog):
    checkpoint = tmp_path / "last.pt"
    shutil.copy(calibrated, checkpoint)
    shutil.copy(calibration_path(calibrated), calibration_path(checkpoint))
    assert load_calibration(checkpoint)["temperature"] > 0
    with open(checkpoint, "ab") as f:  # as when training resumes and rewrites last.pt
        f.write(b"\0")
    with caplog.at_level(logging.WARNING):
        assert load_calibration(checkpoint) is None
    assert str(calibration_path(checkpoint)) in caplog.text
    calibration_path(checkpoint).write_text("{not json")
    with pytest.raises(ValueError, match=str(calibration_path(checkpoint))):
        load_calibration(checkpoint)
