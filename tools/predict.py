"""Classify video files: top-k labels per video, and optionally a timeline over windows.

    python tools/predict.py ../shared/real-videos/g1.avi --model i3d_inception_v1 \
        --weights ../shared/weights/i3d-kinetics-400.ckpt --classes ../shared/weights/kinetics400_classes.txt
    python tools/predict.py video.mp4 --weights outputs/demo/<run>/checkpoints/last.pt --classes data/synthetic/classes.txt

A videocls training checkpoint carries its model config, so --model is only needed for other
checkpoints. A file that cannot be decoded gets an error line (or {"video", "error"} with
--json) and the other files are still classified; the exit status is 1 if any file failed.
"""

import argparse
import json
import sys

import torch

from videocls.data.annotations import read_classes
from videocls.data.video_io import VideoDecodeError
from videocls.engine.predictor import VideoPredictor, default_class_names, load_model_for_inference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--model", help="registered model name (see videocls.list_models())")
    parser.add_argument("--weights", required=True, help="checkpoint path (any format create_model reads)")
    parser.add_argument("--classes", help="class names, one per line, in output order")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--num-clips", type=int, default=3, help="temporal views per video (or window)")
    parser.add_argument("--num-crops", type=int, default=3, choices=(1, 3), help="spatial views")
    parser.add_argument("--pad", default="repeat", choices=("repeat", "loop"), help="for videos shorter than a clip")
    parser.add_argument("--window", type=float, help="seconds: also classify sliding windows (a timeline)")
    parser.add_argument("--stride", type=float, help="seconds between windows (default: --window)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    class_names = read_classes(args.classes) if args.classes else None
    model = load_model_for_inference(args.weights, args.model, len(class_names) if class_names else None)
    predictor = VideoPredictor(model, class_names or default_class_names(model), args.num_clips, args.num_crops,
                               args.pad, args.device)
    results, failed = [], 0
    for video in args.videos:
        try:
            result = predictor.predict(video, args.topk, args.window, args.stride)
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
    for w in result["windows"]:
        best = w["topk"][0]
        lines.append(f"  [{w['start']:7.2f}s - {w['end']:7.2f}s]  {best['prob']:.3f}  {best['label']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
