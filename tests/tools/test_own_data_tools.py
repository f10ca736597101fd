"""The "your own data" tools end to end, the loss configs for imbalance, stored thresholds."""

import json
import logging
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config, tiny_overrides
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from videocls import create_model
from videocls.data.datamodule import model_input
from videocls.data.synthetic_motion import CLASSES
from videocls.engine.features import load_features
from videocls.engine.losses import FocalLoss, inverse_frequency_weights
from videocls.engine.thresholds import decide, load_thresholds, thresholded_summary, thresholds_path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def run_tool(name: str, *args: str, capsys) -> str:
    argv = sys.argv
    sys.argv = [str(TOOLS / name), *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(TOOLS / name), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_weighted_ce_weights_from_the_training_list(tiny_synthetic, tmp_path):
    lines = (tiny_synthetic / "train.csv").read_text().splitlines()
    # Labels 0 x 2, 1 x 2, 2 x 1 (the tiny list has two videos per class).
    chosen = [line for line in lines if line.endswith((",0", ",1"))] + [
        next(x for x in lines if x.endswith(",2"))
    ]
    train_list = tmp_path / "train.csv"
    train_list.write_text("\n".join(chosen) + "\n")
    cfg = compose_config(
        tiny_overrides(tiny_synthetic, tmp_path, "loss=weighted_ce", f"data.train_list={train_list}")
    )
    loss = instantiate(cfg.loss)
    # N / (C n_c) = 5 / (10 * 2), 5 / (10 * 2), 5 / (10 * 1); absent classes 0.
    assert loss.weight.tolist() == pytest.approx([0.25, 0.25, 0.5] + [0.0] * 7)
    logits, target = torch.randn(4, 10), torch.tensor([0, 2, 2, 1])
    w = loss.weight[target]
    expected = -(torch.log_softmax(logits, 1)[torch.arange(4), target] * w).sum() / w.sum()
    torch.testing.assert_close(loss(logits, target), expected)
    assert inverse_frequency_weights([0, 1, 1, 1], 2) == pytest.approx([2.0, 2 / 3])
    assert inverse_frequency_weights([(0, 1), (1,)], 2) == pytest.approx([1.5, 0.75])  # multi-label counts


def test_focal_config(tiny_synthetic, tmp_path):
    loss = instantiate(compose_config(tiny_overrides(tiny_synthetic, tmp_path, "loss=focal")).loss)
    assert isinstance(loss, FocalLoss) and loss.gamma == 2.0 and loss.weight is None
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    p = torch.softmax(logits, 1)[:, 0]
    torch.testing.assert_close(loss(logits, target), (-((1 - p) ** 2) * p.log()).mean())
    with pytest.raises(InstantiationException, match="inverse_frequency"):
        instantiate(
            compose_config(
                tiny_overrides(tiny_synthetic, tmp_path, "loss=focal", "loss.class_weights=balanced")
            ).loss
        )


def test_probe_and_label_issue_tools(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    x = 8 * np.eye(3, 6)[labels] + rng.normal(0, 1, (60, 6))
    given = labels.copy()
    given[[0, 25, 50]] = [1, 2, 0]
    np.savez(
        tmp_path / "f.npz",
        features=x.astype(np.float32),
        labels=given,
        videos=np.asarray([f"/d/videos/train/{i:05d}.mp4" for i in range(60)]),
        classes=np.asarray(list("abc")),
    )
    out = run_tool(
        "linear_probe.py", tmp_path / "f.npz", "--holdout", "0.25", "--out", tmp_path / "probe", capsys=capsys
    )
    assert out.strip().splitlines()[-1] == f"results: {tmp_path / 'probe' / 'results.json'}"
    results = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert set(results["video"]) == {"top1", "top5", "mean_class_acc"} and results["num_videos"] == 15
    noise = tmp_path / "train_noise.csv"
    noise.write_text(
        "path,true_label,given_label\n"
        + "".join(f"videos/train/{i:05d}.mp4,{labels[i]},{given[i]}\n" for i in (0, 25, 50))
    )
    out = run_tool(
        "find_label_issues.py",
        tmp_path / "f.npz",
        "--out",
        tmp_path / "issues",
        "--noise-file",
        noise,
        capsys=capsys,
    )
    assert "precision 1.000 (3/3), recall 1.000 (3/3)" in out
    header = (tmp_path / "issues" / "label_issues.csv").read_text().splitlines()[0]
    assert header == "video,given_label,suggested_label,score,given_name,suggested_name"


def test_features_of_foreign_weights_with_another_head(tiny_synthetic, tmp_path, capsys):
    """A plain state dict (no run config) with a 7-way classifier: described by the Hydra
    overrides, its backbone gives the features whatever its head."""
    torch.manual_seed(0)
    model = create_model("i3d_r50", num_classes=7, width=4, stage_blocks=[1, 1, 1, 1], stem_pool=False)
    weights = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), weights)
    overrides = [o for o in tiny_overrides(tiny_synthetic, tmp_path) if not o.startswith("hydra.")]
    run_tool(
        "extract_features.py",
        weights,
        "--out",
        tmp_path / "f.npz",
        "--split",
        "val",
        *overrides,
        "test.num_clips=1",
        capsys=capsys,
    )
    feats = load_features(tmp_path / "f.npz")
    assert feats.features.shape == (10, model.head.proj.in_features)
    # The same backbone on the first video's single centre view, by hand through the loader.
    from videocls.data.datamodule import VideoData

    cfg = compose_config(overrides)
    data = VideoData(**{k: v for k, v in cfg.data.items() if not k.startswith("_")})
    clip = data.dataset("val", train=False, **model_input(model))[0]["video"]
    captured = []
    model.head.proj.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    with torch.no_grad():
        model.eval()(clip[None])
    np.testing.assert_allclose(feats.features[0], captured[0][0].numpy(), rtol=1e-5, atol=1e-6)


def test_tune_thresholds_beside_the_checkpoint(tiny_run, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    checkpoint = run / "checkpoints" / "last.pt"
    out = run_tool(
        "tune_thresholds.py",
        run,
        "--cost-error",
        "10",
        "--cost-abstain",
        "1",
        "--holdout",
        "0.5",
        capsys=capsys,
    )
    assert out.strip().splitlines()[-1] == f"thresholds: {thresholds_path(checkpoint)}"
    record = load_thresholds(checkpoint)
    assert record["kind"] == "abstain" and record["num_videos"] == 10
    # p = 0 (answer everything) is one of the candidates: the tuned cost can only be lower or equal.
    assert record["val"]["tuned"]["cost"] <= record["val"]["argmax"]["cost"]
    check = record["holdout_check"]
    assert check["tuned_on"] + check["checked_on"] == 10
    coverage = [c for _, c, _ in record["curve"]]
    assert coverage[0] == 0 and coverage[-1] == 1 and coverage == sorted(coverage)

    probs = torch.tensor([[0.9, 0.1], [0.55, 0.45]])
    record_2 = {**record, "threshold": 0.6}
    assert decide(record_2, probs) == [0, None]
    summary = thresholded_summary(record_2, probs, torch.tensor([0, 1]), ["a", "b"])
    assert summary["coverage"] == 0.5 and summary["accuracy"] == 1.0 and summary["cost"] == pytest.approx(0.5)

    # A temperature in use at tuning time is applied again: sqrt-scaled [0.6, 0.4] -> 0.55 < 0.6.
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    assert decide({**record_2, "temperature": None}, probs) == [0, 0]
    assert decide({**record_2, "temperature": 2.0}, probs) == [0, None]

    # Per-class costs from a file, one-vs-rest on the single-label data.
    costs = tmp_path / "fn.csv"
    costs.write_text("".join(f"{name},{5 if i == 0 else 1}\n" for i, name in enumerate(CLASSES)))
    run_tool("tune_thresholds.py", run, "--kind", "one_vs_rest", "--cost-fn", costs, capsys=capsys)
    record = load_thresholds(checkpoint)
    assert record["kind"] == "one_vs_rest" and record["cost_fn"][:2] == [5.0, 1.0]
    assert record["val"]["tuned"]["cost"] <= record["val"]["0.5"]["cost"]

    # Tied to the checkpoint's bytes: another checkpoint there makes the file stale.
    with open(checkpoint, "ab") as f:
        f.write(b"\0")
    with caplog.at_level(logging.WARNING):
        assert load_thresholds(checkpoint) is None
    assert "tuned on an earlier version" in caplog.text
