"""tools/show_recipe.py: the printed recipe against the official configs' numbers, worked by hand."""

import math
import sys

import pytest
from helpers import CONFIGS, compose_config

from videocls.engine.recipe import describe_recipe, format_recipe


def _recipe(*overrides, **kwargs):
    return describe_recipe(compose_config(list(overrides)), **kwargs)


def test_i3d_recipe_is_pyslowfasts_i3d_8x8_r50():
    r = _recipe("experiment=i3d_r50_k400", gpus=8)
    # TRAIN.BATCH_SIZE 64 over NUM_GPUS 8, BASE_LR 0.1
    assert (r.per_gpu_batch, r.gpus, r.accumulate, r.global_batch) == (8, 8, 1, 64)
    assert r.peak_lr == pytest.approx(0.1) and r.lr_per_sample == pytest.approx(0.1 / 64)
    # cosine over 196 epochs; warm-up 34 epochs from WARMUP_START_LR 0.01 to the cosine's value there
    cosine = lambda e: 0.05 * (1 + math.cos(math.pi * e / 196))  # noqa: E731
    assert r.lr_at["start"] == (0.0, pytest.approx(0.01))
    assert r.lr_at["warm-up end"] == (34.0, pytest.approx(cosine(34), rel=1e-9))
    assert r.lr_at["50%"] == (98.0, pytest.approx(0.05))
    assert r.lr_at["75%"] == (147.0, pytest.approx(cosine(147), rel=1e-9))
    assert r.lr_at["end"][1] == pytest.approx(0.0, abs=1e-12)
    # ResNet-50 I3D: 53 conv weights + classifier weight and bias decayed; the 53 BNs' 106 tensors not
    assert (r.decayed_tensors, r.undecayed_tensors) == (55, 106)
    assert r.params_m == pytest.approx(28.04, abs=0.01)
    assert r.test_views == (10, 3) and r.precision == "bf16" and r.warmup_epochs == 34
    assert r.init.startswith("random")
    assert r.test_head == (
        "window_softmax (windows of the 8 frames x 224 px training input); views combined by mean_softmax"
    )
    assert r.gflops == pytest.approx(37.3, abs=0.1)  # registry reference, fvcore at 8 x 256 x 256


def test_timesformer_recipe_accumulates_to_the_official_global_batch():
    r = _recipe("experiment=timesformer_k400", gpus=8)
    # GLOBAL_BATCH_SIZE 64 = 8 GPUs x 1 clip x 8 accumulated micro-batches, BASE_LR 0.005
    assert (r.per_gpu_batch, r.accumulate, r.global_batch) == (1, 8, 64)
    assert r.peak_lr == pytest.approx(0.005) and r.lr_per_sample == pytest.approx(0.005 / 64)
    assert r.lr_at["75%"][1] == pytest.approx(0.0005)  # epoch 11.25: after the first step at 11
    assert r.lr_at["end"][1] == pytest.approx(0.00005)
    assert r.undecayed_tensors == 0 and r.decayed_tensors > 100  # every parameter decayed
    assert r.test_views == (1, 3) and r.test_head == "views combined by mean_logits"
    # On 4 GPUs the linear scaling rule keeps the per-clip rate.
    r4 = _recipe("experiment=timesformer_k400", gpus=4)
    assert r4.global_batch == 32 and r4.peak_lr == pytest.approx(0.0025)
    assert r4.lr_per_sample == pytest.approx(r.lr_per_sample)


def test_steps_per_epoch_from_the_training_set_size():
    # The trainer's count: each of 8 ranks gets ceil(1000 / 8) = 125 clips, 125 // 1 = 125
    # micro-batches, 125 // 8 = 15 optimiser steps.
    r = _recipe("experiment=timesformer_ssv2", gpus=8, train_videos=1000)
    assert r.steps_per_epoch == 15
    with pytest.raises(ValueError, match="--train-videos 10"):
        _recipe("experiment=i3d_r50_k400", gpus=8, train_videos=10)


def test_initialisation_source_is_reported_not_read(tmp_path):
    missing = tmp_path / "vit_b16.pth"  # not there: show_recipe must not open it
    r = _recipe("experiment=timesformer_ssv2", f"++model.init_2d={missing}", gpus=8)
    assert str(missing) in r.init and "init_2d" in r.init


def test_cli_prints_the_recipe(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(CONFIGS.parent / "tools"))
    import show_recipe

    monkeypatch.setattr(sys, "argv", ["show_recipe.py", "experiment=i3d_r50_k400", "--gpus", "4"])
    show_recipe.main()
    out = capsys.readouterr().out
    assert "8 per GPU x 4 GPUs x 1 accumulated = 32 clips per step" in out
    assert "peak LR 0.05 " in out and "0.001563 per clip" in out
    assert "10 clips x 3 crops = 30 per video" in out
    assert format_recipe(_recipe("experiment=i3d_r50_k400", gpus=4)) == out.strip()


def test_measured_gflops_match_pyslowfasts_model_zoo():
    # --flops traces the recipe's model at its test view (8 x 256 x 256); PySlowFast's model zoo
    # lists I3D 8x8 R50 at 37.3 GFLOPs per view. About 15 s of CPU.
    r = _recipe("experiment=i3d_r50_k400", gpus=8, measure_flops=True)
    assert r.gflops == pytest.approx(37.3, abs=0.05)
    assert r.gflops_source == "measured (fvcore) at 8x256x256"


def test_layer_decay_recipe_reports_the_base_lr_not_the_embeddings():
    """VideoMAE's finetune.sh: lr 5e-4 per 256 videos at 384 videos a step (6 x 8 GPUs x 8 accumulated)."""
    r = _recipe("experiment=videomae_b_k400", gpus=8)
    assert r.global_batch == 384 and r.peak_lr == pytest.approx(5e-4 * 384 / 256)

