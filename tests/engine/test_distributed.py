"""DDP under torchrun (gloo, CPU) equals one process with the same global batch."""

import subprocess
import sys
from pathlib import Path

import torch
from helpers import NO_BN_MODEL, tiny_overrides

REPO = Path(__file__).resolve().parents[2]

NO_BN = [*NO_BN_MODEL, "trainer.deterministic=true"]


def _train(cmd: list[str], run_dir: Path, data_root: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [*cmd, str(REPO / "tools" / "train.py"), *tiny_overrides(data_root, run_dir, *NO_BN, *extra)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def test_two_ranks_match_one_process_with_double_batch(tiny_synthetic, tmp_path):
    ddp = _train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531"],
                 tmp_path / "ddp", tiny_synthetic, "data.batch_size=2")
    single = _train([sys.executable], tmp_path / "single", tiny_synthetic, "data.batch_size=4")
    assert ddp["global_step"] == single["global_step"] == 5
    for name, weight in single["model"].items():
        assert torch.allclose(ddp["model"][name], weight, atol=1e-5), name
    # The comparison is not vacuous: five AdamW steps moved the weights.
    first = torch.load(tmp_path / "single" / "checkpoints" / "best.pt", weights_only=True)
    assert first["global_step"] == 5
    assert all(s["step"] == 5 for s in ddp["optimizer"]["state"].values())
