"""Feature extraction: the classifier's input, view-averaged, resumable, the same on 1 or 2 ranks."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videocls import create_model
from videocls.data.datamodule import model_input
from videocls.data.loader import build_loader
from videocls.engine.distributed import DistEnv
from videocls.engine.evaluator import score_views
from videocls.engine.features import extract_features, load_features, pooled_classifier_input
from videocls.engine.run_loading import load_run_or_weights

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("i3d_r50", {"width": 4, "stage_blocks": [1, 1, 1, 1]}),
        ("i3d_inception_v1", {"width_mult": 0.125}),  # a Linear over sliding time windows
    ],
)
def test_the_classifier_maps_the_feature_to_the_logits(name, overrides):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **overrides).eval()
    handle, captured = pooled_classifier_input(model)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        logits = model(x)
        proj = dict(model.named_modules())[model.classifier_prefix]
        assert captured[0].shape == (2, proj.in_features)
        torch.testing.assert_close(proj(captured[0]), logits, rtol=1e-5, atol=1e-5)
    handle.remove()


def _protocol_logits(tiny_run: Path):
    """Per video, the mean over the test views of the logits, from the evaluator (independent of
    the hook): the classifier is linear, so it must equal classifier(mean feature)."""
    run = load_run_or_weights(tiny_run, [], strict_head=False)
    cfg, model, data = run.config, run.model, run.data
    dataset = data.dataset("val", train=False, **model_input(model), num_clips=cfg.test.num_clips,
                           num_crops=cfg.test.num_crops, seed=cfg.trainer.seed)
    loader = build_loader(dataset, 4, 0, train=False)
    views, _ = score_views(model, loader, DistEnv(0, 0, 1, torch.device("cpu")))
    n = len(dataset.records)
    sums = torch.zeros(n, views["logits"].shape[1]).index_add_(0, views["video_idx"], views["logits"])
    counts = torch.bincount(views["video_idx"], minlength=n).unsqueeze(1)
    return (sums / counts).numpy(), [r.path for r in dataset.records], model


def test_features_give_the_protocol_logits_and_resume(tiny_run, tmp_path):
    out = tmp_path / "val.npz"
    extract_features(tiny_run, out, split="val", chunk_videos=3)
    feats = load_features(out)
    expected, videos, model = _protocol_logits(tiny_run)
    assert list(feats.videos) == videos  # every video, in list order
    assert feats.labels.tolist() == list(range(10))  # the tiny set's val list: one per class
    assert feats.classes[0] == "move_left"
    proj = dict(model.named_modules())[model.classifier_prefix]
    with torch.no_grad():
        logits = proj(torch.from_numpy(feats.features)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)

    # Resume: only the missing part is extracted again; the merged file is the same.
    parts = sorted((tmp_path / "val.npz.parts").glob("rank*.npz"))
    assert [p.name for p in parts] == [
        "rank0-000000.npz",
        "rank0-000003.npz",
        "rank0-000006.npz",
        "rank0-000009.npz",
    ]
    parts[1].unlink()
    kept = {p: p.stat().st_mtime_ns for p in parts if p.exists()}
    extract_features(tiny_run, out, split="val", chunk_videos=3)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    np.testing.assert_array_equal(load_features(out).features, feats.features)

    # Parts of another extraction (other views) are refused, not mixed in.
    with pytest.raises(ValueError, match=r"val\.npz\.parts.*num_clips"):
        extract_features(tiny_run, out, ["test.num_clips=1"], split="val", chunk_videos=3)


def test_two_ranks_write_the_same_features(tiny_run, tmp_path):
    single = tmp_path / "one.npz"
    extract_features(tiny_run, single, split="val", chunk_videos=4)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29561",
        str(REPO / "tools" / "extract_features.py"),
        str(tiny_run),
        "--out",
        str(tmp_path / "two.npz"),
        "--split",
        "val",
        "--chunk-videos",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two, one = load_features(tmp_path / "two.npz"), load_features(single)
    assert list(two.videos) == list(one.videos)
    assert (
        sorted(p.name[:5] for p in (tmp_path / "two.npz.parts").glob("rank*.npz"))
        == ["rank0"] * 3 + ["rank1"] * 3
    )
    np.testing.assert_allclose(two.features, one.features, rtol=1e-5, atol=1e-6)
