"""Export a checkpoint to a self-contained, verified ONNX or ``torch.export`` artefact.

``tools/export.py`` rebuilds the model exactly as ``tools/test.py`` does
(:func:`videocls.engine.run_loading.load_run_or_weights`: its stored config, strict head, EMA
weights when the run used them, nothing the checkpoint names instantiated) and writes a
directory :class:`~videocls.engine.exported.ExportedModel` runs: the graph with its weights and
``spec.json`` (frames, sampling, test short side and crop, mean/std, input layout, class names,
and the temperature and decision thresholds ``tools/calibrate.py`` / ``tools/tune_thresholds.py``
stored beside the checkpoint, if any).

Before anything is written to ``--out`` the export is loaded back through ``ExportedModel`` and
run on REAL clips: views of the run's validation videos (or of ``--video``), decoded by
videocls's reader and made by the test transform, at batch 1 and at batch 2 (the batch
dimension is dynamic). If any logit differs from PyTorch's by more than ``tolerance`` (1e-4,
fp32) the export is refused with the difference, and nothing is left behind: it is built in a
hidden directory beside ``--out`` and renamed into place only once verified.

ONNX is written with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset 18),
not the TorchScript tracer, because only it exports every family correctly: the tracer turns
Inception I3D's TensorFlow-'SAME' padding arithmetic (``ceil(size / stride)`` on traced sizes)
into ONNX integer division that rounds the wrong way, so its graph fails in onnxruntime with an
empty temporal axis (measured); ``torch.export`` sees the sizes as the integers they are (only
the batch is symbolic) and the padding becomes constants. SlowFast's two pathways are two
inputs (``slow``, ``fast``), as the PyTorch model takes them; TimeSformer's attention exports
as plain MatMul/Softmax. The tracer is also deprecated from torch 2.9. ``--format torch_export``
writes ``torch.export.save``'s archive of the same program.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from videocls.data.datamodule import VideoData, model_input
from videocls.engine.calibrate import file_sha256, load_calibration
from videocls.engine.export_clips import batch_of, input_names, validation_clips
from videocls.engine.exported import GRAPH_FILES, ExportedModel, finite_json, write_spec
from videocls.engine.quantize import format_quantization, quantize_export
from videocls.engine.run_loading import LoadedRun
from videocls.engine.thresholds import load_thresholds

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
OPSET = 18
MAX_BATCH = 4096


class ExportMismatch(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


# ------------------------------------------------------------------------------ the spec
def input_spec(model: nn.Module, example, *, name: str, data: VideoData, fmt: str) -> dict:
    """What a caller needs to make ``model``'s input from a video: ``data``'s test sampling and
    views with the model's normalisation (unless the data sets its own), and the input layout."""
    model_args = model_input(model)
    transform = data.test_transform(model_args["mean"], model_args["std"])
    tensors = example if isinstance(example, (list, tuple)) else [example]
    return {
        "model": name,
        "num_frames": data.num_frames, "sampling_rate": data.sampling_rate,
        "sampling_mode": data.sampling_mode, "target_fps": data.target_fps, "pad": data.pad,
        "short_side": data.test_short_side, "crop_size": data.test_crop,
        "mean": [float(v) for v in transform.mean], "std": [float(v) for v in transform.std],
        "input_layout": "B C T H W" + (", [slow, fast]" if len(tensors) == 2 else ""),
        "inputs": [{"name": n, "shape": ["batch", *t.shape[1:]]}
                   for n, t in zip(input_names(model), tensors)],
        "pathway_alpha": model_args["pathway_alpha"],
        "class_names": data.class_names(),
        "temperature": None, "thresholds": None,
        "format": fmt, "precision": "fp32", "graphs": {"fp32": GRAPH_FILES[(fmt, "fp32")]},
        "exporter": {"torch": torch.__version__, "opset": OPSET if fmt == "onnx" else None},
    }


def build_spec(run: LoadedRun, example: torch.Tensor | list[torch.Tensor], *, fmt: str) -> dict:
    """``spec.json``'s content for ``run`` (see :mod:`videocls.engine.exported`): its input spec,
    and the temperature and thresholds stored beside its checkpoint (when they fit its bytes)."""
    calibration = load_calibration(run.checkpoint)
    thresholds = load_thresholds(run.checkpoint)
    spec = input_spec(run.model, example, name=str(run.config.model.name), data=run.data, fmt=fmt)
    spec.update({
        "temperature": calibration["temperature"] if calibration else None,
        "thresholds": {k: v for k, v in thresholds.items() if k != "path"} if thresholds else None,
        "source": {"checkpoint": str(run.checkpoint), "checkpoint_sha256": file_sha256(run.checkpoint),
                   "weights": run.weights,
                   "calibration_file": calibration.get("path") if calibration else None,
                   "thresholds_file": thresholds.get("path") if thresholds else None},
    })
    return finite_json(spec)


# ------------------------------------------------------------------------------ graphs
def _dynamic_batch(example) -> tuple:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if isinstance(example, (list, tuple)):
        return ([{0: batch} for _ in example],)
    return ({0: batch},)


def export_program(model: nn.Module, example) -> torch.export.ExportedProgram:
    """``torch.export`` of the model in eval mode, batch dynamic (``example`` has batch >= 2:
    a batch-1 example would specialise the graph to it)."""
    with torch.no_grad():
        return torch.export.export(model.eval(), (example,), dynamic_shapes=_dynamic_batch(example))


def write_graph(model: nn.Module, example, path: Path, *, fmt: str) -> None:
    """The graph with its weights at ``path`` (one file; see the module docstring for why dynamo)."""
    program = export_program(model, example)
    if fmt == "torch_export":
        torch.export.save(program, path)
        return
    names = input_names(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress and deprecation chatter
        onnx_program = torch.onnx.export(program, input_names=names, output_names=["logits"], dynamo=True,
                                         opset_version=OPSET, optimize=True, verbose=False)
    onnx_program.save(str(path), external_data=False)


# ------------------------------------------------------------------------------ verification
@torch.no_grad()
def verify(exported: ExportedModel, model: nn.Module, clips: Sequence, *,
           tolerance: float = TOLERANCE) -> dict:
    """Run ``exported`` and ``model`` on ``clips`` at batch 1 and at batch ``len(clips)``; raise
    :class:`ExportMismatch` when any logit differs by more than ``tolerance``. Returns the
    numbers (``max_abs_diff``, the batch sizes, ``tolerance``)."""
    model.eval()
    worst, batches = 0.0, sorted({1, len(clips)})
    for size in batches:
        inputs = batch_of(clips[:size])
        expected, got = model(inputs).float(), exported(inputs)
        if got.shape != expected.shape:
            raise ExportMismatch(f"{exported.path}: the export gives logits of shape {list(got.shape)} at "
                                 f"batch {size}, PyTorch {list(expected.shape)}")
        diff = (got - expected).abs().max().item()
        if not diff <= tolerance:  # NaN fails too
            raise ExportMismatch(
                f"{exported.path}: the exported model's logits differ from PyTorch's by {diff:.3g} at batch "
                f"{size} on real clips (tolerance {tolerance:g}, fp32); the export was not written")
        worst = max(worst, diff)
    return {"max_abs_diff": worst, "batch_sizes": batches, "tolerance": tolerance}


# ------------------------------------------------------------------------------ the artefact
def staging_dir(out: Path) -> Path:
    """A hidden directory beside ``out`` (same file system, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the published export private
    return staging


def publish(staging: Path, out: Path) -> None:
    """Rename the verified ``staging`` directory to ``out``."""
    if out.exists():
        raise FileExistsError(f"{out} appeared while exporting; the export is left unwritten")
    os.replace(staging, out)


def check_out(out: Path) -> None:
    if out.exists():
        raise FileExistsError(f"{out} exists: choose a new --out directory (an export is never overwritten)")


def export_model(model: nn.Module, clips: Sequence, out: str | Path, *, spec: dict,
                 tolerance: float = TOLERANCE, source: str = "", extend=None) -> dict:
    """Write ``model`` as ``spec["format"]`` with ``spec`` to ``out`` (which must not exist),
    verified on ``clips`` (real clips, at least two: the example batch and the batch sizes
    checked) and return the spec as written. ``extend(staging, spec) -> spec`` adds to the
    verified export before it is published (INT8). On any error nothing is left behind."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if len(clips) < 2:
        raise ValueError("an export is made and checked on two clips or more (batch 2: the batch is dynamic)")
    out = Path(out)
    check_out(out)
    model.eval()
    staging = staging_dir(out)
    try:
        write_graph(model, batch_of(clips), staging / spec["graphs"]["fp32"], fmt=spec["format"])
        write_spec(staging, spec)
        checked = verify(ExportedModel.load(staging), model, clips, tolerance=tolerance)
        spec = {**spec, "verification": {**checked, "clips": source}}
        if extend is not None:
            spec = extend(staging, spec)
        write_spec(staging, spec)
        ExportedModel.load(staging)  # the spec as written reads back
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return spec


def export_run(run: LoadedRun, out: str | Path, *, fmt: str = "onnx", video: str | Path | None = None,
               tolerance: float = TOLERANCE, quantize: str | None = None, calibration_clips: int = 32,
               latency_repeats: int = 50) -> dict:
    """Export ``run`` to ``out`` (which must not exist) and return its spec.

    ``quantize="int8"`` (ONNX only) adds ``model.int8.onnx``, statically quantised on
    ``calibration_clips`` validation clips, with its measured accuracy change and speed-up in
    the spec (:mod:`videocls.engine.quantize`); the spec's ``precision`` is then ``int8``.
    """
    if fmt not in ("onnx", "torch_export"):
        raise ValueError(f"--format {fmt!r}: use onnx or torch_export")
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize {quantize!r}: only int8 is supported")
    if quantize and fmt != "onnx":
        raise ValueError("--quantize int8 is for --format onnx (onnxruntime's static quantiser)")
    check_out(Path(out))
    extend = None
    if quantize:
        def extend(staging: Path, spec: dict) -> dict:
            return quantize_export(run, staging, spec, calibration_clips=calibration_clips,
                                   latency_repeats=latency_repeats)

    clips = validation_clips(run, 2, video=video)
    return export_model(run.model, clips, out, spec=build_spec(run, batch_of(clips), fmt=fmt),
                        tolerance=tolerance, source=f"--video {video}" if video else run.data.val_list,
                        extend=extend)


def format_export(spec: dict, out: str | Path) -> str:
    """What the tool prints: the verification and, with INT8, the measured comparison."""
    v = spec["verification"]
    lines = [f"exported {spec['model']} ({spec['format']}) to {out}",
             f"  checked on real clips ({v['clips']}), batch {' and '.join(map(str, v['batch_sizes']))}: "
             f"max |logit difference| {v['max_abs_diff']:.2e} <= {v['tolerance']:g}"]
    q = spec.get("quantization")
    if q:
        lines.append(format_quantization(q))
    return "\n".join(lines)
