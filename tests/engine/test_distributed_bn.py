"""Precise BN under DDP: every rank ends with the same statistics, those of all ranks' batches,
and the saved checkpoint reproduces a multi-process run's results (gloo on CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_overrides
from torch import nn

from videocls import create_model
from videocls.engine.distributed import DistEnv
from videocls.engine.trainer import recompute_bn_stats

REPO = Path(__file__).resolve().parents[2]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("i3d_r50", num_classes=4, width=4, stage_blocks=(1, 1, 1, 1), dropout=0.0).eval()


def _batches() -> list[list[dict]]:
    """Rank 0 gets 2 batches, rank 1 gets 3, each of another scale and offset."""
    clips = [torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    batches = [{"video": clip * (1 + i) + i} for i, clip in enumerate(clips)]
    return [batches[:2], batches[2:]]


def _precise_bn_rank(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model, shard = _model(), _batches()[rank]
        env = DistEnv(rank, rank, world_size, torch.device("cpu"))
        recompute_bn_stats(model, shard, len(shard), env, "32")
        torch.save(dict(model.named_buffers()), Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_precise_bn_statistics_are_those_of_all_ranks_batches_on_every_rank(tmp_path):
    mp.spawn(_precise_bn_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(2)]
    # Reference: one process over the five batches (each statistic the mean of the per-batch ones).
    reference = _model()
    all_batches = [b for shard in _batches() for b in shard]
    recompute_bn_stats(reference, all_batches, len(all_batches), DistEnv(0, 0, 1, torch.device("cpu")), "32")
    expected = dict(reference.named_buffers())
    stats = [k for k in expected if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 8
    for name in stats:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        assert torch.allclose(ranks[0][name], expected[name], rtol=1e-5, atol=1e-6), name
    # Not vacuous: rank 0's own two batches alone give other statistics.
    alone = _model()
    recompute_bn_stats(alone, _batches()[0], 2, DistEnv(0, 0, 1, torch.device("cpu")), "32")
    assert not torch.allclose(dict(alone.named_buffers())[stats[0]], expected[stats[0]], rtol=1e-3)


def test_two_process_results_are_reproduced_by_testing_the_saved_checkpoint(tiny_synthetic, tmp_path):
    run = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29537",
         str(REPO / "tools" / "train.py"),
         *tiny_overrides(tiny_synthetic, run, "data.batch_size=2", "trainer.precise_bn_batches=2",
                         "trainer.device=cpu")],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-4000:]
    retest = tmp_path / "retest"
    test = subprocess.run(
        [sys.executable, str(REPO / "tools" / "test.py"),
         *tiny_overrides(tiny_synthetic, retest, f"test.checkpoint={run / 'checkpoints' / 'last.pt'}")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert test.returncode == 0, test.stdout[-2000:] + test.stderr[-4000:]
    trained, tested = (json.loads((d / "results.json").read_text()) for d in (run, retest))
    assert trained["num_views"] == tested["num_views"] == 20
    assert trained["video"] == tested["video"] and trained["clip"] == tested["clip"]
    assert (run / "predictions.csv").read_bytes() == (retest / "predictions.csv").read_bytes()
