"""The training loop end to end on the built-in dataset, one optimiser step in isolation, the
configuration checks at start and resuming with changed hyper-parameters."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_config, tiny_overrides
from omegaconf import OmegaConf

from videocls import create_model
from videocls.engine.config_checks import ConfigError, changed_hyperparameters, check_config
from videocls.engine.distributed import resolve_device
from videocls.engine.trainer import Trainer, fit

REPO = Path(__file__).resolve().parents[2]


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("i3d_r50", num_classes=4, width=4, stage_blocks=(1, 1, 1, 1), dropout=0.0)
    clips, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_fit_writes_results_checkpoint_and_metrics(tiny_synthetic, tmp_path):
    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path))
    summary = fit(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["clip"]) >= {"top1", "top5"}
    assert set(results["video"]) >= {"top1", "top5", "mean_class_acc"}
    assert results["num_videos"] == 10 and results["num_views"] == 20  # 10 val videos x 2 clips
    assert 0.0 <= results["video"]["top1"] <= 1.0
    assert summary["results_path"] == str(tmp_path / "results.json")
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 5  # 20 train videos / batch 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val/video_top1" in r for r in rows)


def test_train_tool_prints_results_path_last(tiny_synthetic, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), *tiny_overrides(tiny_synthetic, tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"results: {tmp_path / 'results.json'}"
    assert json.loads((tmp_path / "results.json").read_text())["num_videos"] == 10


# --------------------------------------------------------------------------- config checks at start
BAD_VALUES = [
    ("trainer.max_epochs", 0, "use an integer >= 1"),
    ("trainer.max_epochs", -1, "use an integer >= 1"),
    ("trainer.checkpoint_every_n_steps", -1, "use an integer >= 0"),
    ("test.num_clips", 0, "use an integer >= 1"),
    ("test.max_views_per_batch", 0, "use an integer >= 1 or null"),
    ("test.num_crops", 2, "use 1 (centre crop) or 3"),
    ("data.num_frames", 0, "use an integer >= 1"),
    ("trainer.precision", 64, "use 32, bf16 or 16"),
    ("trainer.accumulate_grad_batches", 0, "use an integer >= 1"),
    ("trainer.device", "gpu", "use cuda, cuda:N"),
    ("trainer.device", "cuda:x", "use cuda, cuda:N"),
    ("test.aggregation", "sum_softmax", "use one of mean_softmax, mean_logits, max"),
]


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory):
    return compose_config(tiny_overrides(tmp_path_factory.mktemp("unused"), tmp_path_factory.mktemp("run")))


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES)
def test_bad_config_values_are_refused_naming_key_and_allowed_values(demo_config, key, value, allowed):
    cfg = copy.deepcopy(demo_config)
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert f"{key}={value!r}: {allowed}" in str(error.value)
    assert str(error.value).count("\n  ") == 1  # only that key


def test_config_check_lists_every_bad_key_and_accepts_the_defaults(demo_config):
    check_config(demo_config)  # the shipped values pass
    for device in ("cpu", "auto", "cuda", "cuda:1"):
        cfg = copy.deepcopy(demo_config)
        cfg.trainer.device = device
        check_config(cfg)  # well formed; whether the GPU exists is init_distributed's check
    cfg = copy.deepcopy(demo_config)
    cfg.trainer.max_epochs, cfg.test.num_clips = 0, 0
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert "trainer.max_epochs=0: " in str(error.value) and "test.num_clips=0: " in str(error.value)
    cfg = copy.deepcopy(demo_config)
    cfg.trainer.max_epochs = 0
    check_config(cfg, training=False)  # tools/test.py does not train: only the test keys count


def test_trainer_refuses_a_bad_value_before_any_work(tiny_synthetic, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs=0: use an integer >= 1"):
        Trainer(compose_config(tiny_overrides(tiny_synthetic, tmp_path, "trainer.max_epochs=0")), tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_device_names_map_to_devices_or_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    for bad in ("gpu", "cuda:", "cuda:-1", "CPU", "mps"):
        with pytest.raises(ValueError, match=f"trainer.device={bad!r}: use cuda, cuda:N, cpu or auto"):
            resolve_device(bad)
    if torch.cuda.is_available():
        last = torch.cuda.device_count() - 1
        assert resolve_device(f"cuda:{last}") == torch.device("cuda", last)  # not cuda:0, not the CPU
        with pytest.raises(ValueError, match="does not exist"):
            resolve_device(f"cuda:{last + 1}")
        with pytest.raises(ValueError, match="use trainer.device=cuda"):
            resolve_device("cuda:0", local_rank=1, local_world_size=2)
    else:
        for name in ("cuda", "cuda:0"):  # never a silent fallback to the CPU
            with pytest.raises(ValueError, match=f"trainer.device={name}: no CUDA GPU"):
                resolve_device(name)


# --------------------------------------------------------------------------- resume with changed values
def test_resume_refuses_changed_hyperparameters_unless_allowed(tiny_synthetic, tmp_path):
    base = ("schedule.min_factor=0.1", "optim.base_lr=0.002")  # a non-zero final learning rate
    fit(compose_config(tiny_overrides(tiny_synthetic, tmp_path, *base)), tmp_path)
    stored = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    changed = tiny_overrides(tiny_synthetic, tmp_path, *base, "optim.base_lr=0.004", "optim.weight_decay=0.5")
    with pytest.raises(ConfigError) as error:
        Trainer(compose_config(changed), tmp_path)
    message = str(error.value)
    assert "optim.base_lr: 0.002 -> 0.004" in message and "optim.weight_decay: 0.0001 -> 0.5" in message
    assert "trainer.resume_allow_changes=true" in message
    assert str(tmp_path / "checkpoints" / "last.pt") in message
    assert message.count(" -> ") == 2  # nothing else is reported as changed

    trainer = Trainer(compose_config([*changed, "trainer.resume_allow_changes=true"]), tmp_path)
    try:
        assert trainer.global_step == stored["global_step"] == 5
        # The new values apply from the resumed step: twice the peak, so twice the learning rate
        # the schedule gives at step 5, and the new weight decay; the Adam moments are the checkpoint's.
        for group, old in zip(trainer.optimizer.param_groups, stored["optimizer"]["param_groups"]):
            assert group["initial_lr"] == pytest.approx(2 * old["initial_lr"], rel=1e-9)
            assert group["lr"] == pytest.approx(2 * old["lr"], rel=1e-9) and old["lr"] > 0
            assert group["weight_decay"] == (0.5 if old["weight_decay"] else 0.0)
        moments = trainer.optimizer.state_dict()["state"]
        for index, state in stored["optimizer"]["state"].items():
            assert torch.equal(moments[index]["exp_avg"], state["exp_avg"])
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("optim.base_lr: 0.002 -> 0.004" in r.get("resume/changed", "") for r in rows)


def test_changed_hyperparameters_reads_the_stored_yaml_without_resolving_it(demo_config):
    resolved = OmegaConf.to_yaml(demo_config, resolve=True)  # as checkpoints store it
    stored = resolved.replace("base_lr: 0.003", "base_lr: ${oc.env:HOME}")
    changes = changed_hyperparameters(stored, demo_config)
    assert changes == [("optim.base_lr", "${oc.env:HOME}", 0.003)]
    assert changed_hyperparameters(resolved, demo_config) == []
    assert changed_hyperparameters(None, demo_config) == []
    newer = copy.deepcopy(demo_config)
    OmegaConf.update(newer, "model.new_option", None, force_add=True)  # added since: off, unchanged
    OmegaConf.update(newer, "schedule.new_shape", True, force_add=True)  # added since, with a value
    assert changed_hyperparameters(resolved, newer) == [("schedule.new_shape", "<absent>", True)]


def test_slowfast_trains_on_any_data_config_with_its_own_alpha(tiny_synthetic, tmp_path):
    """No slowfast experiment file, no alpha in the data config: the model's own alpha (here an
    override, 2) makes the [slow, fast] clips, in training and in the final test."""
    from videocls.engine.trainer import Trainer

    run_dir = tmp_path / "run"
    cfg = compose_config(tiny_overrides(tiny_synthetic, run_dir, "model=slowfast_r50", "model.width=8",
                                        "+model.alpha=2"))
    trainer = Trainer(cfg, run_dir)
    try:
        slow, fast = trainer.train_set[0]["video"]
        assert (slow.shape[1], fast.shape[1]) == (cfg.data.num_frames // 2, cfg.data.num_frames)
        # PySlowFast's packing: slow = the fast clip at linspace(0, T - 1, T // alpha)
        t = cfg.data.num_frames
        assert torch.equal(slow, fast[:, torch.linspace(0, t - 1, t // 2).long()])
        results = trainer.fit()
    finally:
        trainer.close()
    assert results["video"]["top1"] >= 0 and results["num_videos"] == 10


def test_each_epoch_reports_its_throughput_and_data_stall(tiny_run):
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    epochs = [row for row in rows if "train/epoch_clips_per_s" in row]
    assert [row["epoch"] for row in epochs] == [0]  # one summary per epoch (the tiny run has one)
    assert epochs[0]["train/epoch_clips_per_s"] > 0
    assert 0.0 <= epochs[0]["train/epoch_data_wait_frac"] < 1.0
