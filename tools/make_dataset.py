"""Generate the built-in synthetic action dataset (see ``videocls.data.synthetic``).

    python tools/make_dataset.py --out data/synthetic --seed 0
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
    parser.add_argument("--workers", type=int, default=2, help="threads rendering and encoding videos")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate_dataset(args.out, args.seed, args.train_per_class, args.val_per_class, args.workers)
    print(f"{root}: ready in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
