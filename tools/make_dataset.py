"""Generate the built-in synthetic action dataset (see ``videocls.data.synthetic``).

    python tools/make_dataset.py --out data/synthetic --seed 0
    python tools/make_dataset.py --out data/synthetic-noisy --train-per-class 64 --label-noise 0.1
    python tools/make_dataset.py --out data/synthetic-lt --train-per-class 64 --imbalance 10

--label-noise P flips round(P x N) training labels, chosen from the seed alone, each to another
class drawn uniformly, and lists them in train_noise.csv (path,true_label,given_label): the
ground truth for tools/find_label_issues.py. --imbalance R keeps a long-tailed training split
(class c keeps train_per_class x R^(-c/9) videos, the last class 1/R of the first). The
validation split is never changed.
"""

from __future__ import annotations

import argparse
import time

from videocls.data.synthetic import generate_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="dataset directory; reused if already complete")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--label-noise", type=float, default=0.0, metavar="P",
                        help="fraction of training labels to flip, recorded in train_noise.csv")
    parser.add_argument("--imbalance", type=float, default=1.0, metavar="RATIO",
                        help="largest / smallest training class (long-tailed); 1 = balanced")
    parser.add_argument("--workers", type=int, default=2, help="threads rendering and encoding videos")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate_dataset(args.out, args.seed, args.train_per_class, args.val_per_class, args.workers,
                            label_noise=args.label_noise, imbalance=args.imbalance)
    print(f"{root}: ready in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
