"""Re-encode a video dataset to H.264 MP4 with short GOPs, a fixed frame rate and short side.

    python tools/prepare_videos.py /data/k400/raw /data/k400/320p --short-side 320 --fps 30 -j 16

Keeps relative paths (extension -> .mp4), never upscales, skips outputs that already read
back, and lists the sources it could not prepare in DST_DIR/failures.tsv (details in
``videocls.data.prepare``). Settings are checked before any work: an unknown --preset (not
one of libx264's) is refused with the valid names. Exits 0 once it has run, whatever failed,
and 2 when SRC_DIR does not exist or an option is invalid.
"""

from __future__ import annotations

import argparse
import os
import sys

from videocls.data.prepare import FAILURES_FILE, X264_PRESETS, EncodeSettings, prepare_videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src_dir", help="folder searched recursively for videos")
    parser.add_argument("dst_dir", help="output folder (created)")
    parser.add_argument(
        "--short-side", type=int, default=320, help="short side in pixels, never upscaled (default: 320)"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="output frame rate (default: 30)")
    parser.add_argument(
        "--gop", type=int, default=16, help="frames from one keyframe to the next (default: 16)"
    )
    parser.add_argument("--crf", type=int, default=23, help="x264 constant rate factor (default: 23)")
    parser.add_argument("--preset", default="medium", choices=X264_PRESETS, metavar="PRESET",
                        help=f"x264 preset: {', '.join(X264_PRESETS)} (default: medium)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        settings = EncodeSettings(args.short_side, args.fps, args.gop, args.crf, args.preset)
    except ValueError as error:
        parser.error(str(error))
    try:
        counts = prepare_videos(
            args.src_dir, args.dst_dir, settings, jobs=args.jobs, progress=sys.stderr.isatty()
        )
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    total = sum(counts.values())
    print(
        f"{total} videos: {counts['encoded']} encoded, {counts['skipped']} already done, "
        f"{counts['failed']} failed (see {os.path.join(args.dst_dir, FAILURES_FILE)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
