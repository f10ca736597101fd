"""Export a checkpoint to a verified ONNX or torch.export artefact, optionally INT8.

    python tools/export.py outputs/demo/<run> --format onnx --out exports/demo-i3d
    python tools/export.py outputs/demo/<run> --format onnx --quantize int8 --out exports/demo-i3d-int8
    python tools/export.py I3D_8x8_R50.pyth model=i3d_r50 data=kinetics400 --video clip.mp4 --out exports/i3d

CHECKPOINT is a run directory (its checkpoints/last.pt) or a checkpoint, read as tools/test.py
reads it (nothing it names is executed; KEY=VALUE overrides on a run's stored config, or the
Hydra overrides describing other weights). --out DIR must not exist; it gets the graph with
its weights (model.onnx or model.pt2) and spec.json: frames, sampling, crop, mean/std, input
layout, class names, and the temperature and thresholds stored beside the checkpoint.

The export is checked on real clips (the run's validation videos, or --video FILE) at batch
1 and 2 against PyTorch and refused, with nothing written, when a logit differs by more than
--tolerance (1e-4). --quantize int8 adds model.int8.onnx (onnxruntime static quantisation,
calibrated on --calibration-clips validation clips), measures video top-1 of fp32 and INT8 on
the validation split with the test protocol, and their batch-1 latency side by side; both go
into spec.json and are printed. Run videocls.engine.exported.ExportedModel.load(DIR) to use it.
"""

import argparse
import sys

from videocls.engine.export import TOLERANCE, ExportMismatch, export_run, format_export
from videocls.engine.run_loading import load_run_or_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="CHECKPOINT", help="a run directory or a checkpoint")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torch_export"))
    parser.add_argument("--out", required=True, help="the export directory to create")
    parser.add_argument("--video", help="a real video to check the export on (default: the validation set)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest |logit difference| accepted against PyTorch (fp32)")
    parser.add_argument("--quantize", choices=("int8",))
    parser.add_argument("--calibration-clips", type=int, default=32)
    parser.add_argument("--latency-repeats", type=int, default=50)
    args = parser.parse_args(argv)

    try:
        run = load_run_or_weights(args.target, args.overrides)
        spec = export_run(run, args.out, fmt=args.format, video=args.video, tolerance=args.tolerance,
                          quantize=args.quantize, calibration_clips=args.calibration_clips,
                          latency_repeats=args.latency_repeats)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ExportMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_export(spec, args.out))
    print(f"export: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
