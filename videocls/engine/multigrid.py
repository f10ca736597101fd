"""Multigrid training (Wu et al., "A Multigrid Method for Efficiently Training Video Models",
CVPR 2020), as PySlowFast's ``MULTIGRID`` (``slowfast/utils/multigrid.py``).

Training cycles through clip shapes at a constant cost per step: fewer frames and smaller
crops come with proportionally larger batches (``batch factor = T0 S0^2 / (T S^2)``, rounded).

- **Long cycle** (``trainer.multigrid.long_cycle``): within each LR step of the schedule, the
  shapes of ``long_cycle_factors`` (``(T factor, S factor)``; default ``(1/4, 1/sqrt2)``,
  ``(1/2, 1/sqrt2)``, ``(1/2, 1)``, ``(1, 1)``: batch x8, x4, x2, x1) each train for a share of
  the epochs proportional to their mean batch factor (equal iterations); a final "fine-tuning"
  phase at the base shape gets the same iteration saving. All epochs are then scaled so the run
  lasts ``epoch_factor x max_epochs`` epochs (``get_long_cycle_schedule``). The LR steps move to
  the ends of each step's shapes, the last step splits the fine-tuning phase in half, and every
  shape's LR is multiplied by its batch factor (linear scaling; ``init_multigrid``).
- **Short cycle** (``short_cycle``): batches cycle through crops ``short_cycle_factors x S0``
  (default 1/2, 1/sqrt2) and the long cycle's crop, with batch sizes ``round((S / crop)^2) x B``
  (``ShortCycleBatchSampler``, in ``videocls.data.multigrid``). Alone, it scales the epochs and
  the LR steps by ``epoch_factor``.

A long cycle that shortens clips keeps their span in ``clip`` sampling mode (a rate drawn per
clip in ``[rate, rate x T0 // T]``, PySlowFast's ``LONG_CYCLE_SAMPLING_RATE``); the lower bound
of the short-side jitter scales with the crop (``min_scale x crop / S0``), as PySlowFast's
Kinetics loader. The validation and test sets keep the base shape.

Differences from PySlowFast, and why:
- a cosine (or constant) schedule is supported: the long cycles span the whole run (one LR
  "step", no fine-tuning phase) and each shape's LR is the cosine's times its batch factor
  (PySlowFast's multigrid needs ``SOLVER.STEPS``); ``scale_lr=false`` drops the batch factor;
- a user's ``schedule.relative_lrs`` give the per-step LR (PySlowFast uses ``GAMMA ** step``);
- BatchNorm normalises over the whole per-device batch: ``BN_BASE_SIZE`` (sub-batch /
  sync BN that keeps 8 clips per statistic) is not implemented;
- precise BN (``trainer.precise_bn_batches``) re-estimates the statistics on training clips
  of the base shape, the shape validation runs at (PySlowFast uses the current long-cycle
  shape, so its mid-run validations run with the statistics of another shape);
- evaluation follows ``trainer.eval_period``, not ``MULTIGRID.EVAL_FREQ``;
- without a short cycle the fine-tuning phase uses the base shape (PySlowFast indexes the
  short-cycle shapes there and fails);
- the multigrid training loader finishes its clips on the CPU (``data.gpu_transforms`` applies
  to validation and precise BN only).
Models whose input size is fixed are refused with the shape they fail on
(:func:`check_model_accepts`, one forward per shape at start); TimeSformer interpolates its
space and time embeddings (as the official code) and is accepted.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from videocls.data.loader import ShardedSampler
from videocls.data.multigrid import MultigridClipDataset, build_short_cycle_loader, short_cycle_batches
from videocls.data.sampling import pack_pathways

log = logging.getLogger(__name__)

SQRT_HALF = 0.5**0.5
#: PySlowFast's defaults (``_C.MULTIGRID``).
LONG_CYCLE_FACTORS = ((0.25, SQRT_HALF), (0.5, SQRT_HALF), (0.5, 1.0), (1.0, 1.0))
SHORT_CYCLE_FACTORS = (0.5, SQRT_HALF)
EPOCH_FACTOR = 1.5


@dataclass(frozen=True)
class Stage:
    """One long-cycle shape: LR step ``step``, batch ``batch_factor`` x the base batch, clips of
    ``num_frames`` x ``crop_size``^2, trained until epoch ``end_epoch`` (exclusive)."""

    step: int
    batch_factor: int
    num_frames: int
    crop_size: int
    end_epoch: int


@dataclass(frozen=True)
class MultigridPlan:
    """The whole run: its stages, epochs, LR steps and the per-epoch LR factor."""

    stages: tuple[Stage, ...]
    max_epochs: int
    milestones: tuple[float, ...] | None  # the rescaled LR steps (steps schedules)
    relative_lrs: tuple[float, ...] | None
    short_cycle_factors: tuple[float, ...] | None  # None: no short cycle
    base_frames: int
    base_crop: int
    scale_lr: bool

    def stage_at(self, epoch: int) -> Stage:
        """PySlowFast's ``get_current_long_cycle_shape``."""
        return next((s for s in self.stages if epoch < s.end_epoch), self.stages[-1])

    def epoch_lr_scale(self) -> list[float] | None:
        """Per epoch, the LR factor of its shape (cosine/constant schedules; steps schedules carry
        it in ``relative_lrs``)."""
        if self.milestones is not None or not self.scale_lr:
            return None
        return [float(self.stage_at(e).batch_factor) for e in range(self.max_epochs)]

    def short_cycle_crops(self, stage: Stage) -> list[int]:
        """The crops of one stage's batches in cycle order (one: no short cycle)."""
        factors = self.short_cycle_factors or ()
        return [int(round(f * self.base_crop)) for f in factors] + [stage.crop_size]

    def short_cycle_batch_sizes(self, stage: Stage, base_batch: int) -> list[int]:
        """PySlowFast's ``ShortCycleBatchSampler.batch_sizes`` for a stage's batch."""
        batch = base_batch * stage.batch_factor
        factors = self.short_cycle_factors or ()
        return [batch * int(round((stage.crop_size / (f * self.base_crop)) ** 2)) for f in factors] + [batch]


def long_cycle_schedule(*, num_frames: int, crop_size: int, steps: Sequence[float], max_epochs: float,
                        long_cycle_factors: Sequence[Sequence[float]] = LONG_CYCLE_FACTORS,
                        short_cycle_factors: Sequence[float] | None = None,
                        epoch_factor: float = EPOCH_FACTOR) -> list[Stage]:
    """PySlowFast's ``get_long_cycle_schedule``. ``steps`` are its ``SOLVER.STEPS`` (the LR step
    starts, ``0`` first); ``short_cycle_factors`` (short cycle on) enter the mean batch sizes."""
    default_size = float(num_frames * crop_size**2)
    all_shapes, mean_batch = [], []
    for t_factor, s_factor in long_cycle_factors:
        frames, crop = int(round(num_frames * t_factor)), int(round(crop_size * s_factor))
        shapes = [(frames, crop_size * f) for f in (short_cycle_factors or ())] + [(frames, crop)]
        shapes = [(int(round(default_size / (t * s * s))), t, s) for t, s in shapes]
        all_shapes.append(shapes)
        mean_batch.append(sum(s[0] for s in shapes) / len(shapes))
    total_iters, raw = 0.0, []
    for step in range(len(steps) - 1):
        step_epochs = steps[step + 1] - steps[step]
        for shapes, batch in zip(all_shapes, mean_batch):
            epochs = step_epochs * batch / sum(mean_batch)
            total_iters += epochs / batch
            raw.append((step, shapes[-1], epochs))
    iter_saving = steps[-1] / total_iters
    # The fine-tuning phase (the last LR step) saves as many iterations as the rest.
    raw.append((len(steps) - 1, all_shapes[-1][-1], (max_epochs - steps[-1]) / iter_saving * mean_batch[-1]))
    scale = max_epochs * epoch_factor / sum(r[2] for r in raw)
    stages, total = [], 0.0
    for step, (batch, frames, crop), epochs in raw:
        total += epochs * scale
        stages.append(Stage(step, batch, frames, int(crop), int(round(total))))
    return stages


def rescaled_lr_steps(stages: Sequence[Stage], relative: Callable[[int], float], *,
                      scale_lr: bool = True) -> tuple[list[int], list[float]]:
    """PySlowFast's ``init_multigrid`` for a steps schedule: the LR steps at the stage ends, the
    last one halfway through the fine-tuning phase, and each stage's LR ``relative(step) x
    batch factor``. Returns ``(milestones, relative_lrs)`` (our steps' form: no leading 0)."""
    steps = [0] + [s.end_epoch for s in stages]
    steps[-1] = (steps[-2] + steps[-1]) // 2
    lrs = [relative(s.step) * (s.batch_factor if scale_lr else 1) for s in stages]
    lrs = lrs[:-1] + [lrs[-2], lrs[-1]]
    return steps[1:], lrs


def plan_multigrid(cfg: DictConfig) -> MultigridPlan | None:
    """The plan ``trainer.multigrid`` asks for on this config (None when both cycles are off)."""
    mg, sched = cfg.trainer.multigrid, cfg.schedule
    if not (mg.long_cycle or mg.short_cycle) or not int(cfg.trainer.max_epochs) >= 1:
        return None  # (a bad max_epochs is check_config's to name)
    if not mg.epoch_factor > 0:
        raise ValueError(f"trainer.multigrid.epoch_factor must be > 0, got {mg.epoch_factor}")
    frames, crop, max_epochs = int(cfg.data.num_frames), int(cfg.data.train_crop), int(cfg.trainer.max_epochs)
    short = tuple(float(f) for f in mg.short_cycle_factors) if mg.short_cycle else None
    steps_schedule = sched.get("name") == "steps" and len(sched.get("milestones") or []) > 0
    milestones = [float(m) for m in sched.milestones] if steps_schedule else []
    gamma, relative_lrs = sched.get("gamma", 0.1), sched.get("relative_lrs")

    def relative(step: int) -> float:
        return float(relative_lrs[step]) if relative_lrs is not None else float(gamma) ** step

    if mg.long_cycle:
        factors = [tuple(float(v) for v in f) for f in mg.long_cycle_factors]
        if not factors or any(len(f) != 2 or min(f) <= 0 for f in factors):
            raise ValueError(f"trainer.multigrid.long_cycle_factors must be positive [T, S] pairs: {factors}")
        # A cosine run is one LR "step" over all epochs: no fine-tuning phase.
        steps = [0.0] + milestones if steps_schedule else [0.0, float(max_epochs)]
        stages = long_cycle_schedule(num_frames=frames, crop_size=crop, steps=steps, max_epochs=max_epochs,
                                     long_cycle_factors=factors, short_cycle_factors=short,
                                     epoch_factor=float(mg.epoch_factor))
        stages = [s for s in stages if s.num_frames >= 1 and s.crop_size >= 1]
        new_milestones, new_lrs = (rescaled_lr_steps(stages, relative, scale_lr=bool(mg.scale_lr))
                                   if steps_schedule else (None, None))
        total = stages[-1].end_epoch
    else:  # short cycle alone: PySlowFast scales the epochs and the LR steps by EPOCH_FACTOR
        total = int(max_epochs * mg.epoch_factor)
        stages = [Stage(0, 1, frames, crop, total)]
        new_milestones = [int(m * mg.epoch_factor) for m in milestones] if steps_schedule else None
        new_lrs = [relative(i) for i in range(len(milestones) + 1)] if steps_schedule else None
    return MultigridPlan(tuple(stages), total, None if new_milestones is None else tuple(new_milestones),
                         None if new_lrs is None else tuple(new_lrs), short, frames, crop, bool(mg.scale_lr))


def configure(cfg: DictConfig) -> tuple[DictConfig, MultigridPlan | None]:
    """A copy of ``cfg`` with the multigrid epochs (and LR steps) in place of the configured
    ones, as PySlowFast rewrites ``SOLVER.MAX_EPOCH``/``STEPS``/``LRS``; ``cfg`` itself is
    untouched, so the same config always gives the same run (and resumes it)."""
    plan = plan_multigrid(cfg)
    if plan is None:
        return cfg, None
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.trainer.max_epochs = plan.max_epochs
    if plan.milestones is not None:
        cfg.schedule.milestones, cfg.schedule.relative_lrs = list(plan.milestones), list(plan.relative_lrs)
    return cfg, plan


def format_plan(plan: MultigridPlan, base_batch: int) -> str:
    """PySlowFast's ``print_schedule``, with the batch sizes and crops each stage uses."""
    rows, start = [], 0
    for s in plan.stages:
        if s.end_epoch > start:
            sizes = plan.short_cycle_batch_sizes(s, base_batch)
            rows.append(f"  epochs {start:>3}-{s.end_epoch - 1:<3} LR step {s.step}: {s.num_frames} frames, "
                        f"crops {plan.short_cycle_crops(s)}, batches {sizes}")
        start = max(start, s.end_epoch)
    return "\n".join(rows)


@torch.no_grad()
def check_model_accepts(model: nn.Module, shapes: Sequence[tuple[int, int]], device: torch.device) -> None:
    """Run ``model`` once (eval mode, batch 1) on every ``(frames, crop)`` clip shape: a model
    that needs a fixed input (e.g. a position embedding for one shape) fails here, named."""
    was_training = model.training
    model.eval()
    alpha = getattr(model, "alpha", None)
    try:
        for frames, crop in shapes:
            clip = torch.zeros(3, frames, crop, crop)
            inputs = ([p.unsqueeze(0).to(device) for p in pack_pathways(clip, alpha)] if alpha
                      else clip.unsqueeze(0).to(device))
            try:
                model(inputs)
            except (RuntimeError, ValueError, AssertionError, IndexError) as error:
                raise ValueError(
                    f"trainer.multigrid: {type(model).__name__} cannot take {frames}x{crop}x{crop} clips "
                    f"({error}); multigrid needs a model that accepts every clip shape of the schedule "
                    "(CNNs with a global pooling head, e.g. model.head_pool=global). Turn trainer.multigrid "
                    "off for this model, or change trainer.multigrid.long_cycle_factors / short_cycle_factors"
                ) from error
    finally:
        model.train(was_training)


class MultigridTraining:
    """The trainer's side: the loader of each epoch's shape and the per-epoch step counts.

    ``data`` is the run's ``VideoData``; every stage's training set is built from it with the
    stage's frames, crop and sampling rate (``dataclasses.replace``), so any dataset works.
    ``base_loader`` (the run's own training loader, base shape) is kept for precise BN.
    """

    def __init__(self, plan: MultigridPlan, data, *, model: nn.Module, dataset_kwargs: dict, base_loader,
                 num_items: int, loader_kwargs: dict, accumulate: int, device: torch.device) -> None:
        self.plan, self.data, self.dataset_kwargs = plan, data, dataset_kwargs
        self.loader_kwargs, self.accumulate, self.base_loader = loader_kwargs, accumulate, base_loader
        shapes = sorted({(s.num_frames, c) for s in plan.stages for c in plan.short_cycle_crops(s)})
        check_model_accepts(model, shapes, device)
        per_rank = len(ShardedSampler(num_items, loader_kwargs["num_replicas"], loader_kwargs["rank"]))
        self.steps_per_epoch = []
        for epoch in range(plan.max_epochs):
            sizes = plan.short_cycle_batch_sizes(plan.stage_at(epoch), data.batch_size)
            steps = short_cycle_batches(per_rank, sizes) // accumulate
            if steps == 0:
                raise ValueError(f"trainer.multigrid: epoch {epoch} has batches {sizes} and {per_rank} clips "
                                 "per device: no full optimiser step; lower data.batch_size or the "
                                 "long-cycle factors")
            self.steps_per_epoch.append(steps)
        self._stage, self._loader = None, None

    def schedule(self, build: Callable) -> Callable:
        """``build`` (``instantiate(cfg.schedule)``) with this run's per-epoch step counts and LR factors."""
        scale = self.plan.epoch_lr_scale()

        def make(optimizer, _steps_per_epoch, max_epochs):
            return build(optimizer, self.steps_per_epoch, max_epochs, epoch_lr_scale=scale)

        return make

    def _build_loader(self, stage: Stage):
        data, crops, lo, hi = self.data, self.plan.short_cycle_crops(stage), *self.data.train_short_side
        rate = data.sampling_rate
        long_rate = rate * max(self.plan.base_frames // stage.num_frames, 1)
        datasets = [dataclasses.replace(data, num_frames=stage.num_frames, train_crop=crop,
                                        train_short_side=(self._short_side(lo, crop), hi))
                    .dataset("train", train=True, **self.dataset_kwargs) for crop in crops]
        rates = (rate, long_rate) if data.sampling_mode == "clip" and long_rate > rate else None
        dataset = MultigridClipDataset(datasets, sampling_rates=rates, seed=self.dataset_kwargs["seed"])
        sizes = self.plan.short_cycle_batch_sizes(stage, data.batch_size)
        log.info("multigrid: %d frames, crops %s, batch sizes %s, sampling rate %s", stage.num_frames, crops,
                 sizes, f"{rates[0]}-{rates[1]}" if rates else rate)
        return build_short_cycle_loader(dataset, sizes, class_balanced=data.class_balanced,
                                        **self.loader_kwargs)

    def _short_side(self, low: int, crop: int) -> int:
        """PySlowFast: a smaller crop lowers the jitter's lower bound (``min_scale x crop / S0``),
        "equivalent to using a larger span in a sampling grid"."""
        return max(int(round(low * crop / self.plan.base_crop)), 1)

    def epoch_loader(self, epoch: int, start_batch: int):
        """The loader of ``epoch``'s shape (rebuilt when the long cycle moves on), set to start at
        batch ``start_batch``, and the number of batches the epoch runs."""
        stage = self.plan.stage_at(epoch)
        if stage != self._stage:
            self._stage, self._loader = stage, self._build_loader(stage)
        self._loader.dataset.set_epoch(epoch)
        self._loader.batch_sampler.set_epoch(epoch, start_batch)
        return self._loader, self.steps_per_epoch[min(epoch, len(self.steps_per_epoch) - 1)] * self.accumulate

