"""Evaluate a checkpoint with the multi-view test protocol.

    python tools/test.py test.checkpoint=outputs/demo/<run>/checkpoints/last.pt
    python tools/test.py outputs/demo/<run> test.num_clips=10 data.root=/data/copy
    python tools/test.py multirun/demo/<time>/0_model=c2d_r50,seed=0   # a sweep's run directory
    torchrun --nproc_per_node=8 tools/test.py data=kinetics400 model=i3d_r50 test.checkpoint=I3D_8x8_R50.pyth

The checkpoint is named as the other tools name it (tools/calibrate.py, tools/tune_thresholds.py,
tools/extract_features.py): an existing path as the first argument, then KEY=VALUE overrides;
test.checkpoint=PATH says the same (quote a PATH with = or , in it: test.checkpoint='PATH').

A videocls training checkpoint (or a run directory: its checkpoints/last.pt) is rebuilt from
the config stored in it, with the weights its run evaluated (EMA when it trained with EMA),
so it tests what was trained: no experiment= is needed, and the other KEY=VALUE overrides
typed here change single keys of that stored config (data.root=..., test.num_clips=...;
experiment= and logger= are ignored, other config-group choices refused). Nothing the stored
config names is executed (see videocls/engine/run_loading.py).

Other checkpoints (PySlowFast/pytorchvideo .pyth, TimeSformer, DeepMind I3D, converted files)
are described by the usual Hydra config groups and overrides of configs/train.yaml; their
classifier must have data.num_classes classes (evaluation never runs a random head).

Outputs go to the Hydra run directory: results.json (with the checkpoint and which weights),
predictions.csv, per_class.csv, confusion.csv/png, reliability.png. The last line printed is
`results: <path>`.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from videocls.engine.run_loading import load_run_or_weights
from videocls.engine.tester import evaluate_checkpoint

log = logging.getLogger(__name__)


def checkpoint_argument(argv: list[str]) -> list[str]:
    """``argv`` with a leading existing path turned into ``test.checkpoint='PATH'``: the other
    tools' convention, and quoted for Hydra (a sweep's run directory, ``0_model=c2d_r50,seed=0``,
    is not a valid unquoted override value)."""
    if len(argv) < 2 or argv[1].startswith("-") or not Path(argv[1]).exists():
        return argv
    path = argv[1]
    quote = next((q for q in ("'", '"') if q not in path), None)
    if quote is None or path.endswith("\\"):
        raise SystemExit(f"error: {path}: a path with both kinds of quote (or ending in a backslash) cannot "
                         "be passed to Hydra; rename it or link to it")
    return [argv[0], f"test.checkpoint={quote}{path}{quote}", *argv[2:]]


def typed_overrides(task_overrides: list[str]) -> list[str]:
    """The overrides the user typed, without the one that names the checkpoint."""
    return [item for item in task_overrides if item.split("=", 1)[0].lstrip("+~") != "test.checkpoint"]


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not cfg.test.checkpoint:
        raise ValueError("set test.checkpoint=PATH (a videocls checkpoint or run directory, or any "
                         "format create_model reads)")
    run = load_run_or_weights(cfg.test.checkpoint, typed_overrides(list(HydraConfig.get().overrides.task)),
                              config=cfg)
    if run.weights != "file":
        log.info("testing %s with its stored config and its %s weights", run.checkpoint, run.weights)
    summary = evaluate_checkpoint(run, HydraConfig.get().runtime.output_dir)
    if summary is not None:
        print(f"results: {summary['results_path']}")


if __name__ == "__main__":
    sys.argv = checkpoint_argument(sys.argv)
    main()
