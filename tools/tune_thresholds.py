"""Tune decision thresholds of a checkpoint on its validation split and store them beside it.

    # single-label: abstain below p, for a wrong answer costing 10x an abstention
    python tools/tune_thresholds.py outputs/demo/<run> --cost-error 10 --cost-abstain 1 --holdout 0.5
    python tools/tune_thresholds.py outputs/demo/<run> --target-accuracy 0.99
    # one threshold per class: multi-label data, or each class of single-label data as a detector
    python tools/tune_thresholds.py RUN --kind multilabel --objective f1
    python tools/tune_thresholds.py RUN --kind one_vs_rest --cost-fp 1 --cost-fn costs.csv

The validation split is scored with the test protocol (test.num_clips x test.num_crops,
test.aggregation; the checkpoint's temperature when tools/calibrate.py stored one). Kinds:
abstain (default for single-label data: answer only when the top probability is >= p; prints
the coverage/accuracy curve's chosen point, the whole curve is in the file), multilabel (default
for multi-label lists) and one_vs_rest: per class, score >= threshold, maximising F1
(--objective f1) or minimising cost_fp x FP + cost_fn x FN (--objective cost; --cost-fp/--cost-fn
a number or a file of `class,cost` lines). The result goes to <checkpoint stem>.thresholds.json,
tied to the checkpoint's sha256. --holdout F first tunes on 1-F of the videos and reports the
cost on the other F, tuned vs the plain argmax / 0.5 rule. The last line printed is
`thresholds: <path>`.
"""

import argparse
import sys

from videocls.engine.tester import tune_thresholds_checkpoint
from videocls.engine.thresholds import KINDS, format_record


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    parser.add_argument("--kind", choices=KINDS, help="default: abstain (single-label) or multilabel")
    parser.add_argument("--objective", choices=("cost", "f1"), default="cost")
    parser.add_argument(
        "--cost-fp", default="1", help="cost of a false positive: a number or a class,cost file"
    )
    parser.add_argument(
        "--cost-fn", default="1", help="cost of a false negative: a number or a class,cost file"
    )
    parser.add_argument("--cost-error", type=float, help="abstain: cost of a wrong answer")
    parser.add_argument("--cost-abstain", type=float, help="abstain: cost of not answering")
    parser.add_argument("--target-accuracy", type=float, help="abstain: the lowest p whose answers reach it")
    parser.add_argument("--holdout", type=float, help="also tune on 1-F and report the cost on F held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_intermixed_args()
    record = tune_thresholds_checkpoint(
        args.target,
        args.overrides,
        holdout=args.holdout,
        seed=args.seed,
        kind=args.kind,
        objective=args.objective,
        cost_fp=args.cost_fp,
        cost_fn=args.cost_fn,
        cost_error=args.cost_error,
        cost_abstain=args.cost_abstain,
        target_accuracy=args.target_accuracy,
    )
    if record is not None:
        print(format_record(record))
        print(f"thresholds: {record['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
