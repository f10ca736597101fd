"""Fit temperature scaling of a checkpoint on its validation split and store it beside it.

    python tools/calibrate.py outputs/demo/<run>                      # its checkpoints/last.pt
    python tools/calibrate.py outputs/demo/<run>/checkpoints/best.pt test.num_clips=10 trainer.device=cpu
    torchrun --nproc_per_node=8 tools/calibrate.py I3D_8x8_R50.pyth data=kinetics400 model=i3d_r50

The temperature is fitted on video-level predictions: the test protocol's views
(test.num_clips x test.num_crops) aggregated per video (test.aggregation), their log taken as
logits. It goes to <checkpoint stem>.calibration.json beside the checkpoint, with the ECE and
NLL before and after (measured on the split it was fitted on), top-1 (never changed by a
temperature) and which weights were used. tools/test.py and tools/predict.py apply it from
then on and say so.

A videocls training checkpoint is rebuilt from the config stored in it, with the weights its
run evaluated (EMA when it trained with EMA), exactly as tools/test.py does: the overrides are
KEY=VALUE on that config (data.root=..., test.num_clips=...), and nothing the stored config
names is executed. Other checkpoints are described with the usual Hydra overrides of
configs/train.yaml, as for tools/test.py. The last line printed is `calibration: <path>`.
"""

import argparse
import sys

from videocls.engine.calibrate import format_calibration
from videocls.engine.run_loading import load_run_or_weights
from videocls.engine.tester import calibrate_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    args = parser.parse_args(argv)

    try:
        run = load_run_or_weights(args.target, args.overrides)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record = calibrate_checkpoint(run)
    if record is not None:
        print(format_calibration(record))
        print(f"calibration: {record['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
