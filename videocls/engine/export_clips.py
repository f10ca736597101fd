"""The real clips an export is checked on and INT8 is calibrated on, as the model takes them.

:func:`validation_clips` makes test views of a run's validation videos (or of one ``--video``)
with videocls's reader and the run's test transform; :func:`batch_of` stacks them into the
model's batch input and :func:`input_names` names the graph's inputs. Both
:mod:`videocls.engine.export` (verification) and :mod:`videocls.engine.quantize` (calibration,
latency) ask this module, so neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videocls.data.datamodule import model_input
from videocls.data.io.reader import open_video
from videocls.data.sampling import pack_pathways
from videocls.engine.run_loading import LoadedRun


def validation_clips(run: LoadedRun, count: int, *, video: str | Path | None = None) -> list:
    """``count`` test views as the model takes them (a ``C T H W`` tensor, or ``[slow, fast]``):
    the centre view of ``count`` validation videos spread evenly over the run's list (a list
    sorted by class gives every part of it), or ``count`` clips spread over ``video``. Decoded
    by videocls's reader and made by the run's test transform; an unreadable video is replaced
    by the next one (the dataset reports it)."""
    model_args = model_input(run.model)
    alpha = model_args["pathway_alpha"]
    if video is not None:
        reader = open_video(video)
        try:
            sampler = run.data.sampler()
            transform = run.data.test_transform(model_args["mean"], model_args["std"])
            clips = []
            for clip_idx in range(count):
                indices = sampler(len(reader), reader.fps, train=False, clip_idx=clip_idx, num_clips=count)
                clip = transform(reader.get_frames(indices.tolist()), rng=np.random.default_rng(0),
                                 spatial_idx=1)
                clips.append(pack_pathways(clip, alpha) if alpha else clip)
        finally:
            reader.close()
        return clips
    dataset = run.data.dataset("val", train=False, **model_args, num_clips=1, num_crops=1)
    total = len(dataset)
    clips, taken = [], set()
    for start in np.linspace(0, total, num=min(count, total), endpoint=False).astype(int).tolist():
        index = next((i for i in range(start, total) if i not in taken), None)
        while index is not None:
            taken.add(index)
            item = dataset[index]
            if item["valid"]:
                clips.append(item["video"])
                break
            index = next((i for i in range(index + 1, total) if i not in taken), None)
    if len(clips) < count:
        raise ValueError(f"{run.data.val_list}: {len(clips)} readable validation videos, {count} needed "
                         "(pass --video FILE for a real clip to check the export on, or fewer clips)")
    return clips


def batch_of(clips: Sequence) -> torch.Tensor | list[torch.Tensor]:
    """Clips stacked into the model's batch input (per pathway for SlowFast)."""
    if isinstance(clips[0], (list, tuple)):
        return [torch.stack([clip[p] for clip in clips]) for p in range(len(clips[0]))]
    return torch.stack(list(clips))


def input_names(model: nn.Module) -> list[str]:
    return ["slow", "fast"] if model_input(model)["pathway_alpha"] else ["video"]
