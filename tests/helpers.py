"""Shared test helpers (importable: pytest puts tests/ on sys.path)."""

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


#: The override that shrinks a family's demo size (configs/model_size/demo/) further, to seconds.
TINY_WIDTH = {"timesformer": "model.embed_dim=16", "videomae": "model.embed_dim=16",
              "mvit": "model.embed_dim=8", "i3d_inception": "model.width_mult=0.0625", "": "model.width=4"}


def tiny_overrides(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Hydra overrides that shrink the demo experiment to seconds on CPU (any model=... in extra)."""
    model = next((o.split("=", 1)[1] for o in extra if o.startswith("model=")), "i3d_r50")
    width = next(value for prefix, value in TINY_WIDTH.items() if model.startswith(prefix))
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
        width,
        "trainer.max_epochs=1",
        "test.num_clips=2",
        "test.batch_size=8",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


#: A model without BatchNorm (a one-block, 16-wide TimeSformer in 16-px patches): with it, DDP and
#: gradient accumulation must match a bigger batch exactly (so no dropout either).
NO_BN_MODEL = [
    "model=timesformer_base", "model.patch_size=16", "model.depth=1", "model.num_heads=2",
    "model.head_drop_rate=0.0", "optim=adamw", "optim.base_lr=1e-3",
]


def compose_config(overrides: list[str]):
    """The config tools/train.py would see, without launching Hydra's app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[o for o in overrides if not o.startswith("hydra.")])
