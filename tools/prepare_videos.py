"""Re-encode a video dataset to H.264 MP4 with short GOPs, a fixed frame rate and short side.

    python tools/prepare_videos.py /data/k400/raw /data/k400/320p --short-side 320 --fps 30 -j 16
    python tools/prepare_videos.py /data/k400/raw /data/k400/fast --format fast -j 16

``--format`` picks a named set of settings (``standard``: short side 320, GOP 16; ``fast``:
all-intra at short side 256 with x264 ``tune=fastdecode``, the least CPU per training clip
for more bytes, see docs/PERFORMANCE.md); options given beside it override its values.
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
from dataclasses import fields, replace

from videocls.data.prepare import FAILURES_FILE, FORMATS, X264_PRESETS, X264_TUNES, prepare_videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src_dir", help="folder searched recursively for videos")
    parser.add_argument("dst_dir", help="output folder (created)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="standard",
                        help="named settings that the options below override (default: standard)")
    parser.add_argument("--short-side", type=int, help="short side in pixels, never upscaled (standard: 320)")
    parser.add_argument("--fps", type=float, help="output frame rate (standard: 30)")
    parser.add_argument("--gop", type=int, help="frames from one keyframe to the next (standard: 16)")
    parser.add_argument("--crf", type=int, help="x264 constant rate factor (standard: 23)")
    parser.add_argument("--preset", choices=X264_PRESETS, metavar="PRESET",
                        help=f"x264 preset: {', '.join(X264_PRESETS)} (standard: medium)")
    parser.add_argument("--tune", choices=X264_TUNES, metavar="TUNE",
                        help=f"x264 tune: {', '.join(X264_TUNES)} (standard: none)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        given = {f.name: getattr(args, f.name) for f in fields(FORMATS[args.format])}
        settings = replace(FORMATS[args.format], **{k: v for k, v in given.items() if v is not None})
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
