"""Refuse configuration values that would train or test wrongly, before any work starts.

A value such as ``trainer.max_epochs=0`` or ``test.num_clips=0`` used to run (or crash only
after a whole training run); ``trainer.device=cuda:0`` trained on the CPU. ``check_config``
is called by the trainer and the test tool at start and lists every bad key at once, each
with the values it accepts.
"""

from __future__ import annotations

import re

import torch
from omegaconf import DictConfig, OmegaConf

from videocls.engine.amp import PRECISIONS
from videocls.metrics.classification import AGGREGATIONS, DEPRECATED_AGGREGATIONS

DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda(:\d+)?)")
DEVICES = "cuda, cuda:N (N a GPU index), cpu or auto (cuda when a GPU is visible, else cpu)"


#: What a resumed run must share with its checkpoint unless ``trainer.resume_allow_changes=true``:
#: every key under these sections, and these single keys.
RESUME_SECTIONS = ("optim", "schedule", "loss", "model")
RESUME_KEYS = ("data.batch_size", "trainer.max_epochs", "trainer.accumulate_grad_batches")
_ABSENT = "<absent>"


class ConfigError(ValueError):
    """One or more configuration values are out of range; the message names each key."""


def _int_at_least(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _problems(cfg: DictConfig, training: bool) -> list[str]:
    def get(key: str):
        return OmegaConf.select(cfg, key, default=None)

    problems = []

    def need(key: str, ok, allowed: str) -> None:
        value = get(key)
        if value is not None and not ok(value):
            problems.append(f"{key}={value!r}: {allowed}")

    need("trainer.device", lambda v: isinstance(v, str) and DEVICE_PATTERN.fullmatch(v), f"use {DEVICES}")
    need("trainer.precision", lambda v: str(v) in PRECISIONS, "use 32, bf16 or 16")
    need("data.num_frames", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("test.num_clips", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("test.max_views_per_batch", lambda v: _int_at_least(v, 1), "use an integer >= 1 or null")
    need("test.num_crops", lambda v: v in (1, 3),
         "use 1 (centre crop) or 3 (three crops along the long side)")
    need("test.batch_size", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("test.aggregation", lambda v: v in AGGREGATIONS or v in DEPRECATED_AGGREGATIONS,
         f"use one of {', '.join(AGGREGATIONS)}")
    if not training:
        return problems
    if get("require_pretrained") and not (get("model.pretrained") or get("model.init_2d")):
        problems.append("model.pretrained=None: this experiment fine-tunes: give model.pretrained=PATH "
                        "(a checkpoint create_model reads) or model.init_2d=PATH (2D ImageNet weights)")
    need("trainer.max_epochs", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("trainer.accumulate_grad_batches", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("trainer.checkpoint_every_n_steps", lambda v: _int_at_least(v, 0), "use an integer >= 0 (0: off)")
    need("trainer.log_every_n_steps", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("trainer.eval_period", lambda v: _int_at_least(v, 1), "use an integer >= 1 (epochs)")
    need("trainer.checkpoint_period", lambda v: _int_at_least(v, 1), "use an integer >= 1 (epochs)")
    need("trainer.precise_bn_batches", lambda v: _int_at_least(v, 0), "use an integer >= 0 (0: off)")
    need("trainer.val_num_clips", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    need("trainer.val_num_crops", lambda v: v in (1, 3), "use 1 or 3")
    need("trainer.ema_decay", lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "use a number in [0, 1)")
    need("trainer.grad_clip", lambda v: isinstance(v, (int, float)) and v > 0,
         "use a positive number or null (off)")
    need("data.batch_size", lambda v: _int_at_least(v, 1), "use an integer >= 1")
    return problems


def check_config(cfg: DictConfig, *, training: bool = True) -> None:
    """Raise ConfigError naming every out-of-range key (``training=False``: the test keys only)."""
    problems = _problems(cfg, training)
    if problems:
        raise ConfigError("invalid configuration (fix the overrides or the config file):\n  "
                          + "\n  ".join(problems))


def _flatten(tree, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _resume_relevant(flat: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in flat.items() if k.split(".")[0] in RESUME_SECTIONS or k in RESUME_KEYS}


def changed_hyperparameters(stored_yaml: str | None, current: DictConfig) -> list[tuple[str, object, object]]:
    """``(key, checkpoint value, current value)`` for each resume-relevant key that differs.

    ``stored_yaml`` is a checkpoint's ``config`` (YAML text, untrusted): it is only parsed, its
    interpolations are not resolved and nothing in it is instantiated. No stored config (an
    old or foreign checkpoint): nothing to compare, an empty list.
    """
    if not stored_yaml:
        return []
    stored = OmegaConf.create(str(stored_yaml))
    if not isinstance(stored, DictConfig):
        return []
    old = _resume_relevant(_flatten(OmegaConf.to_container(stored, resolve=False)))
    new = _resume_relevant(_flatten(OmegaConf.to_container(current, resolve=True)))
    # A key added to the configs since the checkpoint was written counts as unchanged when it
    # is null (an option left off); with a value it may change the training, so it is reported.
    return [(key, old.get(key, _ABSENT), new.get(key, _ABSENT))
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def format_changes(changes: list[tuple[str, object, object]], sep: str = "\n  ") -> str:
    return sep.join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)


def refuse_changed_hyperparameters(path, stored_config: str | None, cfg: DictConfig) -> list:
    """The changed resume-relevant keys when ``trainer.resume_allow_changes=true``; without it a
    change raises ConfigError listing each key (old -> new): the checkpoint's optimiser and
    scheduler state would otherwise silently keep the old values (the learning rate, say)
    while ``.hydra/config.yaml`` records the new ones."""
    changes = changed_hyperparameters(stored_config, cfg)
    if changes and not OmegaConf.select(cfg, "trainer.resume_allow_changes", default=False):
        raise ConfigError(
            f"{path}: this run's configuration differs from the checkpoint's it would resume:\n"
            f"  {format_changes(changes)}\n"
            "Resume with the checkpoint's values, start a new run (another hydra.run.dir, or "
            "trainer.resume=never), or pass trainer.resume_allow_changes=true to continue with the new "
            "values (weights, optimiser moments and the step count come from the checkpoint)")
    return changes


def apply_group_hyperparameters(optimizer: torch.optim.Optimizer, scheduler, fresh: list[dict]) -> None:
    """After loading a checkpoint's optimiser and scheduler state, put back the group
    hyper-parameters this run's config set (``fresh``: learning rate, weight decay, momentum,
    ...) and the learning rate its schedule gives at the resumed step."""
    if len(fresh) != len(optimizer.param_groups):
        return
    for group, values in zip(optimizer.param_groups, fresh):
        group.update(values)
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.base_lrs = [values["initial_lr"] for values in fresh]
        lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = lrs
