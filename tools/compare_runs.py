"""Compare finished runs side by side: `python tools/compare_runs.py RUN_DIR... [--metrics a,b]`.

Prints the chosen metrics (last logged value, or results.json) and every config value that
differs between the runs, e.g. for the members of a `tools/train.py -m` sweep. Runs that differ
only in the seed (`trainer.seed=0,1,2` in the sweep) share a column: `mean +- std (n)` over
the seeds (`--no-group-seeds` shows every run on its own).

    python tools/train.py -m experiment=demo model=c2d_r50,i3d_r50 trainer.seed=0,1,2
    python tools/compare_runs.py multirun/demo/<date>/*
"""

import argparse

from videocls.engine.runs import compare_table

DEFAULT_METRICS = (
    "video/top1,video/top5,video/mean_class_acc,clip/top1,train/loss,train_minutes,train_cpu_minutes"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories written by tools/train.py")
    parser.add_argument("--metrics", default=DEFAULT_METRICS,
                        help=f"comma-separated (default {DEFAULT_METRICS})")
    parser.add_argument("--no-group-seeds", action="store_true",
                        help="one column per run, even for repeated seeds")
    args = parser.parse_args()
    print(compare_table(args.runs, [m for m in args.metrics.split(",") if m],
                        group_seeds=not args.no_group_seeds))


if __name__ == "__main__":
    main()
