"""Multigrid training (videocls.engine.multigrid, videocls.data.multigrid) against PySlowFast's
formulas worked by hand, and end to end: shapes per epoch, and exact resumption inside an epoch
of a new long-cycle shape."""

import math
from dataclasses import dataclass

import pytest
import torch
from helpers import compose_config, tiny_overrides
from torch import nn

from videocls.data.loader import ShardedSampler
from videocls.data.multigrid import MultigridClipDataset, ShortCycleBatchSampler
from videocls.engine.checkpoint import load_checkpoint
from videocls.engine.multigrid import (
    Stage,
    check_model_accepts,
    long_cycle_schedule,
    plan_multigrid,
    rescaled_lr_steps,
)
from videocls.engine.optim import build_scheduler
from videocls.engine.trainer import Trainer

# PySlowFast's get_long_cycle_schedule by hand for T0 = 8, S0 = 224, SOLVER.STEPS = [0, 10, 20],
# MAX_EPOCH = 30, EPOCH_FACTOR = 1.5, default LONG_CYCLE_FACTORS. Shapes (T, S): (2, 158), (4, 158),
# (4, 224), (8, 224) with batch factors round(8 * 224^2 / (T S^2)) = 8, 4, 2, 1 (sum 15).
# Each step's 10 epochs split 10 * b / 15 = 5.333, 2.667, 1.333, 0.667 (equal iterations, 4 x 2/3
# per step); iteration saving 20 / (16/3) = 3.75, so the fine-tuning phase (epochs 20-30) gets
# 10 / 3.75 = 2.667 epochs; the total 22.667 is scaled to 45 (x 1.98529): cumulative 10.59, 15.88,
# 18.53, 19.85, 30.44, 35.74, 38.38, 39.71, 45.0.
NO_SHORT_ENDS = [11, 16, 19, 20, 30, 36, 38, 40, 45]
# With SHORT_CYCLE: mean batch factors over (crop 112, 158.39, long-cycle crop): (16+8+8)/3,
# (8+4+4)/3, (8+4+2)/3, (4+2+1)/3 (sum 23); per step 4.638, 2.319, 2.029, 1.014 epochs; saving
# 20 / (80/23) = 5.75, fine-tuning 10 / 5.75 * 7/3 = 4.058; scaled x 45 / 24.058 = 1.87048:
# cumulative 8.67, 13.01, 16.81, 18.71, 27.38, 31.72, 35.51, 37.41, 45.0.
SHORT_ENDS = [9, 13, 17, 19, 27, 32, 36, 37, 45]
SHAPES = [(8, 2, 158), (4, 4, 158), (2, 4, 224), (1, 8, 224)] * 2 + [(1, 8, 224)]


@pytest.mark.parametrize("short, ends", [(None, NO_SHORT_ENDS), ((0.5, 0.5**0.5), SHORT_ENDS)])
def test_long_cycle_schedule_is_pyslowfasts(short, ends):
    stages = long_cycle_schedule(num_frames=8, crop_size=224, steps=[0, 10, 20], max_epochs=30,
                                 short_cycle_factors=short)
    assert [s.end_epoch for s in stages] == ends
    assert [(s.batch_factor, s.num_frames, s.crop_size) for s in stages] == SHAPES
    assert [s.step for s in stages] == [0] * 4 + [1] * 4 + [2]


def test_lr_steps_are_pyslowfasts_init_multigrid():
    stages = [Stage(step, b, t, s, end) for (b, t, s), end, step in
              zip(SHAPES, NO_SHORT_ENDS, [0] * 4 + [1] * 4 + [2])]
    milestones, lrs = rescaled_lr_steps(stages, lambda step: 0.1**step)
    # STEPS = [0, stage ends], the last halfway through fine-tuning: (40 + 45) // 2 = 42;
    # LRS = GAMMA^step x batch factor, fine-tuning's first half at the last step's base LR.
    assert milestones == [11, 16, 19, 20, 30, 36, 38, 40, 42]
    assert lrs == pytest.approx([8, 4, 2, 1, 0.8, 0.4, 0.2, 0.1, 0.1, 0.01])


def test_plan_rescales_a_steps_schedule_and_the_demo_cosine():
    overrides = ["trainer.multigrid.long_cycle=true", "trainer.multigrid.short_cycle=true"]
    cfg = compose_config(["experiment=demo", *overrides, "schedule=steps", "schedule.milestones=[10,20]",
                          "trainer.max_epochs=30", "data.num_frames=8", "data.train_crop=224"])
    plan = plan_multigrid(cfg)
    assert plan.max_epochs == 45 and [s.end_epoch for s in plan.stages] == SHORT_ENDS
    assert plan.milestones == (9, 13, 17, 19, 27, 32, 36, 37, 41)
    # Stage 0's batches: crops 112, 158, 158 at round((158 / crop)^2) x 8 x the base batch 16.
    assert plan.short_cycle_crops(plan.stages[0]) == [112, 158, 158]
    assert plan.short_cycle_batch_sizes(plan.stages[0], 16) == [256, 128, 128]
    assert plan.short_cycle_batch_sizes(plan.stages[-1], 16) == [64, 32, 16]
    # The demo (cosine, 25 epochs, 8 x 32 px): one LR "step" over the run, 1.5 x 25 = 37.5 -> 38.
    demo = plan_multigrid(compose_config(["experiment=demo", *overrides]))
    assert [(s.num_frames, s.crop_size, s.end_epoch) for s in demo.stages] == [
        (2, 23, 17), (4, 23, 26), (4, 32, 34), (8, 32, 38), (8, 32, 38)]
    scale = demo.epoch_lr_scale()
    assert demo.milestones is None and scale[16] == 8 and scale[17] == 4 and scale[33] == 2 and scale[37] == 1


def test_scheduler_follows_per_epoch_steps_and_lr_factors():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, [2, 4], 2, name="cosine", warmup_epochs=0.0, epoch_lr_scale=[8, 1])
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Steps 0-1 are epoch 0 (0, 0.5), steps 2-5 epoch 1 (1, 1.25, 1.5, 1.75): cosine over 2 epochs,
    # x 8 in epoch 0.
    epochs, scales = [0, 0.5, 1, 1.25, 1.5, 1.75], [8, 8, 1, 1, 1, 1]
    expected = [s * 0.5 * (1 + math.cos(math.pi * e / 2)) for e, s in zip(epochs, scales)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_short_cycle_batches_cycle_shapes_and_resume():
    sampler = ShortCycleBatchSampler(ShardedSampler(10, seed=3), [4, 2, 1])
    sampler.set_epoch(1)
    order = ShardedSampler(10, seed=3)
    order.set_epoch(1)
    order = list(order)
    batches = list(sampler)
    # 4 + 2 + 1 = 7, and the next 4 do not fit: 3 batches (PySlowFast's len() says floor(10 / 7 * 3) = 4).
    assert len(sampler) == 3
    assert batches == [[(i, 0) for i in order[:4]], [(i, 1) for i in order[4:6]], [(order[6], 2)]]
    sampler.set_epoch(1, start_batch=2)
    assert list(sampler) == batches[2:] and len(sampler) == 1


@dataclass
class _Sampler:  # what MultigridClipDataset replaces: a frozen dataclass with the rate
    sampling_rate: int


class _Views:
    """Answers which crop and rate served an index."""

    def __init__(self, crop):
        self.crop, self.sampler, self.records, self.epoch = crop, _Sampler(2), [], 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 100

    def __getitem__(self, index):
        return self.crop, self.sampler.sampling_rate


def test_multigrid_dataset_serves_each_shape_with_a_reproducible_rate():
    dataset = MultigridClipDataset([_Views(16), _Views(32)], sampling_rates=(2, 8), seed=0)
    dataset.set_epoch(3)
    items = [dataset[(i, i % 2)] for i in range(100)]
    assert [crop for crop, _ in items] == [16, 32] * 50
    rates = [rate for _, rate in items]
    assert set(rates) == set(range(2, 9))  # low..high inclusive, as PySlowFast's random.randint
    assert [dataset[(i, i % 2)][1] for i in range(100)] == rates  # the same draws on a rerun
    assert dataset[5] == (32, rates[5])  # a plain index: the long cycle's own shape


def test_model_with_a_fixed_input_is_refused_naming_the_shape():
    fixed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 32 * 32, 2))
    check_model_accepts(fixed, [(4, 32)], torch.device("cpu"))
    with pytest.raises(ValueError, match="cannot take 2x23x23 clips"):
        check_model_accepts(fixed, [(2, 23), (4, 32)], torch.device("cpu"))


class _StopAfter:
    """A preemption flag raised at the ``steps``-th optimiser step (the loop asks once per step)."""

    def __init__(self, steps=math.inf):
        self.steps = steps

    def __bool__(self):
        self.steps -= 1
        return self.steps <= 0


def _train(config, run_dir, stop=None):
    """``Trainer.fit``'s loop without its validations and final test: the weights only depend on
    the steps. Returns the trainer (closed) after the last epoch or the stop."""
    trainer = Trainer(config, run_dir)
    try:
        while trainer.epoch < trainer.cfg.trainer.max_epochs:
            if not trainer.train_epoch(stop or _StopAfter()):
                break
            trainer.epoch, trainer.batches_done = trainer.epoch + 1, 0
    finally:
        trainer.close()
    return trainer


def test_training_resumes_exactly_inside_a_new_shape(tiny_synthetic, tmp_path):
    # 20 videos, base batch 2; long cycle (2 frames, 23 px, batch x4) then (4, 32): epochs 0-1 are
    # one [16, 8, 8] cycle's first batch, epoch 2 the batches [8, 4, 2] at crops 16, 23, 32.
    extra = ["data.batch_size=2", "trainer.max_epochs=2", "trainer.multigrid.long_cycle=true",
             "trainer.multigrid.short_cycle=true",
             "trainer.multigrid.long_cycle_factors=[[0.5,0.7071067811865476],[1,1]]"]
    config = compose_config(tiny_overrides(tiny_synthetic, tmp_path / "a", *extra))
    reference = _train(config, tmp_path / "a")
    assert reference.cfg.trainer.max_epochs == 3 and reference.multigrid.steps_per_epoch == [1, 1, 3]
    assert reference.global_step == 5
    loader, batches = reference.multigrid.epoch_loader(2, 0)
    assert batches == 3
    shapes = [tuple(b["video"].shape) for b in loader]
    assert shapes == [(8, 3, 4, 16, 16), (4, 3, 4, 23, 23), (2, 3, 4, 32, 32)]

    _train(config, tmp_path / "b", stop=_StopAfter(3))  # epochs 0 and 1, then one step of epoch 2
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batches_done"], state["global_step"]) == (2, 1, 3)
    resumed = _train(config, tmp_path / "b")  # resumes from last.pt: a new loader at batch 1
    assert resumed.global_step == 5
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()
