"""Fit a logistic-regression probe on extracted features and score it like tools/test.py.

    python tools/linear_probe.py feats/train.npz --val feats/val.npz --out probe-run/
    python tools/linear_probe.py feats/train.npz --holdout 0.2 --out probe-run/ --C 0.5

Standardised features, multinomial logistic regression (scikit-learn, L-BFGS, L2 strength 1/C).
Held out: --val (another features file of the same model) or a stratified --holdout fraction of
the training videos. Writes results.json (video top1 / top5 / mean_class_acc, the keys of
tools/test.py), predictions.csv, per_class.csv and probe.npz. The last line printed is
`results: <path>`.
"""

import argparse
import sys

from videocls.engine.probe import run_probe


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("train", help="features of the training videos (tools/extract_features.py)")
    parser.add_argument("--val", help="features of held-out videos; default: --holdout of the training ones")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()
    summary = run_probe(args.train, args.out, val=args.val, holdout=args.holdout, C=args.C, seed=args.seed)
    print(f"results: {summary['results_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
