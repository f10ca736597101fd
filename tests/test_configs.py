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


MODEL_CONFIGS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


def test_every_model_config_has_a_demo_size_and_every_registered_model_a_config():
    from videocls import list_models

    demo_sizes = sorted(p.stem for p in (CONFIGS / "model_size" / "demo").glob("*.yaml"))
    assert demo_sizes == MODEL_CONFIGS  # `optional` in train.yaml: a missing file would pass silently
    named = {compose_config([f"model={m}"]).model.name for m in MODEL_CONFIGS}
    assert set(list_models()) <= named
    # the three attention schemes of the TimeSformer paper's Table 1, one config each
    attention = {m: compose_config([f"model={m}"]).model.attention
                 for m in MODEL_CONFIGS if "timesformer" in m}
    assert sorted(attention.values()) == ["divided_space_time", "joint_space_time", "space_only"]


def test_the_demo_size_applies_only_with_size_demo():
    full = compose_config(["model=slowfast_r50"])
    demo = compose_config(["experiment=demo", "model=slowfast_r50"])
    assert "width" not in full.model and (demo.model.width, demo.model.beta_inv) == (8, 4)
    assert compose_config(["model=slowfast_r50", "size=demo"]).model == demo.model  # no experiment needed
    override = compose_config(["experiment=demo", "model=i3d_r50", "model.width=16"]).model
    assert (override.width, override.stem_pool) == (16, False)  # a demo-size key is a plain override


@pytest.mark.parametrize("model_config", MODEL_CONFIGS)
def test_every_model_fits_a_batch_at_its_demo_size(model_config, tiny_synthetic, tmp_path):
    """`experiment=demo model=NAME` builds every family and its clips; a few steps fit one batch."""
    import torch
    from helpers import tiny_overrides
    from torch.utils.data import default_collate

    from videocls.data.datamodule import model_input

    frames = ["data.num_frames=8"] if model_config.endswith("4x16") else []  # alpha 8: one slow frame
    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path, f"model={model_config}", *frames))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    data = instantiate(cfg.data)
    dataset = data.dataset("train", train=True, **model_input(model), seed=0)
    batch = default_collate([dataset[i] for i in range(4)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks each time
        return torch.nn.functional.cross_entropy(model(batch["video"]), batch["label"])

    first = loss()
    for _ in range(8):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert torch.isfinite(first) and loss().item() < 0.8 * first.item()


def test_slowfast_trains_on_synthetic_data_without_an_experiment_file(tiny_synthetic, tmp_path):
    """`tools/train.py model=slowfast_r50 data=synthetic size=demo ...`: no experiment file."""
    from helpers import tiny_overrides

    from videocls.engine.trainer import fit

    overrides = [o for o in tiny_overrides(tiny_synthetic, tmp_path, "model=slowfast_r50", "size=demo",
                                           "data=synthetic", "optim=adamw", "optim.base_lr=3e-3")
                 if o != "experiment=demo"]
    cfg = compose_config(overrides)
    assert cfg.experiment_name == "default" and cfg.model.name == "slowfast_r50"
    results = fit(cfg, tmp_path)
    assert results["num_videos"] == 10 and 0.0 <= results["video"]["top1"] <= 1.0
    assert results["train_cpu_minutes"] > 0 and results["train_minutes"] > 0
