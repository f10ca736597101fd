"""Check that every video of an annotation file decodes, before training finds out.

    python tools/validate_dataset.py train.csv --root /data/k400 -j 16 \\
        --report report.json --clean train.clean.csv

Each video is opened with the dataset's own reader and probed in a worker process with a
time limit; statuses (ok / unreadable / partial) are defined in ``videocls.data.validate``.
A partial video that lost at most max(--max-lost-frames, --max-lost-fraction x its frames)
frames (default: 2 frames or 1%) is kept: the reader serves the frames that decode.
``--clean`` writes the annotation file with the ok and kept videos, other lines byte for
byte; the report gives each video's status, lost frames and whether it is kept.
Prints "N videos: K ok, U unreadable, P partial (Q kept, R dropped)"; exits 0 once it has
run, whatever it found, and 2 when it cannot run (a missing or malformed annotation file,
or a --report/--clean path that is the input or cannot be written: refused before any
video is checked).
"""

from __future__ import annotations

import argparse
import os
import sys

from videocls.data.annotations import FORMATS, AnnotationError
from videocls.data.validate import MAX_LOST_FRACTION, MAX_LOST_FRAMES, summarize, validate_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("annotations", help="annotation file")
    parser.add_argument("--root", help="directory relative video paths are resolved against")
    parser.add_argument("--format", default="list", choices=FORMATS, help="annotation format (default: list)")
    parser.add_argument("--classes", help="class list: one name a line, or SSv2's labels.json")
    parser.add_argument("--file-template", help="path template of the kinetics_csv and ssv2 formats")
    parser.add_argument("--num-classes", type=int,
                        help="check every label against this class count (data.num_classes) first")
    parser.add_argument("--report", help="write a JSON report here")
    parser.add_argument("--clean", help="write the annotation file with only the kept videos here")
    parser.add_argument("--max-lost-frames", type=int, default=MAX_LOST_FRAMES,
                        help="a partial video losing at most this many frames is kept "
                        f"(default: {MAX_LOST_FRAMES})")
    parser.add_argument("--max-lost-fraction", type=float, default=MAX_LOST_FRACTION,
                        help="... or at most this fraction of its frames, whichever allows more "
                        f"(default: {MAX_LOST_FRACTION})")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per video (default: 60)")
    args = parser.parse_args(argv)

    format_kwargs = {"file_template": args.file_template} if args.file_template else {}
    try:
        results = validate_dataset(
            args.annotations,
            args.format,
            root=args.root,
            classes=args.classes,
            jobs=args.jobs,
            timeout=args.timeout,
            report=args.report,
            clean=args.clean,
            progress=sys.stderr.isatty(),
            max_lost_frames=args.max_lost_frames,
            max_lost_fraction=args.max_lost_fraction,
            num_classes=args.num_classes,
            **format_kwargs,
        )
    except (AnnotationError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for record, check, kept in results:
        if check.status != "ok":
            lost = "?" if check.lost_frames is None else check.lost_frames
            verdict = f"kept, {lost} frame(s) lost" if kept else f"dropped, {lost} frame(s) lost"
            if check.status == "unreadable":
                verdict = "dropped"
            print(f"{check.status:>10}  {record.path}: {check.reason} ({verdict})")
    print(summarize([check for _, check, _ in results], [kept for _, _, kept in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
