"""Gradient accumulation, bf16 autocast (and its CPU conv3d guard), skipped non-finite steps, EMA,
precise BN, SyncBN, W&B offline logging, multirun sweeps and compare_runs."""

import copy
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import NO_BN_MODEL, compose_config, tiny_overrides
from torch import nn

from videocls import create_model
from videocls.engine.amp import autocast, conv3d_input_smaller_than_kernel
from videocls.engine.distributed import DistEnv
from videocls.engine.trainer import Trainer, fit, recompute_bn_stats

REPO = Path(__file__).resolve().parents[2]
NO_BN = [*NO_BN_MODEL, "test.num_clips=1"]


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_accumulating_k_batches_matches_one_k_times_larger_batch(tiny_synthetic, tmp_path):
    accumulated = tmp_path / "acc"
    fit(compose_config(tiny_overrides(tiny_synthetic, accumulated, *NO_BN, "data.batch_size=2",
                                      "trainer.accumulate_grad_batches=2")), accumulated)
    large = tmp_path / "large"
    fit(compose_config(tiny_overrides(tiny_synthetic, large, *NO_BN, "data.batch_size=4")), large)
    a, b = _weights(accumulated), _weights(large)
    for name in b:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert torch.load(accumulated / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 5


def test_leftover_micro_batches_are_not_run_nor_leak_into_the_next_epoch(tiny_synthetic, tmp_path):
    # 20 videos in batches of 2 = 10 micro-batches: 3 steps of 3 and one leftover per epoch. The
    # leftover is dropped, so two epochs equal two epochs of batches of 6 (the loader drops the
    # incomplete last batch of 2 there): same clips per step, same order, same schedule.
    accumulated = tmp_path / "acc"
    overrides = (*NO_BN, "data.batch_size=2", "trainer.accumulate_grad_batches=3", "trainer.max_epochs=2")
    fit(compose_config(tiny_overrides(tiny_synthetic, accumulated, *overrides)), accumulated)
    large = tmp_path / "large"
    fit(compose_config(tiny_overrides(tiny_synthetic, large, *NO_BN, "data.batch_size=6",
                                      "trainer.max_epochs=2")), large)
    a, b = _weights(accumulated), _weights(large)
    for name in b:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    state = torch.load(accumulated / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] == 6 and state["epoch"] == 2


def test_cpu_bf16_runs_convs_shorter_than_their_kernel_in_fp32():
    # The configurations where oneDNN's bf16 conv3d weight gradient came out NaN on an AVX-512
    # CPU (videocls/engine/amp.py): every output frame reads padding. Checked on any CPU by what
    # the guard computes, not by whether this CPU has the bug.
    def call(t, k):
        return (torch.zeros(1, 1, t, 4, 4), torch.zeros(1, 1, k, 1, 1)), {}

    for t, k in ((1, 2), (2, 3), (3, 5), (4, 5)):
        assert conv3d_input_smaller_than_kernel(*call(t, k)), (t, k)
    for t, k in ((3, 3), (5, 5), (8, 3), (2, 1)):
        assert not conv3d_input_smaller_than_kernel(*call(t, k)), (t, k)
    assert conv3d_input_smaller_than_kernel((torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 3, 1, 1)),
                                            {"dilation": (2, 1, 1)})  # dilated kernel spans 5 frames

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    short = nn.Conv3d(32, 16, (3, 1, 1), padding=(1, 0, 0))
    x, grad = torch.randn(4, 32, 2, 8, 8), torch.randn(4, 16, 2, 8, 8).bfloat16()
    with autocast(cpu, "bf16"):
        y = short(x)
    y.backward(grad)
    reference = nn.Conv3d(32, 16, (3, 1, 1), padding=(1, 0, 0))
    reference.load_state_dict(short.state_dict())
    y32 = reference(x)
    y32.backward(grad.float())
    assert y.dtype == torch.bfloat16 and torch.equal(y, y32.bfloat16())  # fp32 compute, bf16 out
    assert torch.allclose(short.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(short.weight.grad).all()

    long = nn.Conv3d(32, 16, (3, 1, 1), padding=(1, 0, 0))
    x = torch.randn(4, 32, 4, 8, 8)
    with autocast(cpu, "bf16"):
        guarded = long(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.conv3d(x, long.weight, long.bias, 1, (1, 0, 0))
    assert torch.equal(guarded, plain)  # every other convolution still runs in bf16


def test_bf16_autocast_trains_on_cpu(tiny_synthetic, tmp_path):
    # The 4-frame model has T=2 at res4, where oneDNN's AVX-512 bf16 weight gradient can be NaN
    # (videocls/engine/amp.py): with the fp32 guard no step is lost, on any CPU.
    summary = fit(compose_config(tiny_overrides(tiny_synthetic, tmp_path, "trainer.precision=bf16")),
                  tmp_path)
    assert summary["num_videos"] == 10
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["skipped_steps"] == 0 and state["global_step"] == 5
    weights = _weights(tmp_path)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all()
               for w in weights.values() if w.is_floating_point())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with GradScaler needs a CUDA device")
def test_fp16_with_grad_scaler_on_gpu(tiny_synthetic, tmp_path):
    summary = fit(compose_config(tiny_overrides(tiny_synthetic, tmp_path, "trainer.precision=16")), tmp_path)
    assert summary["num_videos"] == 10
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    # The scaler took part: its state is saved with a positive scale and a step count of its own.
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 0
    weights = _weights(tmp_path)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all()
               for w in weights.values() if w.is_floating_point())
    # The weights moved: fp16 steps were not all skipped as overflows.
    assert state["global_step"] == 5 and state["scaler"]["scale"] >= 2.0**10


def test_non_finite_gradient_skips_the_step_names_the_parameter_and_counts_it(tiny_synthetic, tmp_path,
                                                                              caplog):
    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path, "trainer.log_every_n_steps=1"))
    trainer = Trainer(cfg, tmp_path)
    name, param = "head.proj.weight", trainer.model.get_parameter("head.proj.weight")
    backwards = []

    def poison_second_step(grad):  # as the oneDNN bug did: one parameter's gradient is NaN
        backwards.append(1)
        return grad * float("nan") if len(backwards) == 2 else grad

    param.register_hook(poison_second_step)
    seen = []  # the parameters at each forward: the weights after the previous step
    trainer.model.register_forward_pre_hook(
        lambda module, _: seen.append({k: v.detach().clone() for k, v in module.named_parameters()}))
    try:
        with caplog.at_level("WARNING", logger="videocls.engine.trainer"):
            trainer.fit()
    finally:
        trainer.close()
    first, before, after_skip, after_next = seen[0], seen[1], seen[2], seen[3]
    assert any(not torch.equal(first[k], before[k]) for k in first)  # step 1 moved the weights
    assert all(torch.equal(before[k], after_skip[k]) for k in before)  # step 2 was skipped
    assert any(not torch.equal(after_skip[k], after_next[k]) for k in before)  # step 3 proceeded
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert trainer.skipped_steps == state["skipped_steps"] == 1 and state["global_step"] == 5
    assert all(torch.isfinite(w).all() for w in state["model"].values() if w.is_floating_point())
    skip_logs = [r.getMessage() for r in caplog.records if "skipped optimiser step" in r.getMessage()]
    assert len(skip_logs) == 1 and name in skip_logs[0] and "1 parameter(s)" in skip_logs[0]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/skipped_steps"] for r in rows if "train/skipped_steps" in r and "train/loss" in r]
    assert logged == [0, 1, 1, 1, 1]


def test_gradient_norm_leaves_gradients_alone_and_clipping_scales_them(tiny_synthetic, tmp_path):
    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path))
    trainer = Trainer(cfg, tmp_path)
    try:
        params = [p for p in trainer.model.parameters()]
        at_step = []
        trainer.optimizer.register_step_pre_hook(lambda *_: at_step.append([p.grad.clone() for p in params]))
        torch.manual_seed(0)
        grads = [torch.randn_like(p) for p in params]
        norm = torch.cat([g.flatten() for g in grads]).norm().item()
        for clip, factor in ((None, 1.0), (0.5, 0.5 / (norm + 1e-6))):
            trainer.cfg.trainer.grad_clip = clip
            for p, g in zip(params, grads):
                p.grad = g.clone()
            assert trainer._optimizer_step() == pytest.approx(norm, rel=1e-5)
            for seen, g in zip(at_step[-1], grads):
                assert torch.allclose(seen, g * factor, rtol=1e-5, atol=1e-8)
        assert trainer.skipped_steps == 0
    finally:
        trainer.close()


def test_ema_weights_are_the_decayed_average_of_every_step(tiny_synthetic, tmp_path):
    decay = 0.5  # large steps of the average, so a missed or doubled update shows
    overrides = tiny_overrides(tiny_synthetic, tmp_path, "trainer.ema=true", f"trainer.ema_decay={decay}")
    cfg = compose_config(overrides)
    trainer = Trainer(cfg, tmp_path)
    steps = []  # the raw weights and BN buffers after each optimiser step
    trainer.optimizer.register_step_post_hook(
        lambda *_: steps.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}))
    try:
        trainer.fit()
    finally:
        trainer.close()
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert len(steps) == state["global_step"] == 5
    expected = dict(steps[0])  # the first update copies the weights
    for weights in steps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w if w.is_floating_point() else w
                    for k, w in weights.items()}
    floats = [k for k, w in state["model"].items() if w.is_floating_point()]
    for name in floats:
        assert torch.equal(state["model"][name], steps[-1][name]), name
        assert torch.allclose(state["ema"][f"module.{name}"], expected[name], atol=1e-6), name
    assert any(not torch.allclose(state["ema"][f"module.{k}"], state["model"][k]) for k in floats)


def test_precise_bn_sets_running_stats_from_the_first_n_batches():
    torch.manual_seed(0)
    model = create_model("i3d_r50", num_classes=4, width=4, stage_blocks=(1, 1, 1, 1), dropout=0.0).eval()
    # Batches of different scale and offset: using a wrong number of them changes every statistic.
    batches = [{"video": torch.randn(2, 3, 4, 32, 32) * (1 + i) + i} for i in range(5)]
    n = 3
    reference = copy.deepcopy(model).train()
    features: dict[str, list[torch.Tensor]] = {}
    for name, bn in reference.named_modules():
        if isinstance(bn, nn.BatchNorm3d):
            bn.register_forward_pre_hook(lambda _, x, name=name: features.setdefault(name, []).append(x[0]))
    with torch.no_grad():
        for batch in batches[:n]:
            reference(batch["video"])

    recompute_bn_stats(model, batches, n, DistEnv(0, 0, 1, torch.device("cpu")), "32")
    bns = {name: bn for name, bn in model.named_modules() if isinstance(bn, nn.BatchNorm3d)}
    assert len(bns) == len(features) > 4 and not model.training
    for name, bn in bns.items():
        per_batch = [x.transpose(0, 1).flatten(1) for x in features[name]]  # channels x values
        # The mean over all n batches' features; the variance is the average of the per-batch
        # (unbiased) variances, as PySlowFast's precise BN, not the pooled variance.
        mean = torch.cat(per_batch, 1).mean(1)
        var = torch.stack([f.var(1) for f in per_batch]).mean(0)
        assert torch.allclose(bn.running_mean, mean, rtol=1e-4, atol=1e-5), name
        assert torch.allclose(bn.running_var, var, rtol=1e-4, atol=1e-5), name
        assert bn.momentum == 0.1, name


def test_sync_bn_on_cpu_ranks_fails_on_every_rank_naming_the_option(tiny_synthetic, tmp_path):
    # SyncBatchNorm only runs on GPUs, so its equivalence with one process on the global batch
    # cannot be checked on gloo/CPU; what a CPU run must do is refuse it clearly.
    overrides = tiny_overrides(tiny_synthetic, tmp_path, "trainer.sync_bn=true", "trainer.device=cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
         str(REPO / "tools" / "train.py"), *overrides],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode != 0
    message = "ValueError: trainer.sync_bn=true needs GPUs: SyncBatchNorm has no CPU implementation"
    assert proc.stderr.count(message) >= 2, proc.stderr[-4000:]  # raised by both ranks


def _leveldb_log_records(path: Path):
    """Records of a W&B ``.wandb`` file: a 7-byte header, then LevelDB-log 32 KiB blocks whose
    records carry a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    data, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left in this block for a header: padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if kind == 0:
            break
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield parts
            parts = b""


def _wandb_records(run_file: Path) -> tuple[dict, list[dict]]:
    """Config and history rows of an offline W&B run, read from its record file."""
    from wandb.proto import wandb_internal_pb2

    config, history = {}, []
    for data in _leveldb_log_records(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        # The config comes with the run record or, when W&B sends it after start-up, in
        # config records of its own (seen both ways from one code path).
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in record.history.item})
    return config, history


def test_wandb_offline_run_holds_config_and_the_same_metrics(tiny_synthetic, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_synthetic, tmp_path) if o != "logger=none"]
    fit(compose_config([*overrides, "logger=wandb", "logger.mode=offline", "logger.name=tiny",
                        "trainer.log_every_n_steps=1"]), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # W&B's service process may still be writing the file when finish() returns (two full-suite
    # runs of four found no config in it, none in isolation): read it again for a while.
    deadline = time.monotonic() + 20
    while True:
        config, history = _wandb_records(next(runs[0].glob("*.wandb")))
        if "model" in config or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "model" in config, sorted(config)
    assert config["model"]["name"] == "i3d_r50" and config["trainer"]["max_epochs"] == 1
    # W&B merges everything logged at one step into one history row; do the same with the jsonl.
    jsonl_by_step: dict[int, dict] = {}
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        jsonl_by_step.setdefault(row.pop("step"), {}).update(row)
    wandb_by_step = {h["_step"]: h for h in history}
    for key in ("val/video_top1", "train/loss", "train/lr", "test/video_top1", "test/clip_top1"):
        steps = [step for step, row in jsonl_by_step.items() if key in row]
        assert steps, key
        for step in steps:
            assert wandb_by_step[step][key] == pytest.approx(jsonl_by_step[step][key]), (key, step)


def test_multirun_sweep_and_compare_runs(tiny_synthetic, tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(tiny_synthetic, tmp_path / "unused")
                 if not o.startswith("hydra.run")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), "-m", "model=c2d_r50,i3d_r50", *overrides,
         f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1"]
    table = subprocess.run([sys.executable, str(REPO / "tools" / "compare_runs.py"), *map(str, runs)],
                           capture_output=True, text=True, check=True).stdout
    lines = table.splitlines()
    assert any(line.startswith("video/top1") for line in lines)
    model_row = next(line for line in lines if line.startswith("model.name"))
    assert "c2d_r50" in model_row and "i3d_r50" in model_row
    for run in runs:
        top1 = json.loads((run / "results.json").read_text())["video"]["top1"]
        row = next(line for line in lines if line.startswith("video/top1"))
        assert f"{top1:.4f}" in row


def test_misspelled_override_fails_before_training(tiny_synthetic, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "model=i3d_r5O"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert "i3d_r50" in proc.stderr and "Available options" in proc.stderr


def test_an_unreadable_training_video_is_warned_about_once_and_listed(tiny_synthetic, tmp_path, caplog):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    train_list = tmp_path / "train.csv"
    train_list.write_text((tiny_synthetic / "train.csv").read_text() + f"{bad},3\n")
    overrides = tiny_overrides(tiny_synthetic, tmp_path, f"data.train_list={train_list}",
                               "data.num_workers=1", "trainer.max_epochs=2", "test.num_clips=1")
    with caplog.at_level("WARNING"):
        fit(compose_config(overrides), tmp_path)
    # Two epochs, each reading it in a new worker process: one warning, from the main process.
    warnings = [r for r in caplog.records if str(bad) in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert (tmp_path / "skipped_videos.tsv").read_text().startswith(f"{bad}\t")
