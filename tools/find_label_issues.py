"""Rank the videos whose given label is likely wrong (confident learning, cleanlab).

    python tools/find_label_issues.py feats/train.npz --out issues/
    python tools/find_label_issues.py feats/train.npz --out issues/ --noise-file data/noisy/train_noise.csv

Out-of-sample probabilities come from a linear probe (tools/linear_probe.py's) under --folds-fold
cross-validation on the features; cleanlab.filter.find_label_issues flags the videos. Writes
issues/label_issues.csv (video,given_label,suggested_label,score,given_name,suggested_name;
worst first: score is the out-of-sample probability of the given label) and
issues/label_issues_summary.json (estimated noise rate per class). --noise-file (the
train_noise.csv of tools/make_dataset.py --label-noise) also reports precision and recall of the
flagged videos against the truly flipped ones.
"""

import argparse
import sys

from videocls.engine.label_issues import FILTERS, find_issues


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("features", help="features file of tools/extract_features.py (labels as given)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=1.0, help="the probe's inverse L2 regularisation strength")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--filter-by",
        choices=FILTERS,
        default="prune_by_noise_rate",
        help="cleanlab's rule for which videos to flag",
    )
    parser.add_argument("--noise-file", help="train_noise.csv listing the truly flipped videos")
    args = parser.parse_args()
    find_issues(
        args.features,
        args.out,
        folds=args.folds,
        C=args.C,
        seed=args.seed,
        noise_file=args.noise_file,
        filter_by=args.filter_by,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
