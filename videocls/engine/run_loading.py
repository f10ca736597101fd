"""Rebuild a training run from its checkpoint without executing anything the file names.

A videocls training checkpoint (``<run>/checkpoints/last.pt`` or ``best.pt``) holds its
weights and the resolved config its run trained with, as YAML text. Every tool that takes a
checkpoint rebuilds it here: ``tools/test.py``, ``tools/calibrate.py``,
``tools/tune_thresholds.py`` and ``tools/extract_features.py`` through
:func:`load_run_or_weights` (a run with ``KEY=VALUE`` overrides on its stored config, else
foreign weights described by the overrides of ``configs/train.yaml``), ``tools/predict.py``
through :func:`load_run`. The stored config is treated as untrusted data:

* the YAML is parsed by a safe loader (no tags, no aliases) into plain values; interpolations
  (``${...}``, which would call resolvers) and Hydra's call keys are refused: a ``_target_``
  is accepted only where videocls's trainer writes one, with the name it writes there (it is
  never looked up or called), and ``_args_``/``_recursive_`` and any other ``_key_`` are
  refused with the file and the dotted key;
* the model is built by ``create_model(model.name, ...)``: the name must be a registered
  model and every other key a keyword of its builder (``builder_kwargs``), with plain values;
* the data settings become :class:`~videocls.data.datamodule.VideoData` fields (keys checked
  against the dataclass);
* tensors are read by ``torch.load(weights_only=True)``.

Sections that reloading never reads (``optim``, ``schedule``, ``loss``, ``logger``) are
checked the same way and otherwise unused. What runs is videocls's own code only.

The weights are the ones the run evaluated: its EMA weights when it trained with
``trainer.ema=true`` (validation, ``best.pt`` and ``results.json`` used them), else the
model's; :attr:`LoadedRun.weights` says which.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn

from videocls.data.datamodule import VideoData
from videocls.engine.checkpoint import load_checkpoint
from videocls.models import create_model, list_models
from videocls.models.registry import builder_kwargs

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: Where the trainer's config carries a ``_target_`` and the names it may hold there (a name
#: ending in "." stands for the functions of that module). Nothing looks these names up: they
#: are checked only so that a file edited to name other code is refused, not loaded.
KNOWN_TARGETS: dict[str, tuple[str, ...]] = {
    "model": ("videocls.create_model", "videocls.models.create_model",
              "videocls.models.registry.create_model"),
    "data": ("videocls.data.datamodule.VideoData",),
    "optim": ("videocls.engine.optim.",),
    "schedule": ("videocls.engine.optim.",),
    "loss": ("videocls.engine.losses.",),
}
#: Hydra keys beside a known ``_target_`` that say how it would be called; plain flags.
CALL_FLAGS = {"_partial_": (True, False), "_convert_": ("none", "partial", "object", "all")}
#: Group overrides a reload ignores: the stored config already holds what they selected.
IGNORED_GROUPS = ("experiment", "logger")
#: ``create_model`` arguments in a model config that are not builder keywords. ``pretrained``
#: and ``init_2d`` said where training started from; a reload takes the checkpoint's weights;
#: ``freeze``/``freeze_backbone`` only mattered to training.
CREATE_MODEL_KEYS = ("name", "num_classes", "pretrained", "init_2d", "freeze", "freeze_backbone")

_RESERVED = re.compile(r"^_.*_$")
_MAX_CONFIG_CHARS = 1 << 20
_MAX_NODES = 100_000


class NotARunCheckpoint(ValueError):
    """The file is not a videocls training checkpoint (no stored config): describe the model
    by other means (``--model``, or the Hydra config groups)."""


@dataclass
class LoadedRun:
    """A run rebuilt from its checkpoint: ``config`` (plain values, Hydra's call keys such as
    ``_target_`` removed), ``model`` (in eval mode,
    with the weights the run evaluated), ``data`` (its data settings), ``checkpoint`` and
    ``weights`` ("ema" or "model"; "file" for a checkpoint read by ``create_model``)."""

    config: DictConfig
    model: nn.Module
    data: VideoData
    checkpoint: Path
    weights: str


def run_checkpoint(target: str | Path) -> Path:
    """``target`` itself, or the ``checkpoints/last.pt`` of a run directory."""
    target = Path(target)
    checkpoint = target / "checkpoints" / "last.pt" if target.is_dir() else target
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    return checkpoint


def load_run(target: str | Path, overrides: Iterable[str] = (), *,
             device: str | torch.device = "cpu") -> LoadedRun:
    """The run of ``target`` (a training checkpoint, or a run directory: its ``last.pt``) with
    ``overrides`` (``KEY=VALUE`` on keys of the stored config, Hydra's value syntax) on top.

    Raises :class:`NotARunCheckpoint` for a file without a stored config, ValueError naming
    the file and the key for anything the stored config may not hold, and ValueError naming
    both counts when the data's class count differs from the model's outputs.
    """
    checkpoint = run_checkpoint(target)
    if checkpoint.suffix != ".pt":
        raise NotARunCheckpoint(f"{checkpoint}: not a videocls training checkpoint "
                                "(a .pt file with a stored config)")
    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise NotARunCheckpoint(f"{checkpoint}: not a videocls training checkpoint (it stores no run config)")
    tree = parse_stored_config(state["config"], source=checkpoint)
    tree = apply_overrides(tree, overrides, source=checkpoint)
    for section in ("model", "data"):
        if not isinstance(tree.get(section), dict):
            raise ValueError(f"{checkpoint}: the stored config has no '{section}' section")
    model = model_from_config(tree["model"], source=checkpoint)
    data = data_from_config(tree["data"], source=checkpoint)
    weights, kind = evaluated_weights(state, source=checkpoint)
    outputs = _classifier_rows(weights, model)
    if outputs is not None and outputs != num_outputs(model):
        raise ValueError(f"{checkpoint}: its classifier has {outputs} classes but model.num_classes="
                         f"{num_outputs(model)}; set model.num_classes={outputs} (or leave it as stored)")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint}: its {kind} weights do not fit the model its config describes: "
                         f"{error}") from None
    check_class_counts(data.num_classes, num_outputs(model), source=checkpoint)
    return LoadedRun(_plain_config(tree), model.eval().to(device), data, checkpoint, kind)


def load_pretrained(cfg: DictConfig, checkpoint: str | Path, *, strict_head: bool = True,
                    device: str | torch.device = "cpu") -> LoadedRun:
    """A checkpoint that is not a training run (PySlowFast ``.pyth``, DeepMind I3D, a converted
    file...) under a config composed from ``configs/``: the model ``cfg.model`` describes with
    the file's weights, and the data settings of ``cfg.data``. Built by the same checked path
    as :func:`load_run`.

    ``strict_head=True`` (evaluation): the file's classifier must have ``data.num_classes``
    outputs. ``False`` (features, which never use the classifier): the model gets a new
    classifier for ``data.num_classes`` whatever the file's was (fine-tuning's rule).
    """
    checkpoint = Path(checkpoint)
    source = f"the config for {checkpoint}"
    tree = OmegaConf.to_container(cfg, resolve=True)
    check_tree(tree, source=source)
    data = data_from_config(tree["data"], source=source)
    model = model_from_config(tree["model"], source=source, pretrained=checkpoint, strict_head=strict_head,
                              num_classes=None if strict_head else data.num_classes)
    check_class_counts(data.num_classes, num_outputs(model), source=checkpoint)
    return LoadedRun(_plain_config(tree), model.eval().to(device), data, checkpoint, "file")


def load_run_or_weights(target: str | Path, overrides: Iterable[str] = (), *,
                        config: DictConfig | None = None, strict_head: bool = True,
                        device: str | torch.device = "cpu") -> LoadedRun:
    """The one way a tool rebuilds what it was pointed at: :func:`load_run` for a videocls
    training checkpoint or run directory (``overrides`` are ``KEY=VALUE`` on its stored config),
    else :func:`load_pretrained` for foreign weights, described by ``config`` or, without one, by
    ``configs/train.yaml`` composed with the same ``overrides`` (``model=i3d_inception_v1
    data.root=...``). ``strict_head`` is :func:`load_pretrained`'s; a run's own classifier always
    fits it.

    ``config`` is for a Hydra app (``tools/test.py``), which has composed it already and in
    which Hydra cannot be initialised a second time.
    """
    checkpoint = run_checkpoint(target)
    overrides = list(overrides)
    try:
        return load_run(checkpoint, overrides, device=device)
    except NotARunCheckpoint:
        pass
    if config is None:  # as tools/train.py would compose it
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            config = compose("train", overrides=overrides)
    return load_pretrained(config, checkpoint, strict_head=strict_head, device=device)


def _plain_config(tree: dict) -> DictConfig:
    """The checked tree without Hydra's call keys: nothing can ``instantiate`` a loaded config."""

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not _RESERVED.match(str(k))}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return OmegaConf.create(strip(tree))


# ------------------------------------------------------------------------------ the stored config
def parse_stored_config(text: object, *, source: str | Path) -> dict:
    """The stored YAML as plain containers, checked by :func:`check_tree`; nothing resolved."""
    if not isinstance(text, str):
        raise ValueError(f"{source}: the stored config is a {type(text).__name__}, not YAML text")
    if len(text) > _MAX_CONFIG_CHARS:
        raise ValueError(f"{source}: the stored config has {len(text)} characters; "
                         "a run config has a few thousand")
    try:
        # Aliases (*name) can multiply a small text into a huge tree; videocls never writes them.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ValueError(f"{source}: the stored config uses YAML aliases (*name), "
                             "which videocls never writes")
        tree = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except (yaml.YAMLError, ValueError) as error:
        if str(error).startswith(str(source)):
            raise
        raise ValueError(f"{source}: the stored config is not valid YAML: {error}") from None
    except Exception as error:  # OmegaConf's own errors: the text is data we cannot read
        raise ValueError(f"{source}: the stored config cannot be read: "
                         f"{type(error).__name__}: {error}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{source}: the stored config is not a mapping")
    check_tree(tree, source=source)
    return tree


def check_tree(tree: dict, *, source: str | Path) -> None:
    """Refuse anything in a config tree that could name code: call keys outside the places the
    trainer writes them, ``${...}`` interpolations, and values that are not plain data."""
    budget = [_MAX_NODES]

    def visit(node: object, path: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"{source}: the stored config has more than {_MAX_NODES} entries")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise ValueError(f"{source}: stored config key {path}{key!r} is not a string")
                dotted = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and _RESERVED.match(key):
                    _check_call_key(dotted, key, value, depth, path, source)
                visit(value, dotted, depth + 1)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]", depth + 1)
        elif isinstance(node, str):
            if "${" in node:
                raise ValueError(f"{source}: stored config key {path} holds an interpolation ({node!r}); "
                                 "videocls stores resolved values, and never runs resolvers on a checkpoint")
        elif node is not None and not isinstance(node, (bool, int, float)):
            raise ValueError(f"{source}: stored config key {path} holds a {type(node).__name__}, "
                             "not plain data")

    visit(tree, "", 0)


def _check_call_key(dotted: str, key: str, value: object, depth: int, section: str, source) -> None:
    """A ``_key_`` passes only at a section root where the trainer writes it, with its value."""
    allowed = KNOWN_TARGETS.get(section, ()) if depth == 1 else ()
    if allowed and key == "_target_" and isinstance(value, str) and any(
            value == name or (name.endswith(".") and value.startswith(name) and "." not in value[len(name):])
            for name in allowed):
        return
    if allowed and key in CALL_FLAGS and any(type(value) is type(v) and value == v for v in CALL_FLAGS[key]):
        return
    what = f"it names code to call ({value!r})" if key == "_target_" else f"{key} is a Hydra call key"
    raise ValueError(f"{source}: stored config key {dotted} is not data: {what}, and videocls never calls "
                     "anything a checkpoint names. The file was not written by videocls's trainer as it "
                     "is (it was edited or crafted): do not load it")


def apply_overrides(tree: dict, overrides: Iterable[str], *, source: str | Path) -> dict:
    """``KEY=VALUE`` items (Hydra's override syntax) set existing leaves of ``tree``.

    ``experiment=``/``logger=`` are ignored with a warning (the stored config holds what they
    selected); other group choices, ``+``/``~`` and sweeps are refused, as are keys the stored
    config does not have (a typo is an error) and ``${...}`` values.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for item in overrides:
        hint = (f"override {item!r}: expected KEY=VALUE with KEY a field of the config stored in {source} "
                "(e.g. data.root=/data, test.num_clips=10, trainer.device=cpu)")
        try:
            (override,) = parser.parse_overrides([item])
        except HydraException as error:
            raise ValueError(f"{hint}: {error}") from None
        key = override.key_or_group
        if override.is_sweep_override() or override.is_add() or override.is_delete() or override.package:
            raise ValueError(f"{hint}; sweeps, +KEY, ~KEY and @package are not for a stored config")
        if key in IGNORED_GROUPS and "." not in key:
            log.warning("ignoring %s: %s carries the resolved config its run trained with", item, source)
            continue
        parent, _, leaf = key.rpartition(".")
        node = tree
        for part in parent.split(".") if parent else ():
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ValueError(hint)
        if isinstance(node[leaf], dict):
            raise ValueError(f"{hint}; {key} is a section (a config group choice such as model=NAME cannot "
                             "change a trained run): override its single keys")
        value = override.value()
        nested = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        check_tree(nested, source=f"override {item!r}")  # checked where it lands: a section root or not
        node[leaf] = value
    return tree


# ------------------------------------------------------------------------------ model and data
def model_from_config(model_cfg: dict, *, source: str | Path, pretrained: str | Path | None = None,
                      num_classes: int | None = None, strict_head: bool = True) -> nn.Module:
    """``create_model(name, **kwargs)`` from a model section of plain values, every key checked
    against the builder's keywords. With ``pretrained`` and ``strict_head`` the file's classifier
    must have the model's class count: evaluation never runs a random head."""
    check_tree({"model": model_cfg}, source=source)
    name = model_cfg.get("name")
    if not isinstance(name, str) or name not in list_models():
        raise ValueError(f"{source}: stored config key model.name is {name!r}, not a registered model "
                         f"({', '.join(list_models())})")
    accepted = builder_kwargs(name)
    kwargs = {}
    for key, value in model_cfg.items():
        if key in CREATE_MODEL_KEYS or _RESERVED.match(str(key)):
            continue
        if key not in accepted:
            raise ValueError(f"{source}: stored config key model.{key} is not an argument of {name} "
                             f"(its arguments: {', '.join(sorted(accepted))})")
        kwargs[key] = value
    if num_classes is None:
        num_classes = model_cfg.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"{source}: model.num_classes must be a positive integer, got {num_classes!r}")
    return create_model(name, pretrained=pretrained, num_classes=num_classes, strict_head=strict_head,
                        **kwargs)


#: Data keys that older checkpoints store and that are now asked of the model (dropped on load):
#: SlowFast's alpha is the built model's own (``videocls.data.datamodule.model_input``).
RETIRED_DATA_KEYS = frozenset({"slowfast_alpha"})


def data_from_config(data_cfg: dict, *, source: str | Path) -> VideoData:
    """:class:`VideoData` from a data section of plain values; every key must be one of its fields."""
    check_tree({"data": data_cfg}, source=source)
    fields = {f.name for f in dataclasses.fields(VideoData)}
    values = {k: v for k, v in data_cfg.items() if not _RESERVED.match(str(k)) and k not in RETIRED_DATA_KEYS}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{source}: stored config key data.{unknown[0]} is not a data setting "
                         f"(VideoData fields: {', '.join(sorted(fields))})")
    try:
        return VideoData(**values)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"{source}: the stored data config does not describe a dataset: {error}") from None


def check_class_counts(data_classes: int, model_outputs: int, *, source: str | Path) -> None:
    """Evaluation scores ``data.num_classes`` classes with a head of ``model_outputs``: they must agree."""
    if data_classes != model_outputs:
        raise ValueError(f"{source}: data.num_classes={data_classes} but the model has {model_outputs} "
                         "outputs; "
                         "evaluation never runs a classifier it was not trained with. Use a dataset with "
                         f"{model_outputs} classes (data.num_classes={model_outputs}) or another checkpoint")


def evaluated_weights(state: dict, *, source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights the run evaluated and which they are: the EMA average (an ``AveragedModel``
    state dict, ``module.<name>`` keys and ``n_averaged``) when the run kept one, else the model's."""
    ema = state.get("ema")
    if ema is None:
        return state["model"], "model"
    if not isinstance(ema, dict) or not any(k.startswith("module.") for k in ema):
        raise ValueError(f"{source}: its 'ema' entry is not an AveragedModel state dict (module.<name> keys)")
    return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}, "ema"


def num_outputs(model: nn.Module) -> int:
    """The number of classes the model's classifier scores."""
    rows = _classifier_rows(model.state_dict(), model)
    if rows is None:
        raise ValueError(f"{type(model).__name__} has no classifier weight "
                         f"'{model.classifier_prefix}.weight'")
    return rows


def _classifier_rows(state: dict[str, torch.Tensor], model: nn.Module) -> int | None:
    weight = state.get(f"{model.classifier_prefix}.weight")
    return int(weight.shape[0]) if weight is not None else None
