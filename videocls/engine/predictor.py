"""Classify single video files with a model's own preprocessing and multi-view protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from videocls.data.sampling import ClipSampler, pack_pathways
from videocls.data.transforms import ClipTransform
from videocls.data.video_io import open_video
from videocls.engine.checkpoint import load_checkpoint
from videocls.models import create_model


def load_model_for_inference(weights: str | Path, model_name: str | None = None, num_classes: int | None = None) -> nn.Module:
    """A model ready for ``eval()``: a videocls training checkpoint rebuilds itself from its
    saved config (tiny widths included); any other checkpoint needs ``model_name``."""
    state = load_checkpoint(weights) if Path(weights).suffix == ".pt" else None
    if state is not None and "config" in state and "model" in state:
        cfg = OmegaConf.create(state["config"])
        model = instantiate(cfg.model, pretrained=None)
        model.load_state_dict(state["model"])
        return model
    if model_name is None:
        raise ValueError(f"{weights} does not carry its model config: pass --model NAME")
    return create_model(model_name, pretrained=weights, num_classes=num_classes)


@dataclass
class VideoPredictor:
    """Averages softmax over ``num_clips`` x ``num_crops`` views of a video (or of a window)."""

    model: nn.Module
    class_names: list[str]
    num_clips: int = 3
    num_crops: int = 3
    pad: str = "repeat"
    device: str = "cpu"

    def __post_init__(self) -> None:
        cfg = self.model.default_config
        self.model.eval().to(self.device)
        if torch.device(self.device).type == "cpu":
            torch.set_flush_denormal(True)  # see videocls.engine.distributed.init_distributed
        self.sampler = ClipSampler(cfg.num_frames, cfg.sampling_rate, pad=self.pad)
        self.transform = ClipTransform(cfg.crop_size, cfg.crop_size, cfg.crop_size, cfg.mean, cfg.std, train=False)
        self.alpha = cfg.extra.get("alpha")
        outputs = len(default_class_names(self.model))
        if len(self.class_names) != outputs:
            raise ValueError(f"{len(self.class_names)} class names for a model with {outputs} outputs")

    @torch.no_grad()
    def _probs(self, reader, first: int, last: int) -> torch.Tensor:
        """Mean class probabilities over the views of frames ``[first, last)``."""
        views = []
        for clip_idx in range(self.num_clips):
            indices = first + self.sampler(last - first, reader.fps, False, clip_idx, self.num_clips)
            frames = reader.get_frames(indices.tolist())
            for crop in range(self.num_crops):
                spatial = crop if self.num_crops == 3 else 1
                views.append(self.transform(frames, rng=np.random.default_rng(0), spatial_idx=spatial))
        batch = torch.stack(views).to(self.device)
        inputs = [p.to(self.device) for p in _pathways(batch, self.alpha)] if self.alpha else batch
        return self.model(inputs).softmax(dim=1).mean(dim=0).cpu()

    def _topk(self, probs: torch.Tensor, k: int) -> list[dict]:
        p, i = probs.topk(min(k, probs.numel()))
        return [{"label": self.class_names[j], "prob": round(float(q), 6)} for q, j in zip(p.tolist(), i.tolist())]

    def predict(self, path: str | Path, topk: int = 5, window: float | None = None, stride: float | None = None) -> dict:
        """``{"video", "topk", "windows"}``; windows hold ``{"start", "end", "topk"}`` in seconds."""
        reader = open_video(path)
        try:
            result = {"video": str(path), "topk": self._topk(self._probs(reader, 0, len(reader)), topk), "windows": []}
            if window:
                fps = reader.fps
                size, step = max(int(round(window * fps)), 1), max(int(round((stride or window) * fps)), 1)
                for first in range(0, max(len(reader) - size, 0) + 1, step):
                    last = min(first + size, len(reader))
                    result["windows"].append({"start": round(first / fps, 3), "end": round(last / fps, 3),
                                              "topk": self._topk(self._probs(reader, first, last), topk)})
        finally:
            reader.close()
        return result


def _pathways(batch: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    per_clip = [pack_pathways(clip, alpha) for clip in batch]
    return [torch.stack([p[0] for p in per_clip]), torch.stack([p[1] for p in per_clip])]


def default_class_names(model: nn.Module) -> list[str]:
    out = dict(model.named_modules())[model.classifier_prefix].out_features
    return [str(i) for i in range(out)]

