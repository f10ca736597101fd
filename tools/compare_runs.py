"""Compare finished runs side by side: `python tools/compare_runs.py RUN_DIR... [--metrics a,b]`.

Prints the chosen metrics (last logged value, or results.json) and every config value that
differs between the runs, e.g. for the members of a `tools/train.py -m` sweep.
"""

import argparse

from videocls.engine.runs import compare_table

DEFAULT_METRICS = "video/top1,video/top5,video/mean_class_acc,clip/top1,train/loss"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories written by tools/train.py")
    parser.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated (default {DEFAULT_METRICS})")
    args = parser.parse_args()
    print(compare_table(args.runs, [m for m in args.metrics.split(",") if m]))


if __name__ == "__main__":
    main()
