"""Train a video classifier: `python tools/train.py experiment=demo [key=value ...]`.

Single process, or `torchrun --nproc_per_node=N tools/train.py ...` for DDP. The last line
printed is `results: <run dir>/results.json`.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from videocls.engine.trainer import fit


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    with open_dict(cfg):
        # Runs of one sweep share a W&B group; each run is named by its overrides.
        if cfg.logger.get("group", "missing") is None:
            cfg.logger.group = cfg.experiment_name
        if cfg.logger.get("name", "missing") is None:
            cfg.logger.name = hc.job.override_dirname or cfg.experiment_name
    summary = fit(cfg, hc.runtime.output_dir)
    if summary is not None:
        print(f"results: {summary['results_path']}")


if __name__ == "__main__":
    main()
