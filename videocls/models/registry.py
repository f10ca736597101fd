"""Named model configurations and the single entry point, ``create_model`` (timm-style).

Each model family registers builders with the default config researchers need to reproduce
the paper: input frames, sampling rate, crop size, normalisation and reference numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from videocls.models.checkpoints import load_state_dict_any

StateDict = dict[str, torch.Tensor]
CheckpointFilter = Callable[[StateDict, nn.Module], StateDict]

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """What a registered model expects and what it is known to achieve."""

    num_frames: int
    sampling_rate: int
    crop_size: int
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    num_classes: int = 400
    input_layout: str = "B C T H W"  # SlowFast: "[slow, fast] of B C T H W"
    paper: str = ""
    reference_params_m: float | None = None  # millions, 400 classes
    reference_gflops: float | None = None  # fvcore convention: one multiply-add = one FLOP
    flops_input: tuple[int, int, int] | None = None  # T, H, W the GFLOPs refer to
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    config: ModelConfig
    checkpoint_filter: CheckpointFilter | None


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str, config: ModelConfig, checkpoint_filter: CheckpointFilter | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(num_classes=..., **overrides) -> nn.Module`` under ``name``.

    ``checkpoint_filter`` maps a foreign state dict (PySlowFast, pytorchvideo, DeepMind...) to
    this model's parameter names; it gets the freshly built model to read shapes from.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(builder, config, checkpoint_filter)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_config(name: str) -> ModelConfig:
    return _entry(name).config


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(
    name: str,
    pretrained: str | Path | None = None,
    num_classes: int | None = None,
    **overrides,
) -> nn.Module:
    """Build a registered model, optionally loading weights from a local file.

    ``pretrained`` is a path; its format is detected. When ``num_classes`` differs from the
    checkpoint's, only the classifier (``model.classifier_prefix``) is left re-initialised.
    """
    entry = _entry(name)
    model = entry.builder(num_classes=num_classes or entry.config.num_classes, **overrides)
    model.default_config = entry.config
    if pretrained is not None:
        state = load_state_dict_any(pretrained)
        if entry.checkpoint_filter is not None:
            state = entry.checkpoint_filter(state, model)
        load_weights(model, state, source=str(pretrained))
    return model


def load_weights(model: nn.Module, state: StateDict, source: str) -> None:
    """Strict load, except a classifier whose shape differs (fine-tuning to new classes)."""
    own = model.state_dict()
    prefix = getattr(model, "classifier_prefix", None)
    reinit = []
    if prefix is not None:
        for key in [k for k in state if k.startswith(prefix + ".")]:
            if key in own and own[key].shape != state[key].shape:
                reinit.append(key)
                del state[key]
    missing = sorted(set(own) - set(state) - set(reinit))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(state) & set(own)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise RuntimeError(
            f"checkpoint {source} does not fit {type(model).__name__}:\n"
            f"  missing keys ({len(missing)}): {missing[:20]}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}\n"
            f"  shape mismatches ({len(wrong_shape)}): {wrong_shape[:20]}"
        )
    model.load_state_dict(state, strict=not reinit)
