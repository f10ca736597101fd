"""The effective recipe of a composed training config, worked out without training.

``describe_recipe`` builds the optimiser and LR schedule exactly as the trainer does
(``instantiate(cfg.optim)(model, global_batch_size=...)`` and
``instantiate(cfg.schedule)(optimizer, steps_per_epoch, max_epochs)``) for a chosen number of
GPUs, on a model built on the meta device (no memory, no weights read: ``pretrained`` and
``init_2d`` are reported, not loaded), and reads off what a paper's recipe is checked against:
batch sizes, the learning rate per sample and at a few epochs, warm-up, test views,
initialisation, precision and the weight-decay split. ``tools/show_recipe.py`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videocls.models import create_model, get_model_config
from videocls.models.complexity import count_gflops, count_parameters, example_input

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: Steps per epoch used to evaluate the schedule when the dataset size is not given: the LR at an
#: epoch does not depend on it (schedules are functions of the fractional epoch).
NOMINAL_STEPS_PER_EPOCH = 1000

# cfg.model keys that are not architecture arguments: weights are reported, never read here.
_NOT_BUILDER_KEYS = (
    "_target_", "_convert_", "_partial_", "name", "num_classes", "pretrained", "init_2d", "strict_head",
)


def compose_recipe(overrides: list[str]) -> DictConfig:
    """The config ``tools/train.py`` would compose from these overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@dataclass
class Recipe:
    experiment: str
    gpus: int
    per_gpu_batch: int
    accumulate: int
    global_batch: int
    peak_lr: float
    steps_per_epoch: int | None  # None: the dataset size was not given
    max_epochs: float
    warmup_epochs: float
    lr_at: dict[str, tuple[float, float]]  # label -> (epoch, lr)
    schedule: str
    optimizer: str
    weight_decay: float
    decayed_tensors: int
    undecayed_tensors: int
    test_views: tuple[int, int]  # clips x crops
    val_views: tuple[int, int]
    init: str
    precision: str
    model: str
    params_m: float
    gflops: float | None
    gflops_source: str
    clip: str
    train_aug: str
    test_input: str
    test_head: str
    # data.clips_per_video (repeated augmentation): the batch sizes above count videos, as the
    # LR scaling does (VideoMAE's num_sample); each video gives this many clips to the step.
    clips_per_video: int = 1

    @property
    def lr_per_sample(self) -> float:
        """Per video of the global batch (per clip when ``clips_per_video`` is 1)."""
        return self.peak_lr / self.global_batch

    @property
    def clips_per_step(self) -> int:
        return self.global_batch * self.clips_per_video


def _build_model(cfg: DictConfig, device: str) -> torch.nn.Module:
    """The configured architecture without any weights loaded (meta: shapes only)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    builder = {k: v for k, v in model_cfg.items() if k not in _NOT_BUILDER_KEYS}
    with torch.device(device):
        return create_model(cfg.model.name, num_classes=int(cfg.data.num_classes), **builder)


def _init_source(cfg: DictConfig) -> str:
    pretrained, init_2d = cfg.model.get("pretrained"), cfg.model.get("init_2d")
    if pretrained:
        return f"video checkpoint {pretrained} (model.pretrained)"
    if init_2d:
        return f"2D ImageNet weights {init_2d} (model.init_2d), inflated"
    return "random (from scratch): neither model.pretrained nor model.init_2d is set"


def _test_head(cfg: DictConfig) -> str:
    aggregation = f"views combined by {cfg.test.aggregation}"
    pool = cfg.model.get("head_pool")
    if pool is None:
        return aggregation
    if pool == "global":
        return f"global mean over the feature map; {aggregation}"
    window = f"{cfg.model.get('head_pool_frames')} frames x {cfg.model.get('head_pool_crop')} px"
    return f"{pool} (windows of the {window} training input); {aggregation}"


def _lr_points(warmup: float, epochs: float) -> dict[str, float]:
    points = {"start": 0.0}
    if warmup > 0:
        points["warm-up end"] = warmup
    points.update({"25%": 0.25 * epochs, "50%": 0.5 * epochs, "75%": 0.75 * epochs, "end": epochs})
    return points


def describe_recipe(
    cfg: DictConfig, *, gpus: int = 8, train_videos: int | None = None, measure_flops: bool = False
) -> Recipe:
    """Everything ``tools/show_recipe.py`` prints, for ``gpus`` processes of ``data.batch_size``.

    ``train_videos`` (the training set size) gives the real steps per epoch, as the trainer's
    loader counts them (each rank's padded share in whole batches, then whole accumulation
    groups); without it the schedule is evaluated at exact epochs. ``measure_flops`` counts
    GFLOPs with fvcore on a CPU copy at the test input (slow for big models); otherwise the
    registry's reference value is reported with the input it refers to.
    """
    if gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {gpus}")
    t, data = cfg.trainer, cfg.data
    per_gpu, accumulate = int(data.batch_size), int(t.accumulate_grad_batches)
    global_batch = per_gpu * gpus * accumulate
    if train_videos is not None:
        per_rank = -(-train_videos // gpus)
        steps_per_epoch = (per_rank // per_gpu) // accumulate
        if steps_per_epoch == 0:
            raise ValueError(
                f"--train-videos {train_videos} makes no optimiser step at global batch {global_batch}"
            )
    else:
        steps_per_epoch = None
    spe = steps_per_epoch or NOMINAL_STEPS_PER_EPOCH

    model = _build_model(cfg, "meta")
    optimizer = instantiate(cfg.optim)(model, global_batch_size=global_batch)
    scheduler = instantiate(cfg.schedule)(optimizer, spe, t.max_epochs)
    # The recipe's LR is the base one, before a group's factor (layer decay, head_lr_mult): under
    # layer decay the first group is the embedding's, at a small fraction of it.
    first = optimizer.param_groups[0]
    peak = first["initial_lr"] / first.get("lr_scale", 1.0)
    factor = scheduler.lr_lambdas[0]
    epochs, warmup = float(t.max_epochs), float(cfg.schedule.get("warmup_epochs", 0.0))
    lr_at = {}
    for label, epoch in _lr_points(warmup, epochs).items():
        step = int(round(epoch * spe))
        lr_at[label] = (step / spe, peak * factor(step))
    decayed = sum(len(g["params"]) for g in optimizer.param_groups if g["weight_decay"] > 0)
    undecayed = sum(len(g["params"]) for g in optimizer.param_groups if g["weight_decay"] == 0)

    config = get_model_config(cfg.model.name)
    test_t = int(data.num_frames)
    if measure_flops:
        cpu_model = _build_model(cfg, "cpu")
        view = (test_t, int(data.test_crop), int(data.test_crop))
        gflops = count_gflops(cpu_model, example_input(config, view))
        gflops_source = f"measured (fvcore) at {test_t}x{data.test_crop}x{data.test_crop}"
    else:
        gflops = config.reference_gflops
        where = "x".join(str(v) for v in config.flops_input) if config.flops_input else "its default input"
        gflops_source = f"registry reference at {where}; --flops measures the recipe's test input"

    lo, hi = data.train_short_side
    jitter = "inverse-uniform" if data.get("train_scale_inverse_uniform", False) else "uniform"
    if data.get("train_crop_scale"):
        crop = f"RandomResizedCrop {data.train_crop} scale {list(data.train_crop_scale)}"
    else:
        crop = f"short side {jitter} in [{lo}, {hi}], random {data.train_crop} crop"
    mode = data.get("sampling_mode", "clip")
    clip = (f"{data.num_frames} frames, one every {data.sampling_rate} at {data.target_fps or 'native'} fps"
            if mode == "clip" else f"{data.num_frames} frames, one per segment ({mode})")
    return Recipe(
        experiment=str(cfg.experiment_name), gpus=gpus, per_gpu_batch=per_gpu, accumulate=accumulate,
        global_batch=global_batch, peak_lr=peak, steps_per_epoch=steps_per_epoch, max_epochs=epochs,
        warmup_epochs=warmup, lr_at=lr_at, schedule=str(cfg.schedule.name), optimizer=str(cfg.optim.name),
        weight_decay=float(cfg.optim.weight_decay), decayed_tensors=decayed, undecayed_tensors=undecayed,
        test_views=(int(cfg.test.num_clips), int(cfg.test.num_crops)),
        val_views=(int(t.val_num_clips), int(t.val_num_crops)), init=_init_source(cfg),
        precision=str(t.precision), model=str(cfg.model.name), params_m=count_parameters(model) / 1e6,
        gflops=gflops, gflops_source=gflops_source, clip=clip,
        train_aug=f"{crop}, flip {'on' if data.flip else 'off'}",
        test_input=f"short side {data.test_short_side}, {data.test_crop} crops",
        test_head=_test_head(cfg), clips_per_video=int(data.get("clips_per_video", 1)),
    )


def format_recipe(r: Recipe) -> str:
    """The human-readable table ``tools/show_recipe.py`` prints."""
    spe = f"{r.steps_per_epoch}" if r.steps_per_epoch else "set by the dataset (--train-videos N to count)"
    views = r.test_views[0] * r.test_views[1]
    gflops = f"{r.gflops:.1f} per view, {r.gflops * views:.0f} per test video" if r.gflops else "unknown"
    no_decay = f"{r.undecayed_tensors} tensors without weight decay" if r.undecayed_tensors else "none exempt"
    unit = "clip" if r.clips_per_video == 1 else "video"
    per_step = (f" = {r.global_batch} clips per step" if r.clips_per_video == 1 else
                f" = {r.global_batch} videos per step, {r.clips_per_video} clips each"
                f" (repeated augmentation) = {r.clips_per_step} clips")
    lines = [
        f"recipe            {r.experiment}",
        f"model             {r.model}: {r.params_m:.2f} M parameters",
        f"GFLOPs            {gflops} [{r.gflops_source}]",
        f"initialisation    {r.init}",
        f"batch             {r.per_gpu_batch} per GPU x {r.gpus} GPUs x {r.accumulate} accumulated{per_step}",
        f"optimiser         {r.optimizer}, peak LR {r.peak_lr:.6g}"
        f" ({r.lr_per_sample:.4g} per {unit} of the global batch)",
        f"weight decay      {r.weight_decay:g} on {r.decayed_tensors} tensors; {no_decay}",
        f"schedule          {r.schedule}, {r.max_epochs:g} epochs, {r.warmup_epochs:g} warm-up epochs;"
        f" steps per epoch {spe}",
    ]
    for label, (epoch, lr) in r.lr_at.items():
        lines.append(f"  LR at {label:<12}epoch {epoch:>8.3f}: {lr:.6g}")
    lines += [
        f"precision         {r.precision}",
        f"clips             {r.clip}",
        f"train augment     {r.train_aug}",
        f"test views        {r.test_views[0]} clips x {r.test_views[1]} crops = {views} per video"
        f" ({r.test_input}); validation during training {r.val_views[0]} x {r.val_views[1]}",
        f"test head         {r.test_head}",
    ]
    return "\n".join(lines)


def show_recipe(overrides: list[str], *, gpus: int = 8, train_videos: int | None = None,
                measure_flops: bool = False) -> str:
    """Compose the config from ``overrides`` and return its recipe as text."""
    cfg = compose_recipe(overrides)
    recipe = describe_recipe(cfg, gpus=gpus, train_videos=train_videos, measure_flops=measure_flops)
    return format_recipe(recipe)
