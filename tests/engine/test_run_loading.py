"""load_run: a checkpoint's stored config is data. Nothing it names runs; the weights are the
ones the run evaluated (EMA included), and class counts that disagree are refused."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import compose_config, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf

from videocls.engine.run_loading import NotARunCheckpoint, load_pretrained, load_run, load_run_or_weights
from videocls.engine.tester import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stored(tiny_run) -> tuple[dict, dict]:
    """The tiny run's checkpoint state and its stored config as a plain tree."""
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    return state, yaml.safe_load(state["config"])


def forge(stored, path: Path, edit=None, *, text: str | None = None, **entries) -> Path:
    """A copy of the tiny run's checkpoint whose stored config is edited (or replaced by ``text``)."""
    state, tree = stored
    tree = yaml.safe_load(yaml.safe_dump(tree))  # a deep copy
    if edit is not None:
        edit(tree)
    torch.save({**state, "config": text if text is not None else yaml.safe_dump(tree, sort_keys=False),
                **entries}, path)
    return path


def payloads(marker: Path) -> dict[str, dict]:
    """Calls that would leave ``marker`` behind if anything ran them."""
    return {
        "touch": {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]},
        "system": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        "command": {"_target_": "uuid._get_command_stdout", "_args_": ["touch", str(marker)]},
    }


def _set(*path, list_index=None):
    """An edit that puts the payload at ``path`` (inside a list when ``list_index`` is given)."""
    def edit(tree, value):
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value if list_index is None else [32, value][: list_index + 1]
    return edit


PLACEMENTS = {  # where the payload goes -> the dotted key the refusal must name
    "model section": (lambda tree, p: tree["model"].update(p), "model._target_"),
    "data section": (lambda tree, p: tree["data"].update(p), "data._target_"),
    "data.synthetic": (_set("data", "synthetic"), "data.synthetic._target_"),
    "optim section": (lambda tree, p: tree["optim"].update(p), "optim._target_"),
    "_args_ beside a known target": (lambda tree, p: tree["optim"].update(_args_=p["_args_"]),
                                     "optim._args_"),
    "loss, nested": (_set("loss", "class_weights"), "loss.class_weights._target_"),
    "model keyword": (_set("model", "dropout"), "model.dropout._target_"),
    "nested list": (_set("data", "train_short_side", list_index=1), "data.train_short_side[1]._target_"),
    "schedule, deeper": (_set("schedule", "extra", "inner"), "schedule.extra.inner._target_"),
    "logger": (_set("logger", "backend"), "logger.backend._target_"),
    "top level": (_set("evil"), "evil._target_"),
}


def test_the_payloads_are_live_under_hydra_instantiate(stored, tmp_path):
    """The control: what the old path (``instantiate`` of the stored config) would have run."""
    for kind in ("touch", "command"):
        marker = tmp_path / f"ran-{kind}"
        path = forge(stored, tmp_path / f"{kind}.pt", lambda t, k=kind, m=marker: t["data"].update(
            synthetic=payloads(m)[k]))
        cfg = OmegaConf.create(torch.load(path, weights_only=True)["config"])
        instantiate(cfg.data.synthetic)
        assert marker.exists(), kind


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("kind", ["touch", "system", "command"])
def test_a_stored_target_anywhere_is_refused_and_never_runs(stored, tmp_path, placement, kind):
    marker = tmp_path / "ran"
    edit, key = PLACEMENTS[placement]
    path = forge(stored, tmp_path / "evil.pt", lambda tree: edit(tree, payloads(marker)[kind]))
    with pytest.raises(ValueError, match=re.escape(f"{path}: stored config key {key} is not data")):
        load_run(path)
    assert not marker.exists()


def test_a_known_target_in_the_wrong_place_or_a_call_flag_is_refused(stored, tmp_path):
    path = forge(stored, tmp_path / "moved.pt", lambda t: t["data"].update(
        synthetic={"_target_": "videocls.create_model", "name": "i3d_r50"}))
    with pytest.raises(ValueError, match=re.escape("stored config key data.synthetic._target_ is not data")):
        load_run(path)
    path = forge(stored, tmp_path / "recursive.pt", lambda t: t["model"].update(_recursive_=False))
    with pytest.raises(ValueError, match=re.escape("stored config key model._recursive_ is not data")):
        load_run(path)


def test_interpolations_tags_and_aliases_are_refused_unresolved(stored, tmp_path):
    marker = tmp_path / "ran"
    decode = '${oc.decode:"{_target_: pathlib.Path.touch, _args_: [' + str(marker) + ']}"}'
    path = forge(stored, tmp_path / "interpolation.pt", lambda t: t["data"].update(synthetic=decode))
    # The control: resolving it makes a _target_ that instantiate calls.
    instantiate(OmegaConf.create(torch.load(path, weights_only=True)["config"]).data.synthetic)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=re.escape(f"{path}: stored config key data.synthetic holds an "
                                                   "interpolation")):
        load_run(path)
    path = forge(stored, tmp_path / "env.pt", lambda t: t["data"].update(root="${oc.env:HOME}"))
    with pytest.raises(ValueError, match="data.root holds an interpolation"):
        load_run(path)

    tagged = f"model: !!python/object/apply:pathlib.Path.touch ['{marker}']\n"
    path = forge(stored, tmp_path / "tag.pt", text=tagged)
    with pytest.raises(ValueError, match=re.escape(f"{path}: the stored config is not valid YAML")):
        load_run(path)
    names = [chr(97 + i) for i in range(21)]  # each level 3 times the last: 3**20 leaves if expanded
    bomb = "a: &a [x, x, x]\n" + "".join(f"{b}: &{b} [*{a}, *{a}, *{a}]\n" for a, b in zip(names, names[1:]))
    path = forge(stored, tmp_path / "bomb.pt", text=bomb)
    with pytest.raises(ValueError, match="YAML aliases"):
        load_run(path)
    assert not marker.exists()


def test_model_and_data_keys_are_checked_against_their_builders(stored, tmp_path):
    path = forge(stored, tmp_path / "name.pt", lambda t: t["model"].update(name="os.system"))
    with pytest.raises(ValueError, match=re.escape(f"{path}: stored config key model.name is 'os.system', "
                                                   "not a registered model")):
        load_run(path)
    path = forge(stored, tmp_path / "kwarg.pt", lambda t: t["model"].update(bogus=3))
    with pytest.raises(ValueError, match=re.escape(f"{path}: stored config key model.bogus is not an "
                                                   "argument of i3d_r50")):
        load_run(path)
    path = forge(stored, tmp_path / "field.pt", lambda t: t["data"].update(bogus=3))
    with pytest.raises(ValueError, match=re.escape(f"{path}: stored config key data.bogus is not a data "
                                                   "setting")):
        load_run(path)


def test_overrides_set_existing_keys_with_plain_values_only(tiny_run, caplog):
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    run = load_run(tiny_run, ["test.num_clips=5", "data.train_short_side=[30,40]", "optim.base_lr=1e-4",
                              "experiment=demo", "logger=none"])
    assert run.checkpoint == checkpoint
    assert run.config.test.num_clips == 5 and run.data.train_short_side == [30, 40]
    assert run.config.optim.base_lr == 1e-4  # Hydra's value syntax: a float, not the string "1e-4"
    assert "ignoring experiment=demo" in caplog.text and "ignoring logger=none" in caplog.text
    assert "_target_" not in OmegaConf.to_yaml(run.config)  # nothing left to instantiate
    refused = {
        "data.root=${oc.env:HOME}": "holds an interpolation",
        "model._target_=os.system": "model._target_ is not data",
        "data.mixup={_target_: pathlib.Path.touch}": "data.mixup._target_ is not data",
        "data.synthetic={seed: 1}": "is a section",
        "+model.foo=1": "+KEY",
        "~data.root": "~KEY",
        "data.nonexistent=1": "KEY a field of the config stored in",
        "model=c2d_r50": "is a section",
        "test.num_clips=choice(1,2)": "sweeps",
    }
    for item, message in refused.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            load_run(checkpoint, [item])


def test_class_counts_that_disagree_are_refused(tiny_run, tmp_path):
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    with pytest.raises(ValueError, match=re.escape(f"{checkpoint}: data.num_classes=20 but the model has 10 "
                                                   "outputs")):
        load_run(checkpoint, ["data.num_classes=20"])
    with pytest.raises(ValueError, match=re.escape(f"{checkpoint}: its classifier has 10 classes but "
                                                   "model.num_classes=20")):
        load_run(checkpoint, ["model.num_classes=20", "data.num_classes=20"])


def test_a_plain_weights_file_loads_through_the_composed_config(stored, tiny_run, tiny_synthetic, tmp_path):
    state, _ = stored
    weights = tmp_path / "weights.pt"
    torch.save(state["model"], weights)
    with pytest.raises(NotARunCheckpoint):
        load_run(weights)
    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path))
    run = load_pretrained(cfg, weights)
    assert run.weights == "file"
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    cfg.data.num_classes = 20
    with pytest.raises(ValueError, match=r"10 classes.*20|20.*10 classes"):  # never a random 20-way head
        load_pretrained(cfg, weights)


def test_ema_weights_are_the_ones_reloaded(stored, tmp_path):
    state, _ = stored
    ema = {f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    ema["n_averaged"] = torch.tensor(7)
    path = forge(stored, tmp_path / "ema.pt", ema=ema)
    run = load_run(path)
    assert run.weights == "ema"
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, ema[f"module.{key}"]), key
    assert load_run(forge(stored, tmp_path / "plain.pt")).weights == "model"


def test_a_run_with_ema_is_retested_to_its_own_results(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "ema-run"
    from videocls.engine.trainer import fit

    fit(compose_config(tiny_overrides(tiny_synthetic, run_dir, "optim.base_lr=0.05", "trainer.ema=true",
                                      "trainer.ema_decay=0.5")), run_dir)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    run = load_run(run_dir)
    assert run.weights == "ema"
    assert not torch.equal(run.model.state_dict()["head.proj.weight"], state["model"]["head.proj.weight"])
    summary = evaluate_checkpoint(run, tmp_path / "retest")
    expected = json.loads((run_dir / "results.json").read_text())
    assert summary["weights"] == expected["weights"] == "ema"  # the run's own results say so too
    assert (summary["clip"], summary["video"]) == (expected["clip"], expected["video"])
    assert (tmp_path / "retest" / "predictions.csv").read_text() == (run_dir / "predictions.csv").read_text()


def _tool_test(out_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tools" / "test.py"), *overrides,
                             f"hydra.run.dir={out_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def test_tools_test_reproduces_the_run_without_experiment(tiny_run, tmp_path):
    """Both ways of naming the run (test.checkpoint=, and the other tools' leading path, here a
    sweep's run directory whose =/, Hydra cannot take unquoted) test what was trained."""
    sweep_dir = tmp_path / "0_model=i3d_r50,seed=0"
    shutil.copytree(tiny_run, sweep_dir)
    # Both at once: most of each run is imports.
    procs = {"key": _tool_test(tmp_path / "key", f"test.checkpoint={tiny_run / 'checkpoints' / 'last.pt'}"),
             "path": _tool_test(tmp_path / "path", str(sweep_dir), "experiment=demo")}
    expected = json.loads((tiny_run / "results.json").read_text())
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-5000:]
        got = json.loads((tmp_path / name / "results.json").read_text())
        assert (got["clip"], got["video"]) == (expected["clip"], expected["video"]), name
        assert got["weights"] == "model"
        predictions = (tmp_path / name / "predictions.csv").read_bytes()
        assert predictions == (tiny_run / "predictions.csv").read_bytes(), name


def test_a_leading_path_becomes_a_quoted_checkpoint_override(tmp_path):
    tool = load_tool("test")
    odd = tmp_path / "0_model=c2d_r50,seed=0"
    odd.mkdir()
    assert tool.checkpoint_argument(["test.py", str(odd), "test.num_clips=5"]) == [
        "test.py", f"test.checkpoint='{odd}'", "test.num_clips=5"]
    quoted = tmp_path / "it's"
    quoted.mkdir()
    assert tool.checkpoint_argument(["test.py", str(quoted)])[1] == f'test.checkpoint="{quoted}"'
    for argv in (["test.py", "-m", "x=1"], ["test.py", "model=c2d_r50"],
                 ["test.py", str(tmp_path / "missing")], ["test.py"]):
        assert tool.checkpoint_argument(argv) == argv
    both = tmp_path / "it's \"both\""
    both.mkdir()
    with pytest.raises(SystemExit, match="both kinds of quote"):
        tool.checkpoint_argument(["test.py", str(both)])


def test_tools_test_refuses_a_class_count_and_a_crafted_checkpoint(stored, tiny_run, tmp_path):
    marker = tmp_path / "ran"
    path = forge(stored, tmp_path / "evil.pt",
                 lambda t: t["data"].update(synthetic=payloads(marker)["command"]))
    # Both at once: most of each run is imports.
    procs = [_tool_test(tmp_path / "classes", f"test.checkpoint={tiny_run}", "data.num_classes=20"),
             _tool_test(tmp_path / "evil", f"test.checkpoint={path}")]
    (classes, _), (evil, _) = [proc.communicate(timeout=600) for proc in procs]
    assert procs[0].returncode != 0 and "data.num_classes=20 but the model has 10 outputs" in classes, classes
    assert procs[1].returncode != 0 and not marker.exists()
    assert f"{path}: stored config key data.synthetic._target_ is not data" in evil, evil
    assert not list(tmp_path.glob("*/results.json"))


def test_predict_and_calibrate_refuse_a_crafted_checkpoint(stored, tiny_run, tmp_path, capsys):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = forge(stored, run / "checkpoints" / "last.pt",
                 lambda t: t["data"].update(synthetic=payloads(marker)["command"]))
    video = tiny_run.parent  # never read: loading is refused first
    message = f"{path}: stored config key data.synthetic._target_ is not data"
    assert load_tool("predict").main([str(video), "--weights", str(path), "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert load_tool("calibrate").main([str(run)]) == 2
    assert message in capsys.readouterr().err
    assert not marker.exists()
    shutil.rmtree(run)


def test_a_checkpoint_from_before_the_model_owned_its_alpha_still_loads(stored, tmp_path):
    """Older runs stored data.slowfast_alpha; it is dropped (the model's own alpha packs the
    pathways now), while any other unknown data key is still refused."""
    old = forge(stored, tmp_path / "old.pt", lambda tree: tree["data"].update(slowfast_alpha=None))
    assert load_run(old).data.num_classes == stored[1]["data"]["num_classes"]
    bad = forge(stored, tmp_path / "bad.pt", lambda tree: tree["data"].update(pathway_ratio=4))
    with pytest.raises(ValueError, match="data.pathway_ratio is not a data setting"):
        load_run(bad)


def test_one_loader_for_runs_and_foreign_weights(stored, tiny_run, tiny_synthetic, tmp_path):
    """load_run_or_weights: a run is load_run with the overrides on its stored config; a weights
    file is load_pretrained under configs/train.yaml composed with the same overrides, with the
    evaluation rule (strict_head) or the features rule (a new head for data.num_classes)."""
    state, _ = stored
    run = load_run_or_weights(tiny_run, ["test.num_clips=5"])
    assert (run.weights, run.config.test.num_clips) == ("model", 5)
    assert run.checkpoint == tiny_run / "checkpoints" / "last.pt"
    weights = tmp_path / "weights.pt"
    torch.save(state["model"], weights)
    overrides = [o for o in tiny_overrides(tiny_synthetic, tmp_path) if not o.startswith("hydra.")]
    foreign = load_run_or_weights(weights, overrides)
    assert foreign.weights == "file" and foreign.config.test.num_clips == 2  # tiny_overrides' value
    for key, value in foreign.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    with pytest.raises(ValueError, match=r"10 classes.*20|20.*10 classes"):  # never a random 20-way head
        load_run_or_weights(weights, [*overrides, "data.num_classes=20"])
    # Features take any head: a new 20-way classifier, every other tensor the file's.
    loaded = load_run_or_weights(weights, [*overrides, "data.num_classes=20"], strict_head=False)
    tensors = loaded.model.state_dict()
    head = f"{loaded.model.classifier_prefix}.weight"
    assert tensors[head].shape[0] == 20 and loaded.data.num_classes == 20
    assert all(torch.equal(v, state["model"][k]) for k, v in tensors.items() if k not in (
        head, f"{loaded.model.classifier_prefix}.bias"))
    # The any-head path checks the model keys as every load does (it used to call the builder itself).
    with pytest.raises(ValueError, match=re.escape("model.bogus is not an argument of i3d_r50")):
        load_run_or_weights(weights, [*overrides, "+model.bogus=3"], strict_head=False)
