"""Check that every video of an annotation file decodes, before training finds out.

    python tools/validate_dataset.py train.csv --root /data/k400 -j 16 \\
        --report report.json --clean train.clean.csv

Each video is opened with the dataset's own reader and probed in a worker process with a
time limit; statuses (ok / unreadable / partial) are defined in ``videocls.data.validate``.
``--clean`` writes the annotation file with only the ok videos, other lines byte for byte.
Prints "N videos: K ok, U unreadable, P partial"; exits 0 once it has run, whatever it
found, and 2 when it cannot run (a missing or malformed annotation file).
"""

from __future__ import annotations

import argparse
import os
import sys

from videocls.data.annotations import FORMATS, AnnotationError
from videocls.data.validate import summarize, validate_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("annotations", help="annotation file")
    parser.add_argument("--root", help="directory relative video paths are resolved against")
    parser.add_argument("--format", default="list", choices=FORMATS, help="annotation format (default: list)")
    parser.add_argument("--classes", help="class list: one name a line, or SSv2's labels.json")
    parser.add_argument("--file-template", help="path template of the kinetics_csv and ssv2 formats")
    parser.add_argument("--report", help="write a JSON report here")
    parser.add_argument("--clean", help="write the annotation file with only the ok videos here")
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
            **format_kwargs,
        )
    except (AnnotationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for record, check in results:
        if check.status != "ok":
            print(f"{check.status:>10}  {record.path}: {check.reason}")
    print(summarize([check for _, check in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
