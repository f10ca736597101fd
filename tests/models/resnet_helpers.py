"""Helpers shared by the ResNet-3D and SlowFast tests (reference checkpoints, BN statistics)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def calibrate_bn(model: nn.Module, example) -> nn.Module:
    """Give every BN a random affine transform and, as running statistics, the statistics of its
    own input when the model (in eval mode) sees ``example``; returns the model in eval mode.

    Fresh models zero the last BN of each block (every block starts as the identity) and have
    unit running statistics: a comparison against them would not see most weights, and deep
    random networks would give huge logits. Calibrated, the activations on ``example`` stay
    near unit scale at every depth.
    """

    def set_statistics(bn: nn.Module, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0].transpose(0, 1).flatten(1)
        bn.running_mean.copy_(x.mean(1))
        bn.running_var.copy_(x.var(1, unbiased=False) + 1.0)

    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    for bn in norms:
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.normal_(bn.bias, std=0.2)
    hooks = [bn.register_forward_pre_hook(set_statistics) for bn in norms]
    model.eval()
    model(example)
    for hook in hooks:
        hook.remove()
    return model


def save_pyth(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Write a state dict the way PySlowFast and pytorchvideo ship checkpoints."""
    torch.save({"model_state": state}, path)
    return path


# Written from PySlowFast's module names (resnet_helper.ResBlock/BottleneckTransform,
# stem_helper.VideoModelStem, video_model_builder.FuseFastToSlow, head_helper.ResNetBasicHead),
# independently of the filters under test.
_PTV_TO_PYSLOWFAST_BLOCK = {
    "branch1_conv": "branch1",
    "branch1_norm": "branch1_bn",
    "branch2.conv_a": "branch2.a",
    "branch2.norm_a": "branch2.a_bn",
    "branch2.conv_b": "branch2.b",
    "branch2.norm_b": "branch2.b_bn",
    "branch2.conv_c": "branch2.c",
    "branch2.norm_c": "branch2.c_bn",
}


def pytorchvideo_to_pyslowfast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a pytorchvideo ResNet or SlowFast state dict into PySlowFast's layout."""
    stage_blocks = sorted({int(k.split(".")[1]) for k in state if ".res_blocks." in k})
    out = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        parts = module.split(".")
        block = int(parts[1])
        if "multipathway_fusion" in module:
            name = f"s{block + 1}_fuse.{'conv_f2s' if parts[-1] == 'conv_fast_to_slow' else 'bn'}"
        elif parts[-1] == "proj":
            name = "head.projection"
        else:
            multipathway = parts[2] == "multipathway_blocks"
            pathway, rest = (int(parts[3]), parts[4:]) if multipathway else (0, parts[2:])
            if block == 0:
                name = f"s1.pathway{pathway}_stem.{'conv' if rest == ['conv'] else 'bn'}"
            else:
                stage = stage_blocks.index(block) + 2
                index, sub = int(rest[1]), ".".join(rest[2:])
                name = f"s{stage}.pathway{pathway}_res{index}.{_PTV_TO_PYSLOWFAST_BLOCK[sub]}"
        out[f"{name}.{leaf}"] = value
    assert not any(re.search(r"blocks|norm_|conv_[abc]", k) for k in out)
    return out
