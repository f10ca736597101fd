"""Every experiment file composes, and its parts name real models and data formats."""

from pathlib import Path

import pytest
from helpers import CONFIGS, compose_config
from hydra.utils import instantiate

from videocls import get_model_config
from videocls.data.annotations import FORMATS

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.experiment_name == experiment
    config = get_model_config(cfg.model.name)  # raises for an unknown model
    data = instantiate(cfg.data)
    assert data.format in FORMATS and data.num_classes > 0
    # The model owns its input: no data config carries a model fact (SlowFast's alpha included).
    assert not [key for key in cfg.data if "alpha" in key]
    assert config.num_frames > 0


def test_published_recipes_are_there():
    assert {"i3d_r50_k400", "slowfast_r50_k400", "timesformer_k400", "timesformer_ssv2",
            "demo"} <= set(EXPERIMENTS)
    assert Path(CONFIGS / "hydra" / "launcher" / "slurm.yaml").is_file()
