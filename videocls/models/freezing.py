"""Freezing parts of a model for fine-tuning: no gradients, and BatchNorm statistics that stay.

``freeze(model, ["stem", "res2"])`` freezes the modules at those dotted names (a name is a
prefix: ``res2`` covers ``res2.0.conv_a``); ``backbone=True`` freezes everything but the
classifier (``model.classifier_prefix``). A frozen parameter has ``requires_grad=False`` (the
optimiser never sees it). A frozen BatchNorm also keeps its running statistics: it normalises
with them in training too (a forward pre-hook puts it in eval mode before every call, whatever
``model.train()`` set), and is marked ``videocls_frozen`` so precise BN leaves it alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

FROZEN_ATTRIBUTE = "videocls_frozen"


def _keep_eval(module: nn.Module, _inputs) -> None:
    module.train(False)


def freeze(model: nn.Module, parts: Sequence[str] = (), *, backbone: bool = False) -> list[str]:
    """Freeze ``parts`` (dotted module names) or, with ``backbone``, all but the classifier;
    returns the names of the frozen parameters. An unknown part is an error naming the valid ones."""
    modules = dict(model.named_modules())
    if backbone:
        head = getattr(model, "classifier_prefix", None)
        if head is None:
            raise ValueError(f"{type(model).__name__} names no classifier (classifier_prefix): "
                             "freeze_backbone needs one; list the parts in model.freeze instead")
        parts = [name for name, _ in model.named_children() if not head.startswith(name)]
    unknown = [part for part in parts if part not in modules or part == ""]
    if unknown:
        top = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"model.freeze: {unknown} are not modules of {type(model).__name__} "
                         f"(its top-level parts: {top}; deeper names are dotted, e.g. res2.0)")
    frozen = []
    for part in parts:
        for name, param in modules[part].named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{part}.{name}")
        for sub in modules[part].modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and not getattr(sub, FROZEN_ATTRIBUTE, False):
                setattr(sub, FROZEN_ATTRIBUTE, True)
                sub.register_forward_pre_hook(_keep_eval)
    return frozen
