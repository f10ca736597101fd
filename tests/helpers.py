"""Shared test helpers (importable: pytest puts tests/ on sys.path)."""

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_overrides(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Hydra overrides that shrink the demo experiment to seconds on CPU."""
    return [
        "experiment=demo",
        f"data.root={data_root}",
        "data.synthetic.train_per_class=2",
        "data.synthetic.val_per_class=1",
        "data.num_frames=4",
        "data.sampling_rate=2",
        "data.train_short_side=[32,36]",
        "data.train_crop=32",
        "data.test_short_side=32",
        "data.test_crop=32",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.width=4",
        "trainer.max_epochs=1",
        "test.num_clips=2",
        "test.batch_size=8",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


#: A model without BatchNorm (a one-block, 16-wide TimeSformer): with it, DDP and gradient
#: accumulation must match a bigger batch exactly. The demo's ResNet-only options are dropped.
NO_BN_MODEL = [
    "model=timesformer_base", "+model.img_size=32", "+model.patch_size=16", "+model.num_frames=4",
    "+model.embed_dim=16", "+model.depth=1", "+model.num_heads=2", "+model.drop_path_rate=0.0",
    "~model.width", "~model.stage_blocks", "~model.dropout", "~model.zero_init_residual", "~model.stem_pool",
    "optim=adamw", "optim.base_lr=1e-3",
]


def compose_config(overrides: list[str]):
    """The config tools/train.py would see, without launching Hydra's app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[o for o in overrides if not o.startswith("hydra.")])
