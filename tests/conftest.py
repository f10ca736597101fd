import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_VIDEOS = SHARED / "real-videos"
WEIGHTS = SHARED / "weights"


@pytest.fixture(scope="session")
def real_videos_dir() -> Path:
    if not REAL_VIDEOS.is_dir():
        pytest.fail(f"{REAL_VIDEOS} is missing: the shared test videos must sit beside the checkout")
    return REAL_VIDEOS
