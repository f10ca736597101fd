"""Optimisers with linear LR scaling, per-recipe weight-decay groups and per-iteration schedules.

The schedules are PySlowFast's ``lr_policy.py`` evaluated at fractional epochs, as its training
loop does (``cur_epoch + cur_iter / iters_per_epoch`` before every iteration), so a recipe that
follows PySlowFast or TimeSformer gets the official learning rate at every optimiser step:

- ``cosine``: ``end + (peak - end) * (1 + cos(pi * e / E)) / 2`` over all ``E = max_epochs``
  epochs (PySlowFast's default, ``COSINE_AFTER_WARMUP=False``), or over ``E - W`` epochs
  starting at the end of warm-up (``cosine_after_warmup=true``: the timm-like restart).
- ``steps``: ``peak * relative_lrs[i]`` (PySlowFast's ``steps_with_relative_lrs``) or
  ``peak * gamma ** i`` after the ``i``-th milestone.
- warm-up (both): linear from ``warmup_start_factor * peak`` at epoch 0 to the main schedule's
  own value at epoch ``W = warmup_epochs`` (not to the peak: with the PySlowFast cosine it ends
  at ``cosine(W)``).

Differences from PySlowFast in how values are given, not in the numbers: the warm-up start and
cosine end are fractions of the peak LR (``WARMUP_START_LR = 0.01`` at ``BASE_LR = 0.1`` is
``warmup_start_factor = 0.1``), so they follow the peak when linear scaling changes it.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_EMBED_NAMES = ("pos_embed", "time_embed", "cls_token")

#: What ``optim.no_decay`` may list. Everything not listed is decayed with ``weight_decay``.
NO_DECAY_KINDS = {
    "bn": "BatchNorm weights and biases (PySlowFast: BN.WEIGHT_DECAY = 0)",
    "norm": "weights and biases of every BatchNorm, LayerNorm and GroupNorm",
    "bias": "every bias",
    "embed": "pos_embed, time_embed and cls_token (by name, as timm and TimeSformer's no_weight_decay)",
    "1d": "every parameter with one dimension (PySlowFast: SOLVER.ZERO_WD_1D_PARAM)",
}


def _check_no_decay(no_decay: Iterable[str]) -> set[str]:
    kinds = set(no_decay)
    unknown = kinds - set(NO_DECAY_KINDS)
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in NO_DECAY_KINDS.items())
        raise ValueError(f"optim.no_decay: unknown entries {sorted(unknown)}; known are {known}")
    return kinds


def _skips_decay(module: nn.Module, name: str, full_name: str, param: torch.Tensor, kinds: set[str]) -> bool:
    return (
        ("bn" in kinds and isinstance(module, nn.modules.batchnorm._BatchNorm))
        or ("norm" in kinds and isinstance(module, _NORM_TYPES))
        or ("bias" in kinds and name == "bias")
        or ("embed" in kinds and any(key in full_name for key in _EMBED_NAMES))
        or ("1d" in kinds and param.ndim == 1)
    )


def param_groups(
    model: nn.Module, weight_decay: float, no_decay: Iterable[str] = ("norm", "bias", "embed")
) -> list[dict]:
    """Split trainable parameters into a decayed group and (when not empty) one without decay.

    ``no_decay`` lists the kinds of parameters that get no weight decay (``NO_DECAY_KINDS``):
    ``[bn]`` is PySlowFast's split (BatchNorm parameters undecayed, every other parameter,
    the classifier bias included, decayed); ``[]`` is the official TimeSformer's (every
    parameter decayed: its optimizer only exempts names containing "bn", and the model's
    ``no_weight_decay`` set is never read); ``[norm, bias, embed]`` is timm's usual split.
    """
    kinds = _check_no_decay(no_decay)
    decay, skip = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            (skip if _skips_decay(module, name, full, param, kinds) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if skip:
        groups.append({"params": skip, "weight_decay": 0.0})
    return groups


_EMBED_PREFIXES = ("patch_embed", "cls_token", "pos_embed", "time_embed")


def layer_id(name: str, num_layers: int) -> int:
    """BEiT/VideoMAE layer index of a transformer parameter: embeddings 0, ``blocks.i`` i + 1,
    everything after the blocks (final norm, head) ``num_layers + 1``."""
    if name.startswith(_EMBED_PREFIXES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def lr_scales(model: nn.Module, *, head_lr_mult: float = 1.0,
              layer_decay: float | None = None) -> dict[str, float]:
    """Per trainable parameter name, the factor on the scheduled LR (fine-tuning):

    - ``layer_decay`` (transformers with ``blocks``; BEiT, VideoMAE): ``layer_decay ** (L + 1 - id)``
      with ``id`` from :func:`layer_id` and ``L`` blocks, so the head trains at the full LR and
      each block below it at ``layer_decay`` times the one above;
    - ``head_lr_mult``: the classifier (``model.classifier_prefix``) on top of that.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    scales = dict.fromkeys(names, 1.0)
    if layer_decay is not None:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or not 0 < layer_decay <= 1:
            raise ValueError(f"optim.layer_decay={layer_decay}: needs a value in (0, 1] and a transformer "
                             f"with blocks ({type(model).__name__} has none); use null for CNNs")
        for name in names:
            scales[name] = layer_decay ** (len(blocks) + 1 - layer_id(name, len(blocks)))
    head = getattr(model, "classifier_prefix", None)
    if head_lr_mult != 1.0:
        if head is None:
            raise ValueError(f"optim.head_lr_mult: {type(model).__name__} names no classifier")
        for name in names:
            if name.startswith(head + "."):
                scales[name] *= head_lr_mult
    return scales


def scaled_lr(base_lr: float, global_batch_size: int, base_batch_size: int | None) -> float:
    """Linear scaling rule (Goyal et al.; PySlowFast): ``lr = base_lr * global_batch / base_batch``."""
    return base_lr if not base_batch_size else base_lr * global_batch_size / base_batch_size


def build_optimizer(
    model: nn.Module,
    global_batch_size: int,
    *,
    name: str = "sgd",
    base_lr: float = 0.1,
    base_batch_size: int | None = None,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas: Sequence[float] = (0.9, 0.999),
    no_decay: Sequence[str] = ("norm", "bias", "embed"),
    head_lr_mult: float = 1.0,
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """SGD (PySlowFast: momentum, nesterov, dampening 0) or AdamW at the linearly scaled LR.

    ``global_batch_size`` is what one optimiser step sees: per-device batch x devices x
    gradient accumulation. ``head_lr_mult`` and ``layer_decay`` (fine-tuning, :func:`lr_scales`)
    split the groups further, each with its own ``lr`` (the schedule multiplies every group's).
    Frozen parameters (``requires_grad=False``) are left out.
    """
    lr = scaled_lr(base_lr, global_batch_size, base_batch_size)
    groups = param_groups(model, weight_decay, no_decay)
    if head_lr_mult != 1.0 or layer_decay is not None:
        groups = _split_by_scale(model, groups, lr_scales(model, head_lr_mult=head_lr_mult,
                                                           layer_decay=layer_decay), lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"optim.name: unknown optimizer {name!r}; use sgd or adamw")


def _split_by_scale(model: nn.Module, groups: list[dict], scales: dict[str, float], lr: float) -> list[dict]:
    """Each weight-decay group split by LR factor: ``{"params", "weight_decay", "lr", "lr_scale"}``."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    out = []
    for group in groups:
        by_scale: dict[float, list] = {}
        for param in group["params"]:
            by_scale.setdefault(scales[name_of[id(param)]], []).append(param)
        out += [{"params": params, "weight_decay": group["weight_decay"], "lr": lr * scale, "lr_scale": scale}
                for scale, params in sorted(by_scale.items())]
    return out


def lr_factor_at_epoch(
    epoch: float,
    max_epochs: float,
    *,
    name: str = "cosine",
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    min_factor: float = 0.0,
    cosine_after_warmup: bool = False,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    relative_lrs: Sequence[float] | None = None,
    epoch_lr_scale: Sequence[float] | None = None,
) -> float:
    """Multiplier of the peak LR at fractional ``epoch`` (PySlowFast's ``get_lr_at_epoch``).

    ``epoch_lr_scale`` (multigrid's long cycle, one factor per epoch) multiplies the main
    schedule in each epoch, so the warm-up ends at the scaled value, as PySlowFast's ``LRS``."""

    def main(e: float) -> float:
        if epoch_lr_scale:
            index = min(max(math.floor(e), 0), len(epoch_lr_scale) - 1)
            return epoch_lr_scale[index] * shape(e)
        return shape(e)

    def shape(e: float) -> float:
        if name == "cosine":
            offset = warmup_epochs if cosine_after_warmup else 0.0
            span = max_epochs - offset
            # A run that is all warm-up (restart shape, warmup_epochs == max_epochs) warms up to the peak.
            progress = min((e - offset) / span, 1.0) if span > 0 else float(e > offset)
            return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if name == "steps":
            index = sum(e >= m for m in milestones)
            return relative_lrs[index] if relative_lrs is not None else gamma**index
        if name == "constant":
            return 1.0
        raise ValueError(f"schedule.name: unknown schedule {name!r}; use cosine, steps or constant")

    if epoch < warmup_epochs:
        end = main(warmup_epochs)
        return warmup_start_factor + (end - warmup_start_factor) * epoch / warmup_epochs
    return main(epoch)


def _check_schedule(
    max_epochs, warmup_epochs, min_factor, cosine_after_warmup, milestones, relative_lrs
) -> None:
    if not 0 <= warmup_epochs <= max_epochs:
        raise ValueError(
            f"schedule.warmup_epochs={warmup_epochs} must be in [0, trainer.max_epochs={max_epochs}]"
        )
    if not 0 <= min_factor < 1:  # PySlowFast asserts COSINE_END_LR < BASE_LR
        raise ValueError(
            f"schedule.min_factor={min_factor} must be in [0, 1): the cosine ends below its peak"
        )
    if list(milestones) != sorted(milestones):
        raise ValueError(f"schedule.milestones={list(milestones)} must be increasing epochs")
    if relative_lrs is not None and len(relative_lrs) != len(milestones) + 1:
        raise ValueError(
            f"schedule.relative_lrs has {len(relative_lrs)} values for {len(milestones)} milestones; "
            f"it needs one before the first milestone and one after each ({len(milestones) + 1})"
        )


def _epoch_of_step(steps_per_epoch: int | Sequence[int]) -> Callable[[int], float]:
    """Optimiser step -> fractional epoch, for a fixed count per epoch or one count per epoch
    (multigrid: each long-cycle shape has its own batch size); past the last listed epoch the
    last count continues."""
    if isinstance(steps_per_epoch, int):
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        return lambda step: step / steps_per_epoch
    counts = [int(c) for c in steps_per_epoch]
    if not counts or min(counts) <= 0:
        raise ValueError(f"steps per epoch must be positive, got {counts}")
    starts = [0, *itertools.accumulate(counts)]

    def epoch_of(step: int) -> float:
        epoch = min(bisect.bisect_right(starts, step) - 1, len(counts) - 1)
        return epoch + (step - starts[epoch]) / counts[epoch]

    return epoch_of


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int | Sequence[int],
    max_epochs: int,
    *,
    name: str = "cosine",
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    min_factor: float = 0.0,
    cosine_after_warmup: bool = False,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    relative_lrs: Sequence[float] | None = None,
    epoch_lr_scale: Sequence[float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: optimiser step ``s`` runs at ``lr_factor_at_epoch(s / steps_per_epoch)``.

    This is PySlowFast's ``get_epoch_lr(cur_epoch + cur_iter / len(loader))`` with one
    optimiser step per iteration. Milestones and warm-up are in epochs and may be fractional.
    ``steps_per_epoch`` may list one count per epoch and ``epoch_lr_scale`` one LR factor per
    epoch (multigrid, ``videocls.engine.multigrid``).
    """
    milestones = [float(m) for m in milestones]
    relative_lrs = None if relative_lrs is None else [float(v) for v in relative_lrs]
    _check_schedule(max_epochs, warmup_epochs, min_factor, cosine_after_warmup, milestones, relative_lrs)
    epoch_of = _epoch_of_step(steps_per_epoch)
    epoch_lr_scale = None if epoch_lr_scale is None else [float(v) for v in epoch_lr_scale]

    def factor(step: int) -> float:
        return lr_factor_at_epoch(
            epoch_of(step),
            max_epochs,
            name=name,
            warmup_epochs=warmup_epochs,
            warmup_start_factor=warmup_start_factor,
            min_factor=min_factor,
            cosine_after_warmup=cosine_after_warmup,
            milestones=milestones,
            gamma=gamma,
            relative_lrs=relative_lrs,
            epoch_lr_scale=epoch_lr_scale,
        )

    factor(0)  # an unknown schedule name fails here, before the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
