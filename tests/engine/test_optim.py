"""Optimiser and LR schedule: the published recipes against the official formulas, step by step.

The reference below is written from the official code's math (PySlowFast
``slowfast/utils/lr_policy.py``, the same file in TimeSformer, and both ``train_net.py`` loops),
with absolute learning rates as in their YAML files, and run through the official loop: the LR
is set before every iteration at ``cur_epoch + cur_iter / len(loader)``, and with TimeSformer's
gradient accumulation an optimiser step happens after every ``GLOBAL_BATCH_SIZE // BATCH_SIZE``
iterations, at the LR set for the last of them.
"""

import math

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate
from torch import nn

from videocls.engine.optim import (
    build_optimizer,
    build_scheduler,
    lr_factor_at_epoch,
    param_groups,
    scaled_lr,
)

GPUS = 8  # the papers' setting


# ----------------------------------------------------------------------------- the reference
def official_lr(solver: dict, cur_epoch: float) -> float:
    """``get_lr_at_epoch`` of PySlowFast/TimeSformer for a SOLVER section (absolute LRs)."""

    def policy(epoch):
        if solver["LR_POLICY"] == "cosine":
            offset = solver["WARMUP_EPOCHS"] if solver.get("COSINE_AFTER_WARMUP", False) else 0.0
            end = solver.get("COSINE_END_LR", 0.0)
            return end + (solver["BASE_LR"] - end) * (
                math.cos(math.pi * (epoch - offset) / (solver["MAX_EPOCH"] - offset)) + 1.0) * 0.5
        steps = solver["STEPS"] + [solver["MAX_EPOCH"]]  # lr_func_steps_with_relative_lrs
        for ind, step in enumerate(steps):  # noqa: B007
            if epoch < step:
                break
        return solver["LRS"][ind - 1] * solver["BASE_LR"]

    lr = policy(cur_epoch)
    if cur_epoch < solver["WARMUP_EPOCHS"]:
        lr_start, lr_end = solver["WARMUP_START_LR"], policy(solver["WARMUP_EPOCHS"])
        lr = cur_epoch * (lr_end - lr_start) / solver["WARMUP_EPOCHS"] + lr_start
    return lr


def official_step_lrs(solver: dict, iters_per_epoch: int, accumulate: int) -> list[float]:
    """The LR of every optimiser step of the official loop (leftover iterations are dropped)."""
    lrs = []
    for epoch in range(solver["MAX_EPOCH"]):
        for cur_iter in range(iters_per_epoch):
            lr = official_lr(solver, epoch + cur_iter / iters_per_epoch)
            if (cur_iter + 1) % accumulate == 0:
                lrs.append(lr)
    return lrs


# The official configs (values as in the YAML files; defaults from config/defaults.py).
PYSLOWFAST_K400 = {  # SlowFast configs/Kinetics/I3D_8x8_R50.yaml and SLOWFAST_8x8_R50.yaml
    "LR_POLICY": "cosine", "BASE_LR": 0.1, "MAX_EPOCH": 196, "WARMUP_EPOCHS": 34, "WARMUP_START_LR": 0.01,
    "COSINE_END_LR": 0.0, "COSINE_AFTER_WARMUP": False, "WEIGHT_DECAY": 1e-4, "MOMENTUM": 0.9,
    "NESTEROV": True,
}
# TimeSformer configs/Kinetics/TimeSformer_divST_8x32_224.yaml and configs/SSv2/TimeSformer_divST_8_224.yaml
TIMESFORMER = {
    "LR_POLICY": "steps_with_relative_lrs", "BASE_LR": 0.005, "STEPS": [0, 11, 14], "LRS": [1, 0.1, 0.01],
    "MAX_EPOCH": 15, "WARMUP_EPOCHS": 0.0, "WARMUP_START_LR": 0.01, "WEIGHT_DECAY": 1e-4, "MOMENTUM": 0.9,
    "NESTEROV": True,
}
# recipe -> (SOLVER, official clips per optimiser step at 8 GPUs, official micro-batches per step)
RECIPES = {
    "i3d_r50_k400": (PYSLOWFAST_K400, 64, 1),  # TRAIN.BATCH_SIZE 64
    "slowfast_r50_k400": (PYSLOWFAST_K400, 64, 1),
    "timesformer_k400": (TIMESFORMER, 64, 8),  # GLOBAL_BATCH_SIZE 64 // (NUM_SHARDS 1 x TRAIN.BATCH_SIZE 8)
    "timesformer_ssv2": (TIMESFORMER, 64, 8),
}


def test_reference_reproduces_the_issue_numbers():
    # Hand values for I3D/SlowFast K400: PySlowFast's cosine over all 196 epochs.
    assert official_lr(PYSLOWFAST_K400, 60) == pytest.approx(0.0786, abs=5e-5)
    assert official_lr(PYSLOWFAST_K400, 100) == pytest.approx(0.0484, abs=5e-5)
    assert official_lr(PYSLOWFAST_K400, 0) == pytest.approx(0.01)


def _recipe_optimization(experiment: str, iters_per_epoch: int):
    """Optimiser + scheduler of a recipe built as the trainer builds them, at 8 GPUs."""
    cfg = compose_config([f"experiment={experiment}"])
    accumulate = int(cfg.trainer.accumulate_grad_batches)
    global_batch = cfg.data.batch_size * GPUS * accumulate  # Trainer.global_batch
    model = nn.Linear(2, 2)  # the LR does not depend on the model
    optimizer = instantiate(cfg.optim)(model, global_batch_size=global_batch)
    steps_per_epoch = iters_per_epoch // accumulate  # Trainer.steps_per_epoch
    scheduler = instantiate(cfg.schedule)(optimizer, steps_per_epoch, cfg.trainer.max_epochs)
    return cfg, global_batch, optimizer, scheduler


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_recipe_global_batch_and_peak_lr_at_8_gpus(experiment):
    solver, official_batch, official_accumulate = RECIPES[experiment]
    cfg, global_batch, optimizer, _ = _recipe_optimization(experiment, 100)
    assert global_batch == official_batch
    assert cfg.trainer.accumulate_grad_batches == official_accumulate
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(solver["BASE_LR"], rel=1e-12)
    assert cfg.optim.weight_decay == solver["WEIGHT_DECAY"] and cfg.optim.momentum == solver["MOMENTUM"]
    assert cfg.optim.nesterov == solver["NESTEROV"] and cfg.optim.name == "sgd"
    assert cfg.trainer.max_epochs == solver["MAX_EPOCH"]


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_recipe_lr_at_every_step_equals_the_official_loop(experiment):
    solver, _, official_accumulate = RECIPES[experiment]
    iters_per_epoch = 43 * official_accumulate + 5  # leftover micro-batches at each epoch's end
    _, _, optimizer, scheduler = _recipe_optimization(experiment, iters_per_epoch)
    expected = official_step_lrs(solver, iters_per_epoch, official_accumulate)
    got = []
    for _ in expected:
        got.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, (lrs, want) in enumerate(zip(got, expected)):
        for lr in lrs:
            assert abs(lr - want) <= 1e-6 * abs(want) + 1e-15, f"step {step}: {lr} != official {want}"


def test_pyslowfast_lr_at_real_kinetics_size_dense():
    # 240,436 training videos / 64 = 3,756 iterations per epoch; warm-up end and the end included.
    iters = 240_436 // 64
    _, _, optimizer, scheduler = _recipe_optimization("i3d_r50_k400", iters)
    peak, factor = optimizer.param_groups[0]["initial_lr"], scheduler.lr_lambdas[0]
    steps = sorted({*range(0, 196 * iters, 997), 34 * iters - 1, 34 * iters, 34 * iters + 1, 196 * iters - 1})
    for step in steps:
        want = official_lr(PYSLOWFAST_K400, step // iters + (step % iters) / iters)
        assert peak * factor(step) == pytest.approx(want, rel=1e-6, abs=1e-15)


def test_demo_keeps_the_restart_after_warmup_shape():
    # demo.yaml: cosine_after_warmup=true, i.e. PySlowFast's COSINE_AFTER_WARMUP=True: warm-up to
    # the peak, then a cosine over the remaining epochs (the shape the demo's numbers were measured with).
    cfg = compose_config(["experiment=demo"])
    assert cfg.schedule.cosine_after_warmup
    solver = {"LR_POLICY": "cosine", "BASE_LR": 1.0, "MAX_EPOCH": 25, "WARMUP_EPOCHS": 1.0,
              "WARMUP_START_LR": 0.01, "COSINE_AFTER_WARMUP": True}
    model = nn.Linear(2, 2)
    optimizer = instantiate(cfg.optim)(model, global_batch_size=cfg.optim.base_batch_size)
    scheduler = instantiate(cfg.schedule)(optimizer, 7, 25)
    peak = optimizer.param_groups[0]["initial_lr"]
    for step in range(25 * 7):
        want = peak * official_lr(solver, step / 7)
        assert peak * scheduler.lr_lambdas[0](step) == pytest.approx(want, rel=1e-9)
    assert scheduler.lr_lambdas[0](7) == pytest.approx(1.0)  # the peak right after warm-up


# ----------------------------------------------------------------------------- formulas by hand
def test_linear_scaling_rule():
    assert scaled_lr(0.1, 512, 64) == pytest.approx(0.8)
    assert scaled_lr(0.1, 512, None) == 0.1


def test_pyslowfast_cosine_warmup_ends_at_the_cosine_value():
    f = lambda e: lr_factor_at_epoch(e, 10, warmup_epochs=2, warmup_start_factor=0.1)  # noqa: E731
    at_2 = 0.5 * (1 + math.cos(math.pi * 2 / 10))
    assert f(0) == pytest.approx(0.1)
    assert f(1) == pytest.approx(0.1 + (at_2 - 0.1) / 2)
    assert f(2) == pytest.approx(at_2)
    assert f(5) == pytest.approx(0.5)
    assert f(10) == pytest.approx(0.0, abs=1e-12)


def test_restart_after_warmup_and_cosine_end():
    f = lambda e: lr_factor_at_epoch(e, 10, warmup_epochs=2, warmup_start_factor=0.1,  # noqa: E731
                                     cosine_after_warmup=True, min_factor=0.2)
    assert f(1) == pytest.approx(0.55)
    assert f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.2 + 0.8 * 0.5)
    assert f(10) == pytest.approx(0.2)


def test_steps_with_gamma_or_relative_lrs_and_warmup_to_the_step_value():
    assert lr_factor_at_epoch(40, 90, name="steps", milestones=(30, 60)) == pytest.approx(0.1)
    rel = dict(name="steps", milestones=(1, 3), relative_lrs=(1.0, 0.5, 0.2))
    assert lr_factor_at_epoch(2.5, 4, **rel) == 0.5 and lr_factor_at_epoch(3, 4, **rel) == 0.2
    # a milestone inside the warm-up: the warm-up ends at that step's value (PySlowFast)
    assert lr_factor_at_epoch(1, 4, warmup_epochs=2, warmup_start_factor=0.0, **rel) == pytest.approx(0.25)


@pytest.mark.parametrize("bad, match", [
    (dict(warmup_epochs=11), "warmup_epochs"),
    (dict(min_factor=1.0), "min_factor"),
    (dict(name="steps", milestones=(5, 2)), "milestones"),
    (dict(name="steps", milestones=(5,), relative_lrs=(1.0,)), "relative_lrs"),
    (dict(name="poly"), "unknown schedule"),
])
def test_bad_schedule_settings_are_refused_with_the_key(bad, match):
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        build_scheduler(optimizer, 10, 10, **bad)


# ----------------------------------------------------------------------------- weight-decay groups
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)
        self.ln = nn.LayerNorm(4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.fc = nn.Linear(4, 2)


def _split(net, no_decay):
    groups = param_groups(net, 1e-4, no_decay)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    return ids(groups[0]["params"]), ids(groups[1]["params"]) if len(groups) > 1 else set(), ids


def test_weight_decay_groups_by_kind():
    net = _Net()
    decay, skip, ids = _split(net, ["norm", "bias", "embed"])
    norms = [net.bn.weight, net.bn.bias, net.ln.weight, net.ln.bias]
    assert skip == ids([net.conv.bias, *norms, net.pos_embed, net.fc.bias])
    decay, skip, ids = _split(net, ["bn"])  # PySlowFast: BatchNorm only, the classifier bias decayed
    assert skip == ids([net.bn.weight, net.bn.bias])
    assert ids([net.fc.bias, net.ln.weight, net.pos_embed]) <= decay
    decay, skip, ids = _split(net, [])  # official TimeSformer: everything decayed
    assert skip == set() and len(decay) == len(list(net.parameters()))
    decay, skip, ids = _split(net, ["1d"])
    assert skip == ids([p for p in net.parameters() if p.ndim == 1])
    with pytest.raises(ValueError, match="optim.no_decay.*'norms'"):
        param_groups(net, 1e-4, ["norms"])


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_recipe_weight_decay_groups_are_the_papers(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    with torch.device("meta"):
        model = instantiate(cfg.model)
    optimizer = instantiate(cfg.optim)(model, global_batch_size=64)
    undecayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    if "timesformer" in experiment:  # TimeSformer's construct_optimizer: only names with "bn"
        expected = {id(p) for n, p in model.named_parameters() if "bn" in n}
    else:  # PySlowFast's construct_optimizer with BN.WEIGHT_DECAY 0 and ZERO_WD_1D_PARAM False
        expected = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                    for p in m.parameters(recurse=False)}
        assert expected  # the ResNets do have BatchNorm
    assert undecayed == expected
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == 1e-4


def test_build_optimizer_sgd_is_pyslowfast_sgd():
    net = nn.Linear(2, 2)
    opt = build_optimizer(net, global_batch_size=128, name="sgd", base_lr=0.1, base_batch_size=64)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # 0.1 * 128 / 64
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9 and opt.defaults["dampening"] == 0


# ----------------------------------------------------------------------------- what training logs
def test_training_logs_the_official_lr_at_every_step(tiny_synthetic, tmp_path):
    """A real (tiny) run with PySlowFast's cosine and a warm-up ending mid-epoch: every logged
    ``train/lr`` (after step g, the LR of the next step) is the official formula at g / steps."""
    import json

    from helpers import tiny_overrides

    from videocls.engine.trainer import fit

    run_dir = tmp_path / "run"
    cfg = compose_config(tiny_overrides(
        tiny_synthetic, run_dir, "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        "trainer.eval_period=2", "schedule.cosine_after_warmup=false", "schedule.warmup_epochs=0.5",
        "schedule.warmup_start_factor=0.1", "schedule.min_factor=0.05", "test.num_clips=1",
    ))
    fit(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {row["step"]: row["train/lr"] for row in rows if "train/lr" in row}
    peak = next(row["lr_scaled"] for row in rows if "lr_scaled" in row)
    steps_per_epoch = max(logged) // 2
    assert steps_per_epoch >= 2 and sorted(logged) == list(range(1, 2 * steps_per_epoch + 1))
    solver = {"LR_POLICY": "cosine", "BASE_LR": peak, "MAX_EPOCH": 2, "WARMUP_EPOCHS": 0.5,
              "WARMUP_START_LR": 0.1 * peak, "COSINE_END_LR": 0.05 * peak}
    for step, lr in logged.items():
        assert lr == pytest.approx(official_lr(solver, step / steps_per_epoch), rel=1e-6), step


def test_a_run_that_is_all_warmup_warms_up_to_the_peak():
    # demo overrides with trainer.max_epochs=1 and one warm-up epoch (the tests' tiny runs)
    f = lambda e: lr_factor_at_epoch(e, 1, warmup_epochs=1, warmup_start_factor=0.01,  # noqa: E731
                                     cosine_after_warmup=True)
    assert f(0) == pytest.approx(0.01) and f(0.5) == pytest.approx(0.505) and f(1) == 1.0


# ----------------------------------------------------------------------------- the rest of the config
# DATA / TEST / MODEL values of the official files (defaults.py where the file is silent).
OFFICIAL_DATA_TEST = {
    "i3d_r50_k400": dict(
        frames=8, rate=8, fps=30, jitter=[256, 320], crop=224, flip=True, test_crop=256,
        views=(10, 3), aggregation="mean_softmax", head="window_softmax", precise_bn=200),
    "slowfast_r50_k400": dict(
        frames=32, rate=2, fps=30, jitter=[256, 320], crop=224, flip=True, test_crop=256,
        views=(10, 3), aggregation="mean_softmax", head="window_softmax", precise_bn=200),
    "timesformer_k400": dict(  # its test_net sums the ViT's logits (no softmax)
        frames=8, rate=32, fps=30, jitter=[256, 320], crop=224, flip=True, test_crop=224,
        views=(1, 3), aggregation="mean_logits", head=None, precise_bn=0),
    "timesformer_ssv2": dict(
        frames=8, rate=None, fps=None, jitter=[256, 320], crop=224, flip=False, test_crop=224,
        views=(1, 3), aggregation="mean_logits", head=None, precise_bn=0),
}


@pytest.mark.parametrize("experiment", sorted(OFFICIAL_DATA_TEST))
def test_recipe_data_and_test_protocol_are_the_official(experiment):
    want = OFFICIAL_DATA_TEST[experiment]
    cfg = compose_config([f"experiment={experiment}"])
    d = cfg.data
    assert d.num_frames == want["frames"] and list(d.train_short_side) == want["jitter"]
    if want["rate"] is not None:  # Kinetics: dense clips at 30 fps
        assert (d.sampling_mode, d.sampling_rate, d.target_fps) == ("clip", want["rate"], want["fps"])
    else:  # SSv2: get_seq_frames
        assert d.sampling_mode == "rounded_segment"
    assert d.train_crop == want["crop"] and d.flip == want["flip"] and d.train_crop_scale is None
    # PySlowFast/TimeSformer test: short side = crop = TEST_CROP_SIZE when NUM_SPATIAL_CROPS is 3
    assert d.test_short_side == d.test_crop == want["test_crop"]
    assert (cfg.test.num_clips, cfg.test.num_crops) == want["views"]
    assert cfg.test.aggregation == want["aggregation"]
    assert cfg.model.get("head_pool") == want["head"]
    assert cfg.trainer.precise_bn_batches == want["precise_bn"]
    assert cfg.loss.label_smoothing == 0.0 and d.mixup is None
    assert d.rand_augment is None and d.erase_prob == 0
    # DATA.INV_UNIFORM_SAMPLE: True in TimeSformer's SSv2 config, False (default) in the Kinetics ones
    assert d.train_scale_inverse_uniform == (experiment == "timesformer_ssv2")
