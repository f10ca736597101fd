"""Write one pooled backbone feature vector per video (the classifier's input, multi-view averaged).

    python tools/extract_features.py outputs/demo/<run> --out feats/train.npz --split train
    python tools/extract_features.py outputs/demo/<run> --out feats/val.npz --split val data.root=/data
    python tools/extract_features.py ../shared/weights/i3d-kinetics-400.ckpt --out feats/train.npz \
        model=i3d_inception_v1 data.root=data/synthetic test.num_clips=3 test.num_crops=1
    torchrun --nproc_per_node=8 tools/extract_features.py RUN --out feats/train.npz

Views, crops and decoding are the test protocol's (test.num_clips x test.num_crops, the data
config's test_short_side / test_crop). The output .npz holds `features` (N x D float32),
`videos`, `labels` (from the list: noisy labels stay as given) and `classes`; <out>.json says
what made it. The work is written in parts (<out>.parts/) as it goes: rerunning the same
command after an interruption extracts only the videos still missing. Then:
tools/linear_probe.py and tools/find_label_issues.py.

A videocls training checkpoint carries its config (overrides are KEY=VALUE on it); other
weights are described with the Hydra overrides of configs/train.yaml (model=..., data...).
"""

import argparse
import sys

from videocls.engine.features import extract_features


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    parser.add_argument("--out", required=True, help="features file to write (.npz)")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--chunk-videos", type=int, default=64, help="videos per resumable part file")
    args = parser.parse_intermixed_args()
    extract_features(args.target, args.out, args.overrides, split=args.split, chunk_videos=args.chunk_videos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
