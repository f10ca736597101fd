"""Classify video files with a model's own preprocessing and multi-view protocol.

A videocls training checkpoint is rebuilt by :func:`videocls.engine.run_loading.load_run`
(nothing its stored config names is executed; EMA weights when the run trained with EMA), and
its views are made as its run tested them (frames, sampling, test short side and crop,
normalisation) and its classes named by its class file where that is still there; other
checkpoints get the model registry's defaults. The class names must match the model's
outputs: prediction never runs a randomly initialised classifier. A temperature that
``tools/calibrate.py`` stored beside the checkpoint scales the probabilities (see
:mod:`videocls.engine.calibrate`); an export directory (``tools/export.py``) runs through
:func:`load_exported_predictor`, its ``spec.json`` giving all of these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videocls.data.annotations import read_classes
from videocls.data.datamodule import model_input
from videocls.data.io.reader import open_video
from videocls.data.prepare import find_videos
from videocls.data.sampling import ClipSampler, pack_pathways
from videocls.data.transforms import ClipTransform
from videocls.engine.calibrate import apply_temperature, load_calibration
from videocls.engine.run_loading import NotARunCheckpoint, load_run, num_outputs
from videocls.engine.runtime import to_device
from videocls.engine.thresholds import decide, load_thresholds
from videocls.models import create_model
from videocls.models.registry import ModelConfig


@dataclass(frozen=True)
class Preprocessing:
    """How a video becomes test views, and where that recipe came from (for the report)."""

    sampler: ClipSampler
    transform: ClipTransform
    source: str

    @classmethod
    def from_model_config(cls, cfg: ModelConfig) -> Preprocessing:
        """The registry's defaults: dense clips, short side resized to the crop size."""
        return cls(ClipSampler(cfg.num_frames, cfg.sampling_rate),
                   ClipTransform(crop_size=cfg.crop_size, min_short_side=cfg.crop_size,
                                 max_short_side=cfg.crop_size, mean=cfg.mean, std=cfg.std, train=False),
                   "model registry defaults")

    @classmethod
    def from_export_spec(cls, spec: dict) -> Preprocessing:
        """The views an export directory's ``spec.json`` records (its run's test views)."""
        side = spec["short_side"]
        return cls(ClipSampler(spec["num_frames"], spec["sampling_rate"], spec["sampling_mode"],
                               spec.get("target_fps"), spec["pad"]),
                   ClipTransform(crop_size=spec["crop_size"], min_short_side=side, max_short_side=side,
                                 mean=tuple(spec["mean"]), std=tuple(spec["std"]), train=False),
                   f"export spec of {spec['model']}, {spec['format']} {spec['precision']}")

    def override(self, num_frames: int | None = None, sampling_rate: int | None = None,
                 sampling_mode: str | None = None, short_side: int | None = None,
                 crop_size: int | None = None, pad: str | None = None) -> Preprocessing:
        """Explicit values (not None) replace the recipe's."""
        sampler = {"num_frames": num_frames, "sampling_rate": sampling_rate, "mode": sampling_mode,
                   "pad": pad}
        transform = {"crop_size": crop_size, "min_short_side": short_side, "max_short_side": short_side}
        sampler = {k: v for k, v in sampler.items() if v is not None}
        transform = {k: v for k, v in transform.items() if v is not None}
        if not sampler and not transform:
            return self
        return Preprocessing(replace(self.sampler, **sampler), replace(self.transform, **transform),
                             f"{self.source}, overridden: {', '.join(sorted({**sampler, **transform}))}")

    def describe(self) -> str:
        s, t = self.sampler, self.transform
        sampling = {"segment": "segments", "rounded_segment": "rounded segments"}.get(
            s.mode, f"every {s.sampling_rate} frames")
        return (f"{s.num_frames} frames ({sampling}, pad {s.pad}), short side {t.min_short_side}, "
                f"crop {t.crop_size}, mean {tuple(t.mean)}, std {tuple(t.std)} ({self.source})")


@dataclass
class VideoPredictor:
    """Averages softmax over ``num_clips`` x ``num_crops`` views of a video (or of a window).

    ``preprocessing`` None means the model registry's defaults; ``temperature`` turns the
    averaged probabilities ``p`` into ``softmax(log p / T)``.
    """

    model: nn.Module
    class_names: list[str]
    num_clips: int = 3
    num_crops: int = 3
    device: str = "cpu"
    preprocessing: Preprocessing | None = None
    temperature: float | None = None
    thresholds: dict | None = None  # a record of videocls.engine.thresholds.load_thresholds

    def __post_init__(self) -> None:
        if torch.device(self.device).type == "cpu":
            torch.set_flush_denormal(True)  # see videocls.engine.distributed.init_distributed
        if isinstance(self.model, nn.Module):
            self.model.eval().to(self.device)
            if self.preprocessing is None:
                self.preprocessing = Preprocessing.from_model_config(self.model.default_config)
            # The built model's own alpha (a model.alpha override included), asked as the datasets ask it.
            self.alpha = model_input(self.model)["pathway_alpha"]
            outputs = num_outputs(self.model)
        else:  # an ExportedModel (videocls.engine.exported): its spec.json holds all of this
            self.preprocessing = self.preprocessing or Preprocessing.from_export_spec(self.model.spec)
            self.alpha, outputs = self.model.spec["pathway_alpha"], self.model.num_classes
        if self.num_crops not in (1, 3):  # the test views' layout: centre, or left/centre/right
            raise ValueError(f"num_crops={self.num_crops}: use 1 (centre crop) "
                             "or 3 (three crops along the long side)")
        if len(self.class_names) != outputs:
            raise ValueError(f"{len(self.class_names)} class names for a model with {outputs} outputs")

    def describe(self) -> str:
        """What the predictions are made from, for the user."""
        temperature = "no temperature" if self.temperature is None else f"temperature {self.temperature:.4f}"
        source = self.thresholds.get("path", "the export's spec") if self.thresholds else ""
        thresholds = f"; {self.thresholds['kind']} thresholds from {source}" if self.thresholds else ""
        return f"views: {self.preprocessing.describe()}; {temperature}{thresholds}"

    def _probs(self, reader, first: int, last: int) -> torch.Tensor:
        """Mean class probabilities over the views of frames ``[first, last)``."""
        sampler, transform = self.preprocessing.sampler, self.preprocessing.transform
        views = []
        for clip_idx in range(self.num_clips):
            indices = first + sampler(last - first, reader.fps, train=False, clip_idx=clip_idx,
                                      num_clips=self.num_clips)
            frames = reader.get_frames(indices.tolist())
            for crop in range(self.num_crops):
                spatial = crop if self.num_crops == 3 else 1
                views.append(transform(frames, rng=np.random.default_rng(0), spatial_idx=spatial))
        return self.mean_probs(torch.stack(views))

    @torch.no_grad()
    def mean_probs(self, views: torch.Tensor) -> torch.Tensor:
        """Class probabilities averaged over ``views`` (``V x C x T x H x W``, already transformed:
        a SlowFast model's pathways are cut here), before any temperature."""
        inputs = _pathways(views, self.alpha) if self.alpha else views
        if not isinstance(self.model, nn.Module):  # an exported artefact runs where it was loaded
            return self.model(inputs).float().softmax(dim=1).mean(dim=0).cpu()
        return self.model(to_device(inputs, torch.device(self.device))).softmax(dim=1).mean(dim=0).cpu()

    def score_views(self, views: torch.Tensor, *, topk: int = 5) -> dict:
        """:meth:`_scored` of views made elsewhere (the stream's ring buffer)."""
        return self._score(self.mean_probs(views), topk=topk)

    def _scored(self, reader, first: int, last: int, *, topk: int) -> dict:
        return self._score(self._probs(reader, first, last), topk=topk)

    def _score(self, raw: torch.Tensor, *, topk: int) -> dict:
        """Top-k of the probabilities ``raw`` (temperature applied) and, with thresholds, the decision:
        a class name or None (abstain), or the list of classes over their thresholds."""
        probs = apply_temperature(raw, self.temperature) if self.temperature is not None else raw
        scored = {"topk": self._topk(probs, topk)}
        if self.thresholds is not None:  # tuned on the plain probabilities, their temperature inside
            decision = decide(self.thresholds, raw[None])[0]
            scored["decision"] = (None if decision is None else self.class_names[decision]
                                  if isinstance(decision, int) else [self.class_names[c] for c in decision])
        return scored

    def _topk(self, probs: torch.Tensor, k: int) -> list[dict]:
        p, i = probs.topk(min(k, probs.numel()))
        return [{"label": self.class_names[j], "prob": round(float(q), 6)}
                for q, j in zip(p.tolist(), i.tolist())]

    def predict(self, path: str | Path, topk: int = 5, window: float | None = None,
                stride: float | None = None) -> dict:
        """``{"video", "topk", "windows", "temperature"}``; windows hold ``{"start", "end", "topk"}``
        in seconds."""
        reader = open_video(path)
        try:
            result = {"video": str(path), **self._scored(reader, 0, len(reader), topk=topk),
                      "windows": [], "temperature": self.temperature}
            if window:
                fps = reader.fps
                size, step = max(int(round(window * fps)), 1), max(int(round((stride or window) * fps)), 1)
                for first in range(0, max(len(reader) - size, 0) + 1, step):
                    last = min(first + size, len(reader))
                    result["windows"].append({"start": round(first / fps, 3), "end": round(last / fps, 3),
                                              **self._scored(reader, first, last, topk=topk)})
        finally:
            reader.close()
        return result


def load_predictor(weights: str | Path, model_name: str | None = None,
                   classes: str | Path | list[str] | None = None, *, num_clips: int = 3, num_crops: int = 3,
                   device: str = "cpu", calibrated: bool = True, **overrides) -> VideoPredictor:
    """A predictor for ``weights`` (a checkpoint, or a run directory: its ``last.pt``): its
    model, its preprocessing with ``overrides`` (the keyword arguments of
    :meth:`Preprocessing.override`) on top, and its stored temperature and decision thresholds
    (``tools/calibrate.py``, ``tools/tune_thresholds.py``) unless ``calibrated``
    is False.

    ``classes`` (a file of names, one a line, or a list) must have one name per model output:
    a videocls run's class count is its own, and another checkpoint's classifier must have as
    many classes as the list (``create_model(..., strict_head=True)``), else ValueError naming
    both counts and the files.
    """
    class_names, classes_source = _class_names(classes)
    try:
        run = load_run(weights)
    except NotARunCheckpoint:
        run = None
    if run is not None:
        trained_as = run.config.model.name
        if model_name is not None and model_name != trained_as:
            raise ValueError(f"--model {model_name}, but {run.checkpoint} is a {trained_as} run "
                             "(leave out --model)")
        model, checkpoint = run.model, run.checkpoint
        # The run's own class file where it is still there (as tools/export.py names them), else numbers.
        class_names = class_names or run.data.class_names()
        mean, std = model.default_config.mean, model.default_config.std
        preprocessing = Preprocessing(run.data.sampler(), run.data.test_transform(mean, std),
                                      f"checkpoint's data config, {run.weights} weights")
    else:
        if model_name is None:
            raise ValueError(f"{weights} does not carry its model config: pass --model NAME")
        checkpoint = Path(weights)
        num_classes = len(class_names) if class_names is not None else None
        try:
            model = create_model(model_name, pretrained=weights, num_classes=num_classes, strict_head=True)
        except ValueError as error:
            if class_names is None:
                raise
            raise ValueError(f"{classes_source} lists {len(class_names)} class names: {error}") from None
        preprocessing = Preprocessing.from_model_config(model.default_config)
    outputs = num_outputs(model)
    if class_names is not None and len(class_names) != outputs:
        raise ValueError(f"{classes_source} lists {len(class_names)} class names but {checkpoint} scores "
                         f"{outputs} classes: pass the class list the model was trained with")
    calibration = load_calibration(checkpoint) if calibrated else None
    return VideoPredictor(model, class_names or default_class_names(model), num_clips=num_clips,
                          num_crops=num_crops, device=device,
                          preprocessing=preprocessing.override(**overrides),
                          temperature=calibration["temperature"] if calibration else None,
                          thresholds=load_thresholds(checkpoint) if calibrated else None)


def load_exported_predictor(path: str | Path, *, precision: str | None = None, num_clips: int = 3,
                            num_crops: int = 3, calibrated: bool = True, **overrides) -> VideoPredictor:
    """A predictor for the export directory ``path`` (``tools/export.py``): its graph
    (``precision`` "fp32" or "int8", default the spec's), class names, views, and the
    temperature and thresholds its spec recorded unless ``calibrated`` is False."""
    from videocls.engine.exported import ExportedModel  # onnxruntime only when an export is used

    model = ExportedModel.load(path, precision=precision)
    spec = model.spec
    return VideoPredictor(model, list(spec["class_names"]), num_clips=num_clips, num_crops=num_crops,
                          preprocessing=Preprocessing.from_export_spec(spec).override(**overrides),
                          temperature=spec["temperature"] if calibrated else None,
                          thresholds=spec["thresholds"] if calibrated else None)


def _class_names(classes: str | Path | list[str] | None) -> tuple[list[str] | None, str]:
    """The names and where they came from (for messages); an empty list is an error."""
    if classes is None:
        return None, ""
    if isinstance(classes, (str, Path)):
        names, source = read_classes(classes), f"class file {classes}"
        if not names:
            raise ValueError(f"{classes}: no class names in the file "
                             "(one name a line, in the model's output order)")
        return names, source
    if not classes:
        raise ValueError("an empty list of class names")
    return list(classes), "the class names"


def expand_video_paths(paths: list[str]) -> list[str]:
    """Each folder that holds video files (by extension, at any depth) becomes those files,
    sorted; other folders stay as they are (a folder of frame images is one video)."""
    expanded = []
    for path in paths:
        found = find_videos(path) if os.path.isdir(path) else []
        expanded += [os.path.join(path, relative) for relative in found] or [path]
    return expanded


def _pathways(batch: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    per_clip = [pack_pathways(clip, alpha) for clip in batch]
    return [torch.stack([p[0] for p in per_clip]), torch.stack([p[1] for p in per_clip])]


def default_class_names(model: nn.Module) -> list[str]:
    return [str(i) for i in range(num_outputs(model))]
