"""INT8 static quantisation of an ONNX export, with its measured accuracy change and speed-up.

``tools/export.py --quantize int8`` writes ``model.int8.onnx`` beside the verified fp32 graph:
onnxruntime's ``quantize_static`` in QDQ format (int8 weights per output channel, int8
activations, MinMax ranges) calibrated on real validation clips, one per video, spread over
the validation list. onnxruntime fuses the QDQ pairs into ``QLinearConv``/``QGemm`` kernels (3D
convolutions included) when it loads the graph. The calibration only sets activation ranges
(no labels are used), but the clips come from the split the accuracy is then measured on.

Why onnxruntime and not torchao: torchao is not in the lock, and its CPU INT8 path targets
linear layers (``int8_dynamic_activation_int8_weight``); the video models are mostly Conv3d,
which onnxruntime quantises statically. Int8 rather than uint8 activations by measurement
(AVX-512 VNNI CPU, demo I3D, batch 1, one thread): uint8 ran 0.2-0.45x the fp32 speed, int8
0.9-1.0x. The demo model's convolutions have 8-64 channels, too few for the INT8 kernels to
pay; the full-width I3D-R50 (8 x 112 x 112) ran 1.9x faster in INT8 (uint8 activations,
one thread). The speed-up is measured, never assumed (:func:`measure_latency`).

Two numbers go into ``spec.json["quantization"]`` and are printed:

* accuracy: video top-1 (and clip top-1) of the fp32 and the INT8 graph on the validation
  split with the run's test protocol (views, aggregation: :func:`videocls.engine.tester.
  evaluate_protocol`), the same views for both;
* speed: batch-1 latency of both graphs on one real clip, measured in the same process,
  alternating fp32 and INT8 call by call so that load from other processes falls on both
  alike; the speed-up is the median of the per-pair ratios, with its 5th-95th percentile
  range. Without a measurement (``latency_repeats=0``) the spec says ``"speedup": null``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import nn

from videocls.engine.export_clips import batch_of, input_names, validation_clips
from videocls.engine.exported import GRAPH_FILES, ExportedModel, write_spec
from videocls.engine.latency import summary_ms, time_calls

WARMUP = 5


def quantize_onnx(fp32: Path, int8: Path, calibration: list, names: list[str]) -> None:
    """Static INT8 of ``fp32`` into ``int8``, activation ranges from ``calibration`` (clips as the
    model takes them, each run at batch 1)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Clips(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict | None:
            clip = next(self.items, None)
            if clip is None:
                return None
            tensors = clip if isinstance(clip, (list, tuple)) else [clip]
            return {name: t[None].numpy() for name, t in zip(names, tensors)}

    quantize_static(str(fp32), str(int8), Clips(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def measure_latency(models: dict[str, ExportedModel], inputs, *, repeats: int, warmup: int = WARMUP) -> dict:
    """Batch-1 latency of every model on ``inputs``, calls interleaved model by model
    (:func:`videocls.engine.latency.time_calls`, the one timing loop).

    Returns ``{name: {"p50_ms", "p95_ms", "mean_ms"}}`` plus ``repeats``; with exactly two
    models, ``speedup`` (first / second, the median per-pair ratio) and ``speedup_p5_p95``.
    """
    timed = time_calls({name: (lambda m=model: m(inputs)) for name, model in models.items()},
                       repeats=repeats, warmup=warmup)
    result: dict = {name: summary_ms(t) for name, t in timed.seconds.items()}
    result["repeats"] = repeats
    if len(models) == 2:
        first, second = timed.seconds.values()
        ratios = first / second
        result["speedup"] = float(np.median(ratios))
        result["speedup_p5_p95"] = [float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))]
    return result


class _ExportedAsModule(nn.Module):
    """An exported model where the evaluator expects the PyTorch one (its normalisation and
    pathway ratio, asked by ``model_input``, are the PyTorch model's)."""

    def __init__(self, exported: ExportedModel, like: nn.Module) -> None:
        super().__init__()
        self.exported, self.default_config = exported, like.default_config
        if getattr(like, "alpha", None):
            self.alpha = like.alpha

    def forward(self, inputs):
        return self.exported(inputs)


def evaluate_exported(run, exported: ExportedModel) -> dict:
    """Clip and video top-1 of ``exported`` on ``run``'s validation split, its test protocol."""
    from videocls.engine.distributed import init_distributed, shutdown
    from videocls.engine.runtime import Runtime
    from videocls.engine.tester import evaluate_protocol

    env = init_distributed("cpu")
    try:
        runtime = Runtime.from_config(run.config.trainer, env.device)
        result, _ = evaluate_protocol(_ExportedAsModule(exported, run.model), run.data, run.config.test,
                                      runtime=runtime, env=env)
    finally:
        shutdown()
    return {"video_top1": result.video["top1"], "clip_top1": result.clip["top1"],
            "num_videos": result.num_videos, "num_views": result.num_views,
            "predictions": result.video_scores.argmax(1)}


def quantize_export(run, staging: Path, spec: dict, *, calibration_clips: int, latency_repeats: int) -> dict:
    """Add the INT8 graph to the verified fp32 export in ``staging`` and its measured numbers
    to ``spec`` (returned, ``precision`` now ``int8``)."""
    if calibration_clips < 1:
        raise ValueError("--calibration-clips must be at least 1")
    int8_name = GRAPH_FILES[("onnx", "int8")]
    clips = validation_clips(run, calibration_clips)
    quantize_onnx(staging / spec["graphs"]["fp32"], staging / int8_name, clips, input_names(run.model))
    spec = {**spec, "graphs": {**spec["graphs"], "int8": int8_name}}
    write_spec(staging, spec)
    fp32, int8 = ExportedModel.load(staging, precision="fp32"), ExportedModel.load(staging, precision="int8")
    accuracy = {"fp32": evaluate_exported(run, fp32), "int8": evaluate_exported(run, int8)}
    agreement = float((accuracy["fp32"].pop("predictions") == accuracy["int8"].pop("predictions"))
                      .double().mean())
    report = {
        "method": "onnxruntime quantize_static, QDQ, per-channel int8 weights, int8 activations, MinMax",
        "calibration": {"clips": len(clips), "source": str(run.data.val_list)},
        "accuracy": {**accuracy, "video_top1_change": accuracy["int8"]["video_top1"]
                     - accuracy["fp32"]["video_top1"], "video_agreement": agreement,
                     "split": str(run.data.val_list),
                     "protocol": {k: run.config.test[k] for k in ("num_clips", "num_crops", "aggregation")}},
        "latency": None, "speedup": None,
    }
    if latency_repeats > 0:
        inputs = batch_of(clips[:1])
        latency = measure_latency({"fp32": fp32, "int8": int8}, inputs, repeats=latency_repeats)
        report["speedup"] = latency.pop("speedup")
        report["latency"] = {**latency, "batch": 1, "cpu_threads": os.cpu_count(),
                             "runtime": "onnxruntime CPUExecutionProvider, default threads"}
    return {**spec, "precision": "int8", "quantization": report}


def format_quantization(report: dict) -> str:
    a = report["accuracy"]
    fp32, int8 = a["fp32"], a["int8"]
    lines = [f"  INT8 ({report['method']}; {report['calibration']['clips']} calibration clips)",
             f"  video top-1 on {a['split']} ({fp32['num_videos']} videos): fp32 {fp32['video_top1']:.4f}, "
             f"int8 {int8['video_top1']:.4f} (change {100 * a['video_top1_change']:+.1f} points; "
             f"same top class on {100 * a['video_agreement']:.0f}% of videos)"]
    if report["speedup"] is None:
        lines.append("  speed-up: not measured (--latency-repeats 0)")
    else:
        lat = report["latency"]
        lo, hi = lat["speedup_p5_p95"]
        verdict = "faster" if lo > 1 else "slower" if hi < 1 else "no clear difference"
        lines.append(f"  batch-1 latency over {lat['repeats']} alternating runs: "
                     f"fp32 p50 {lat['fp32']['p50_ms']:.2f} ms, int8 p50 {lat['int8']['p50_ms']:.2f} ms: "
                     f"{report['speedup']:.2f}x "
                     f"(5-95%: {lo:.2f}-{hi:.2f}x, {verdict})")
    return "\n".join(lines)
