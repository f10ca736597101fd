"""Throughput benchmarks against pytorchvideo (method and numbers: docs/PERFORMANCE.md).

    python tools/benchmark.py model --model i3d_r50 --batch-size 8 --precision bf16 --channels-last
    python tools/benchmark.py data --workers 1 --frames 8 --rate 8          # ../shared/real-videos
    python tools/benchmark.py data --videos /data/k400/val --workers 8 --clips 2000
    python tools/benchmark.py pipeline data=kinetics400 data.root=/data/k400 model=i3d_r50 \
        data.num_workers=8 trainer.precision=bf16 --steps 50

    python tools/benchmark.py latency --model i3d_r50 slowfast_r50 --size demo
    python tools/benchmark.py latency --model i3d_r50 --size demo --onnx exports/demo --int8

`latency` times one clip at batch 1 (p50/p95 ms and sustained decisions/s, what a live
stream is sized by) for fp32, bf16 (fp16 too on CUDA) and, with --onnx DIR (a tools/export.py
directory of the same model and size), its fp32 and --int8 graphs through onnxruntime.
Full-size models on a CPU take seconds a clip: use few --repeats.

`pipeline` runs real training steps of the composed config (any tools/train.py overrides),
fed first by its loader and then by the same batches held in memory, and prints both clips/s,
their ratio and the fraction of time spent waiting for data: size data.num_workers (and the
cores per GPU) until the ratio is near 1 before booking a cluster.
"""

import argparse
from pathlib import Path

import torch

from videocls.engine.benchmark import benchmark_data, benchmark_model, benchmark_pipeline, readable_videos
from videocls.engine.latency import Latency, benchmark_latency
from videocls.engine.runtime import Runtime

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "real-videos"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _print(results, what: str) -> None:
    print(f"{what:<28} {'clips/s':>10} {'peak MiB':>10}")
    for result in results:
        print(result.row())
    base = results[0].clips_per_s
    for other in results[1:]:
        print(f"ratio {results[0].name} / {other.name}: {base / other.clips_per_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    model = sub.add_parser("model", help="forward + backward + SGD step of one model vs pytorchvideo's")
    model.add_argument("--model", nargs="+", required=True, help="registered model name(s)")
    model.add_argument("--batch-size", type=int, default=8)
    model.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    model.add_argument("--precision", choices=["32", "bf16", "16"], default="32")
    model.add_argument("--channels-last", action="store_true", help="channels_last_3d for both models")
    model.add_argument("--steps", type=int, default=20)
    model.add_argument("--warmup", type=int, default=5)
    model.add_argument("--no-reference", action="store_true", help="skip the pytorchvideo model")
    data = sub.add_parser("data", help="decode + sample + augment + collate vs pytorchvideo and decode-only")
    data.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of video files")
    data.add_argument("--frames", type=int, default=8)
    data.add_argument("--rate", type=int, default=8, help="sampling rate (8x8: --frames 8 --rate 8)")
    data.add_argument("--crop", type=int, default=224)
    data.add_argument("--workers", type=int, default=1)
    data.add_argument("--clips", type=int, default=200, help="clips timed per pipeline")
    data.add_argument("--decord-only", action="store_true", help="only files decord serves frame-accurately")
    data.add_argument("--no-reference", action="store_true", help="skip the pytorchvideo pipeline")
    pipeline = sub.add_parser("pipeline", help="training steps fed by the loader vs by batches in memory")
    pipeline.add_argument("overrides", nargs="*",
                          help="tools/train.py overrides (model=..., data.num_workers=...)")
    pipeline.add_argument("--steps", type=int, default=20)
    pipeline.add_argument("--warmup", type=int, default=3)
    pipeline.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    latency = sub.add_parser("latency", help="batch-1 decision latency: torch precisions and exports")
    latency.add_argument("--model", nargs="+", required=True, help="registered model name(s)")
    latency.add_argument("--size", choices=("full", "demo"), default="full")
    latency.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    latency.add_argument("--precision", nargs="+", choices=["32", "bf16", "16"],
                         help="autocast precisions (default: 32 and bf16; on CUDA 16 too)")
    latency.add_argument("--onnx", type=Path, help="an export directory of the model (tools/export.py)")
    latency.add_argument("--int8", action="store_true", help="also the export's INT8 graph")
    latency.add_argument("--repeats", type=int, default=20)
    latency.add_argument("--warmup", type=int, default=3)
    latency.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime alike")
    args = parser.parse_args()

    if args.what == "latency":
        if args.int8 and args.onnx is None:
            parser.error("--int8 times the INT8 graph of an export: give --onnx DIR")
        if args.repeats < 1 or args.warmup < 0:
            parser.error(f"--repeats must be >= 1 and --warmup >= 0 (got {args.repeats}, {args.warmup})")
        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"# batch 1, {args.repeats} timed calls after {args.warmup}, {torch.get_num_threads()} "
              f"CPU thread(s), device {args.device}")
        print(Latency.header())
        for name in args.model:
            results = benchmark_latency(name, size=args.size, device=args.device, precisions=args.precision,
                                        export_dir=args.onnx, int8=args.int8, repeats=args.repeats,
                                        warmup=args.warmup, threads=args.threads)
            for result in results:
                print(result.row(), flush=True)
            for other in results[1:]:
                print(f"speed-up {other.name} over {results[0].name}: "
                      f"{results[0].p50_ms / other.p50_ms:.2f}x (p50)")
        return

    if args.what == "pipeline":
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=args.overrides)
        result = benchmark_pipeline(cfg, steps=args.steps, warmup=args.warmup, device=args.device)
        print(f"# {cfg.model.name}, batch {cfg.data.batch_size}, {cfg.data.num_workers} worker(s), "
              f"{args.steps} timed steps, device {args.device}")
        print(result.report())
        return

    if args.what == "model":
        runtime = Runtime(torch.device(args.device), precision=args.precision,
                          channels_last=args.channels_last)
        for name in args.model:
            results = benchmark_model(name, batch_size=args.batch_size, runtime=runtime, steps=args.steps,
                                      warmup=args.warmup, reference=not args.no_reference)
            print(f"# {name}: batch {args.batch_size}, precision {args.precision}, device {args.device}"
                  f"{', channels_last_3d' if args.channels_last else ''}")
            _print(results, "model")
        return
    paths, left_out = readable_videos(args.videos, args.decord_only)
    for line in left_out:
        print(f"left out {line}")
    results = benchmark_data(paths, num_frames=args.frames, sampling_rate=args.rate, crop_size=args.crop,
                             num_workers=args.workers, num_clips=args.clips, reference=not args.no_reference)
    print(f"# {len(paths)} files from {args.videos}, {args.frames}x{args.rate} sampling, {args.crop} crops, "
          f"{args.workers} worker(s), {args.clips} clips each")
    _print(results, "pipeline")


if __name__ == "__main__":
    main()
