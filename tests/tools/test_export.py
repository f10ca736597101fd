"""tools/export.py: ONNX / torch.export artefacts checked against PyTorch, INT8, the spec as data."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
import yaml
from helpers import TINY_WIDTH, compose_config
from omegaconf import OmegaConf
from onnx import numpy_helper
from torch import nn

from videocls.data.datamodule import VideoData
from videocls.data.io.reader import open_video
from videocls.data.sampling import ClipSampler, pack_pathways
from videocls.data.transforms import ClipTransform
from videocls.engine.calibrate import save_calibration
from videocls.engine.export import (
    ExportMismatch,
    batch_of,
    export_model,
    export_run,
    input_spec,
    validation_clips,
    verify,
)
from videocls.engine.exported import ExportedModel, check_pt2_archive, read_spec
from videocls.engine.quantize import format_quantization
from videocls.engine.run_loading import load_run, model_from_config, num_outputs
from videocls.engine.thresholds import save_thresholds
from videocls.models import list_models
from videocls.models.registry import builder_kwargs


def _families() -> list[str]:
    """One registered model per family (models whose builders take the same keywords are one
    family's sizes: c2d/i3d/slow, the SlowFasts, the X3Ds...): the dynamo exporter costs ~4
    CPU-seconds a model, so every size of every family would not fit the suite's budget."""
    first: dict[frozenset, str] = {}
    for name in list_models():
        first.setdefault(frozenset(builder_kwargs(name)), name)
    return sorted(first.values())


def _tiny_model(name: str) -> nn.Module:
    """The model at its demo size (configs/model_size/demo/), 4 frames of 32 px, shrunk further
    by the TINY_WIDTH override where the family has that key."""
    cfg = compose_config(["experiment=demo", f"model={name}", "data.root=unused", "data.num_frames=4",
                          "data.train_crop=32", "data.test_crop=32"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    key, value = next(v for prefix, v in TINY_WIDTH.items() if name.startswith(prefix)).split("=")
    if key.removeprefix("model.") in model_cfg:
        model_cfg[key.removeprefix("model.")] = yaml.safe_load(value)
    torch.manual_seed(0)
    return model_from_config(model_cfg, source=name).eval()


@pytest.fixture(scope="module")
def real_frames(real_videos_dir):
    """The first 16 decoded frames of a real video (T H W C uint8)."""
    reader = open_video(real_videos_dir / "carphone_distorted.mp4")
    try:
        return reader.get_frames(list(range(16)))
    finally:
        reader.close()


def _real_clips(frames: torch.Tensor, model: nn.Module, num_frames: int, count: int) -> list:
    cfg = model.default_config
    transform = ClipTransform(crop_size=32, min_short_side=32, max_short_side=32, mean=cfg.mean, std=cfg.std,
                              train=False)
    sampler = ClipSampler(num_frames, 1)
    alpha = getattr(model, "alpha", None)
    clips = []
    for i in range(count):  # different frames, different crops: different clips
        clip = transform(frames[sampler(len(frames), 25.0, train=False, clip_idx=i, num_clips=count)],
                         rng=np.random.default_rng(0), spatial_idx=i % 3)
        clips.append(pack_pathways(clip, alpha) if alpha else clip)
    return clips


@pytest.mark.parametrize("name", _families())
def test_every_family_exports_and_matches_pytorch(name, real_frames, tmp_path):
    """ONNX through onnxruntime equals PyTorch (<= 1e-4) on real clips at batch 1 and 3, from one file."""
    model = _tiny_model(name)
    num_frames = max(4, getattr(model, "alpha", None) or 1)  # SlowFast 4x16: one slow frame of eight
    clips = _real_clips(real_frames, model, num_frames, 3)
    data = VideoData(train_list="-", val_list="-", num_classes=num_outputs(model), num_frames=num_frames,
                     sampling_rate=1, test_short_side=32, test_crop=32)
    spec = input_spec(model, batch_of(clips[:2]), name=name, data=data, fmt="onnx")
    export_model(model, clips, tmp_path / "export", spec=spec, source="carphone_distorted.mp4")
    exported = ExportedModel.load(tmp_path / "export")
    with torch.no_grad():
        for size in (1, 3):
            expected = model(batch_of(clips[:size]))
            got = exported(batch_of(clips[:size]))
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() <= 1e-4
    names = [i["name"] for i in exported.spec["inputs"]]
    assert names == (["slow", "fast"] if getattr(model, "alpha", None) else ["video"])
