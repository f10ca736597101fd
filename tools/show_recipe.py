"""Print the effective training recipe of a config without training (docs/RECIPES.md).

    python tools/show_recipe.py experiment=i3d_r50_k400
    python tools/show_recipe.py experiment=timesformer_k400 --gpus 4 --train-videos 234584
    python tools/show_recipe.py experiment=demo data.batch_size=32 --gpus 1 --flops

Arguments without a leading "--" are tools/train.py overrides. Batch sizes, the learning rate per
clip and at a few epochs, warm-up, test views, initialisation, precision, the weight-decay split
and the model's size are worked out as the trainer would for --gpus processes (default 8, the
papers' setting); nothing is trained and no weights are read.
"""

import argparse

from videocls.engine.recipe import show_recipe


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="tools/train.py overrides, e.g. experiment=i3d_r50_k400")
    parser.add_argument("--gpus", type=int, default=8, help="training processes (default 8)")
    parser.add_argument("--train-videos", type=int, help="training set size: counts steps per epoch")
    parser.add_argument("--flops", action="store_true", help="measure GFLOPs at the test input (slow)")
    args = parser.parse_args()
    print(show_recipe(args.overrides, gpus=args.gpus, train_videos=args.train_videos,
                      measure_flops=args.flops))


if __name__ == "__main__":
    main()
