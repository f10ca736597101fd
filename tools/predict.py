"""Classify video files: top-k labels per video, and optionally a timeline over windows.

    python tools/predict.py ../shared/real-videos/g1.avi --model i3d_inception_v1 \
        --weights ../shared/weights/i3d-kinetics-400.ckpt --classes ../shared/weights/kinetics400_classes.txt
    python tools/predict.py video.mp4 --weights outputs/demo/<run> --classes data/synthetic/classes.txt
    python tools/predict.py ../shared/real-videos/ --weights outputs/demo/<run>/checkpoints/last.pt

A folder stands for the video files in it (by extension, subfolders included, sorted; other
files are ignored); a folder with no video file is read as one video stored as frame images.

A videocls training checkpoint (or a run directory: its checkpoints/last.pt) carries its
config: it is rebuilt as tools/test.py rebuilds it (nothing the stored config names is
executed; the EMA weights when the run trained with EMA), --model is only needed for other
checkpoints, and its views are made as its run tested them (frames, sampling, test short side
and crop, normalisation) unless the options below say otherwise; other checkpoints use the
model's registry defaults. --classes must list one name per model output: a class count that
differs from the checkpoint's classifier (or an empty file) is an error naming both, never a
randomly initialised classifier. A temperature stored by tools/calibrate.py beside the checkpoint
scales the probabilities, and thresholds stored by tools/tune_thresholds.py add a decision
per video (a class, "abstain", or the classes over their thresholds); --no-calibration
ignores both. Stderr says which views and
temperature are used.

A file that cannot be decoded gets an error line (or {"video", "error"} with --json) and the
other files are still classified; the exit status is 1 if any file failed.

Live video (videocls/engine/stream.py): --stream SOURCE classifies a file played at its own
frame rate (--speed plays it faster), a camera (/dev/video0, or 0) or an RTSP/HTTP URL, one
decision every --stride seconds over the last --window seconds (default: one clip of the
model), printed as it is made (--jsonl: a JSON object a line), then the measured latency
(frame arrival to decision, p50/p95), the frames dropped and whether it kept up:

    python tools/predict.py --stream ../shared/real-videos/bikes.mp4 --weights outputs/demo/<run> \
        --window 2 --stride 0.5
    python tools/predict.py --stream rtsp://camera/stream --exported exports/demo --jsonl

--exported DIR runs a tools/export.py directory (its spec.json gives the views, classes,
temperature and thresholds; --precision int8 its INT8 graph) instead of --weights.
"""

import argparse
import json
import sys

import torch

from videocls.data.io.access import VideoDecodeError
from videocls.engine.predictor import expand_video_paths, load_exported_predictor, load_predictor
from videocls.engine.stream import stream_predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", help="video files or folders of them")
    parser.add_argument("--model", help="registered model name (see videocls.list_models())")
    parser.add_argument("--weights",
                        help="checkpoint or run directory (a videocls run, or any format create_model reads)")
    parser.add_argument("--exported", help="an export directory (tools/export.py) instead of --weights")
    parser.add_argument("--precision", choices=("fp32", "int8"), help="which graph of --exported")
    parser.add_argument("--classes", help="class names, one per line, in output order")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--num-clips", type=int,
                        help="temporal views per video or window (default 3; a stream: as many as cover it)")
    parser.add_argument("--num-crops", type=int, default=3, choices=(1, 3), help="spatial views")
    parser.add_argument("--num-frames", type=int, help="frames per clip")
    parser.add_argument("--sampling-rate", type=int, help="frame stride of a clip (clip sampling)")
    parser.add_argument("--sampling-mode", choices=("clip", "segment"), help="dense clips or TSN segments")
    parser.add_argument("--short-side", type=int, help="resize the short side to this before cropping")
    parser.add_argument("--crop", type=int, help="crop size")
    parser.add_argument("--pad", choices=("repeat", "loop"), help="for videos shorter than a clip")
    parser.add_argument("--no-calibration", action="store_true",
                        help="ignore a temperature (tools/calibrate.py) and thresholds "
                             "(tools/tune_thresholds.py) stored beside the checkpoint")
    parser.add_argument("--window", type=float, help="seconds: also classify sliding windows (a timeline)")
    parser.add_argument("--stride", type=float, help="seconds between windows (default: --window)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    parser.add_argument("--stream", metavar="SOURCE", help="classify a live source (file, camera, URL)")
    parser.add_argument("--speed", type=float, default=1.0, help="--stream of a file: playback speed factor")
    parser.add_argument("--duration", type=float, help="--stream: stop after this many source seconds")
    parser.add_argument("--jsonl", action="store_true", help="--stream: one JSON object a line")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if (args.weights is None) == (args.exported is None):
        parser.error("give --weights (a checkpoint or run) or --exported (an export directory)")
    if bool(args.videos) == bool(args.stream):
        parser.error("give video files, or --stream SOURCE")

    views = {"num_frames": args.num_frames, "sampling_rate": args.sampling_rate,
             "sampling_mode": args.sampling_mode, "short_side": args.short_side, "crop_size": args.crop,
             "pad": args.pad}
    num_clips = args.num_clips or 3
    num_crops = 1 if args.stream else args.num_crops  # a stream decides on the centre crop
    try:
        if args.exported:
            predictor = load_exported_predictor(args.exported, precision=args.precision, num_clips=num_clips,
                                                num_crops=num_crops, calibrated=not args.no_calibration,
                                                **views)
        else:
            predictor = load_predictor(args.weights, args.model, args.classes, num_clips=num_clips,
                                       num_crops=num_crops, device=args.device,
                                       calibrated=not args.no_calibration, **views)
    except (ValueError, KeyError, FileNotFoundError) as error:  # bad weights, model name or class list
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(predictor.describe(), file=sys.stderr)
    if args.stream:
        try:
            stream_predictions(predictor, args.stream, jsonl=args.jsonl, window=args.window,
                               stride=args.stride, num_clips=args.num_clips, speed=args.speed,
                               topk=args.topk, max_seconds=args.duration)
        except ValueError as error:  # a window the model cannot use
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (VideoDecodeError, OSError) as error:
            print(f"error: {args.stream}: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        return 0
    results, failed = [], 0
    for video in expand_video_paths(args.videos):
        try:
            result = predictor.predict(video, topk=args.topk, window=args.window, stride=args.stride)
        except (VideoDecodeError, OSError, ValueError, IndexError) as error:
            failed += 1
            result = {"video": video, "error": f"{type(error).__name__}: {error}"}
        results.append(result)
        if not args.json:
            print(_text(result), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _text(result: dict) -> str:
    if "error" in result:
        return f"{result['video']}: ERROR {result['error']}"
    lines = [result["video"]] + [f"  {p['prob']:.3f}  {p['label']}" for p in result["topk"]]
    if "decision" in result:
        decision = result["decision"]
        lines.append(f"  decision: {'abstain' if decision is None else decision}")
    for w in result["windows"]:
        best = w["topk"][0]
        lines.append(f"  [{w['start']:7.2f}s - {w['end']:7.2f}s]  {best['prob']:.3f}  {best['label']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
