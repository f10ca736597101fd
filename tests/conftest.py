import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The decord-accuracy probe cache of the tests stays out of the user's ~/.cache.
os.environ.setdefault("VIDEOCLS_CACHE_DIR", tempfile.mkdtemp(prefix="videocls-test-cache-"))
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_VIDEOS = SHARED / "real-videos"
WEIGHTS = SHARED / "weights"


@pytest.fixture(scope="session")
def real_videos_dir() -> Path:
    if not REAL_VIDEOS.is_dir():
        pytest.fail(f"{REAL_VIDEOS} is missing: the shared test videos must sit beside the checkout")
    return REAL_VIDEOS



@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """The built-in dataset at its smallest: two training and one validation video per class."""
    from videocls.data.synthetic import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("synthetic"), seed=0, train_per_class=2, val_per_class=1, workers=2
    )


@pytest.fixture(scope="session")
def tiny_run(tiny_synthetic, tmp_path_factory) -> Path:
    """One finished one-epoch run of the tiny demo (width 4, 4 frames, 32-px crops) to evaluate.

    At this learning rate the epoch fits its training videos a little (not the held-out ones).
    Tests that write beside its checkpoint work on a copy.
    """
    from helpers import compose_config, tiny_overrides

    from videocls.engine.trainer import fit

    run_dir = tmp_path_factory.mktemp("tiny-run")
    fit(compose_config(tiny_overrides(tiny_synthetic, run_dir, "optim.base_lr=0.05")), run_dir)
    return run_dir
