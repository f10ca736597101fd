"""Named model configurations and the single entry point, ``create_model`` (timm-style).

Each model family registers builders with the default config researchers need to reproduce
the paper: input frames, sampling rate, crop size, normalisation and reference numbers.

Weights come from one of two places: ``pretrained`` (a checkpoint of the same video model, in
any format its family's filter reads) or ``init_2d`` (a 2D ImageNet network the family knows how
to inflate: a timm/torchvision ResNet-50 for the 3D ResNets and SlowFast, a timm ViT for
TimeSformer). A classifier whose class count differs from the checkpoint's is re-initialised
with a warning (fine-tuning), or refused with ``strict_head=True`` (evaluation, prediction).
"""

from __future__ import annotations

import inspect
import logging
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from videocls.models.checkpoints import check_floating, load_state_dict_any
from videocls.models.freezing import freeze as freeze_parts
from videocls.models.layers.types import StateDict

CheckpointFilter = Callable[[StateDict, nn.Module], StateDict]
Init2d = Callable[[nn.Module, StateDict], object]

log = logging.getLogger(__name__)

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
    init_2d: Init2d | None = None


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    config: ModelConfig,
    checkpoint_filter: CheckpointFilter | None = None,
    *,
    init_2d: Init2d | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(num_classes=..., **overrides) -> nn.Module`` under ``name``.

    ``checkpoint_filter`` maps a foreign state dict (PySlowFast, pytorchvideo, DeepMind...) to
    this model's parameter names; it gets the freshly built model to read shapes from.
    ``init_2d(model, state_2d)`` initialises the model from a 2D image network's state dict.
    The builder's return annotation names the model class: ``builder_kwargs`` reads its
    ``__init__`` for the keywords a builder passes on through ``**overrides``.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(builder, config, checkpoint_filter=checkpoint_filter, init_2d=init_2d)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_config(name: str) -> ModelConfig:
    return _entry(name).config


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def builder_kwargs(name: str) -> dict[str, object]:
    """Every keyword ``create_model(name, ...)`` passes to the model, with its default.

    A builder with ``**overrides`` also accepts its model class's ``__init__`` keywords; where
    both name a keyword the builder's default wins (it is the registered architecture). A
    keyword without a default maps to ``inspect.Parameter.empty``. Used to check the model
    keys of a stored (untrusted) config before anything is built from it, and by
    ``tools/model_info.py --kwargs``. ``create_model``'s own keywords (``pretrained``,
    ``init_2d``, ``strict_head``) are not builder keywords.
    """
    builder = _entry(name).builder
    params = inspect.signature(builder).parameters.values()
    kwargs: dict[str, object] = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        model_class = typing.get_type_hints(builder).get("return")
        if not isinstance(model_class, type):
            raise TypeError(f"builder of {name!r} takes **overrides but its return annotation names no class")
        for param in list(inspect.signature(model_class.__init__).parameters.values())[1:]:
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                kwargs[param.name] = param.default
    for param in params:
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            kwargs[param.name] = param.default
    return kwargs


def create_model(
    name: str,
    pretrained: str | Path | None = None,
    num_classes: int | None = None,
    *,
    strict_head: bool = False,
    init_2d: str | Path | None = None,
    freeze: Sequence[str] = (),
    freeze_backbone: bool = False,
    **overrides,
) -> nn.Module:
    """Build a registered model, optionally loading weights from a local file.

    ``pretrained`` is a checkpoint of this model (format detected, foreign names mapped). When
    ``num_classes`` differs from the checkpoint's, ``strict_head=False`` (fine-tuning) leaves
    the classifier (``model.classifier_prefix``) freshly initialised and logs a warning saying
    so; ``strict_head=True`` (evaluation, prediction: a random head would report numbers)
    raises ValueError naming the file and both class counts.

    ``init_2d`` is a 2D ImageNet checkpoint the family inflates (see the module docstring);
    the classifier stays freshly initialised. With ``pretrained`` too, ``init_2d`` is not read:
    the strict load would replace every weight it sets (evaluating or fine-tuning a run whose
    recipe names a 2D initialisation needs neither the 2D file nor the time to inflate it).

    ``freeze`` (module names, e.g. ``["stem", "res2"]``) or ``freeze_backbone`` (all but the
    classifier) freeze parameters and BatchNorm statistics after loading, for fine-tuning
    (:func:`videocls.models.freezing.freeze`).
    """
    entry = _entry(name)
    model = _build(entry, num_classes, overrides)
    if pretrained is not None:
        state = _read_weights(entry, model, pretrained)
        load_weights(model, state, source=str(pretrained), strict_head=strict_head)
        if init_2d is not None:
            log.info("%s: loaded %s; init_2d=%s not read (the load replaces it)", name, pretrained, init_2d)
    elif init_2d is not None:
        _init_from_2d(entry, name, model, path=init_2d)
    if freeze or freeze_backbone:
        frozen = freeze_parts(model, list(freeze), backbone=freeze_backbone)
        log.info("%s: froze %d parameter tensors (%s)", name, len(frozen),
                 "backbone" if freeze_backbone else ", ".join(freeze))
    return model


def _init_from_2d(entry: _Entry, name: str, model: nn.Module, *, path: str | Path) -> None:
    if entry.init_2d is None:
        families = sorted(n for n, e in _REGISTRY.items() if e.init_2d is not None)
        raise ValueError(f"{name} has no 2D initialisation (init_2d={path}); models with one: {families}")
    state = load_state_dict_any(path)
    check_floating(state, source=str(path))
    try:
        entry.init_2d(model, state)
    except (ValueError, KeyError, RuntimeError) as error:
        raise ValueError(f"init_2d {path} does not initialise {name}: {error}") from error
    log.info("%s: initialised from the 2D network %s", name, path)


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


def load_weights(model: nn.Module, state: StateDict, source: str, *, strict_head: bool = False) -> None:
    """Strict load, except a classifier whose shape differs (fine-tuning to new classes): it is
    left re-initialised with a warning, or refused with ``strict_head=True``.

    Tensors the model keeps in floating point must be floating point in the file too: an
    integer tensor would be cast silently (an int64 file of zeros "loads" and "tests fine").
    """
    own = model.state_dict()
    not_float = sorted(
        k for k in set(state) & set(own) if own[k].is_floating_point() and not state[k].is_floating_point()
    )
    if not_float:
        raise ValueError(
            f"{source}: {len(not_float)} tensors are not floating point where the model's are, e.g. "
            f"'{not_float[0]}' has dtype {state[not_float[0]].dtype}; this is not a weights file for "
            f"{type(model).__name__} (or it was written with the wrong dtype)"
        )
    prefix = getattr(model, "classifier_prefix", None)
    reinit = []
    if prefix is not None:
        for key in [k for k in state if k.startswith(prefix + ".")]:
            if key in own and own[key].shape != state[key].shape:
                reinit.append(key)
        if reinit:
            theirs = state[reinit[0]].shape[0]
            ours = own[reinit[0]].shape[0]
            if strict_head:
                raise ValueError(
                    f"{source}: the checkpoint's classifier has {theirs} classes but the model is built "
                    f"for {ours}; evaluation and prediction never run a randomly initialised classifier. "
                    f"Use num_classes={theirs} (data.num_classes or the --classes list must match it)"
                )
            log.warning(
                "%s: new %d-way classifier (checkpoint has %d classes), randomly initialised",
                source, ours, theirs,
            )
            for key in reinit:
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


def check_destination(src: str | Path, dst: str | Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, to write ``dst`` onto ``src`` (whatever ``overwrite`` says) or onto
    an existing file without ``overwrite``: a converted file in place of a training ``last.pt``
    loses its optimiser state, its config and its EMA weights."""
    src, dst = Path(src), Path(dst)
    same = src.resolve() == dst.resolve() or (src.exists() and dst.exists() and os.path.samefile(src, dst))
    if same:
        raise ValueError(f"destination {dst} is the source checkpoint {src}: write the conversion elsewhere")
    if dst.exists() and not overwrite:
        kind = "a directory" if dst.is_dir() else "an existing file (a training checkpoint such as last.pt?)"
        raise ValueError(f"destination {dst} is {kind}; choose a new name, or pass --force to overwrite it")
    if dst.is_dir():
        raise ValueError(f"destination {dst} is a directory; give a file name")


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    name: str,
    num_classes: int | None = None,
    *,
    overwrite: bool = False,
    **overrides,
) -> ConvertedCheckpoint:
    """Rewrite any checkpoint ``create_model(name, pretrained=src)`` reads as a plain videocls state dict.

    ``dst`` ending in ``.safetensors`` gets a safetensors file, anything else a ``torch.save`` of a
    dict of tensors only (``torch.load(dst, weights_only=True)`` reads it). Without ``num_classes``
    the classifier's shape in ``src`` decides. Unlike ``create_model`` nothing is re-initialised: a
    converted file must hold the checkpoint, so any key or shape that does not fit is an error naming ``src``.
    ``dst`` is never ``src``, and an existing ``dst`` is replaced only with ``overwrite`` (checked
    first); the file is written next to ``dst`` and renamed onto it, so a failure leaves ``dst`` as it was.
    """
    check_destination(src, dst, overwrite=overwrite)
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
    tmp = str(dst.with_name(f".{dst.name}.{os.getpid()}.tmp"))  # plain open: the user's umask applies
    try:
        if dst.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, tmp, metadata={"model": name, "source": Path(src).name})
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    num_parameters = sum(p.numel() for p in model.parameters())
    return ConvertedCheckpoint(dst, num_tensors=len(tensors), num_parameters=num_parameters,
                               num_classes=tensors[f"{prefix}.weight"].shape[0])
