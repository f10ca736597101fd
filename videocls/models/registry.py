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
    model = _build(entry, num_classes, overrides)
    if pretrained is not None:
        load_weights(model, _read_weights(entry, model, pretrained), source=str(pretrained))
    return model


def _build(entry: _Entry, num_classes: int | None, overrides: dict) -> nn.Module:
    model = entry.builder(num_classes=num_classes or entry.config.num_classes, **overrides)
    model.default_config = entry.config
    return model


def _read_weights(entry: _Entry, model: nn.Module, path: str | Path) -> StateDict:
    """The file at ``path`` in ``model``'s parameter names (the family's checkpoint filter applied)."""
    state = load_state_dict_any(path)
    if entry.checkpoint_filter is None:
        return state
    try:
        return entry.checkpoint_filter(state, model)
    except (ValueError, KeyError, RuntimeError) as error:  # a filter does not know which file it reads
        raise ValueError(f"checkpoint {path} does not map onto {type(model).__name__}: {error}") from error


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


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """What ``convert_checkpoint`` wrote, for the one-line summary of tools/convert_checkpoint.py."""

    path: Path
    num_tensors: int
    num_parameters: int
    num_classes: int

    def __str__(self) -> str:
        return (
            f"wrote {self.path}: {self.num_tensors} tensors, {self.num_parameters:,} parameters, "
            f"num_classes={self.num_classes}"
        )


def convert_checkpoint(
    src: str | Path, dst: str | Path, name: str, num_classes: int | None = None, **overrides
) -> ConvertedCheckpoint:
    """Rewrite any checkpoint ``create_model(name, pretrained=src)`` reads as a plain videocls state dict.

    ``dst`` ending in ``.safetensors`` gets a safetensors file, anything else a ``torch.save`` of a
    dict of tensors only (``torch.load(dst, weights_only=True)`` reads it). Without ``num_classes``
    the classifier's shape in ``src`` decides. Unlike ``create_model`` nothing is re-initialised: a
    converted file must hold the checkpoint, so any key or shape that does not fit is an error naming ``src``.
    """
    entry = _entry(name)
    model = _build(entry, num_classes, overrides)
    state = _read_weights(entry, model, src)
    prefix = model.classifier_prefix
    classifier = state.get(f"{prefix}.weight")
    if num_classes is None and classifier is not None and classifier.shape[0] != entry.config.num_classes:
        # Filters read the backbone's geometry only, never the classifier: ``state`` fits the rebuilt model.
        model = _build(entry, classifier.shape[0], overrides)
    own = model.state_dict()
    wrong_classifier = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in sorted(own)
        if key.startswith(prefix + ".") and key in state and state[key].shape != own[key].shape
    ]
    load_weights(model, state, source=str(src))  # first: it reports every other key that does not fit
    if wrong_classifier:
        raise RuntimeError(f"checkpoint {src} does not fit {name}'s classifier: {wrong_classifier}")

    tensors = {key: value.contiguous() for key, value in model.state_dict().items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(dst), metadata={"model": name, "source": Path(src).name})
    else:
        torch.save(tensors, dst)
    num_parameters = sum(p.numel() for p in model.parameters())
    return ConvertedCheckpoint(dst, len(tensors), num_parameters, tensors[f"{prefix}.weight"].shape[0])
