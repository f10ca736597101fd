"""Reusable model layers: ResNet stems, bottlenecks, stages and heads in 3D, attention blocks,
and the shared types (``types.StateDict``).

The bottom of ``videocls.models``: nothing here imports the registry, the checkpoint readers or
a model family, so every one of those can build on the layers without an import circle.
"""

from videocls.models.layers.heads import HEAD_POOLS, ClassifierHead, head_windows
from videocls.models.layers.resnet_blocks import (
    PYSLOWFAST_BLOCK_RULES,
    PYTORCHVIDEO_BLOCK_RULES,
    STAGE_BLOCKS,
    STAGE_NAMES,
    Bottleneck3d,
    ConvBnAct3d,
    ResNetStem3d,
    inflate_from_2d,
    init_resnet_weights,
    make_res_stage,
    make_res_stages,
    rename_keys,
)

__all__ = [
    "HEAD_POOLS",
    "PYSLOWFAST_BLOCK_RULES",
    "PYTORCHVIDEO_BLOCK_RULES",
    "STAGE_BLOCKS",
    "STAGE_NAMES",
    "Bottleneck3d",
    "ClassifierHead",
    "ConvBnAct3d",
    "ResNetStem3d",
    "head_windows",
    "inflate_from_2d",
    "init_resnet_weights",
    "make_res_stage",
    "make_res_stages",
    "rename_keys",
]
