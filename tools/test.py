"""Evaluate a checkpoint with the multi-view test protocol.

    python tools/test.py experiment=demo test.checkpoint=outputs/demo/<run>/checkpoints/last.pt
    torchrun --nproc_per_node=8 tools/test.py data=kinetics400 model=i3d_r50 test.checkpoint=I3D_8x8_R50.pyth

Any checkpoint `videocls.create_model` can load works (videocls runs, PySlowFast/pytorchvideo
.pyth, TimeSformer, DeepMind I3D). Outputs go to the Hydra run directory: results.json,
predictions.csv, per_class.csv, confusion.csv/png, reliability.png. The last line printed is
`results: <path>`.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from videocls.engine.tester import evaluate_checkpoint


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = evaluate_checkpoint(cfg, HydraConfig.get().runtime.output_dir)
    if summary is not None:
        print(f"results: {summary['results_path']}")


if __name__ == "__main__":
    main()
