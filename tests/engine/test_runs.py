"""compare_runs' grouping over seeds, on run directories written the way tools/train.py writes them."""

import json
import statistics

import yaml

from videocls.engine.runs import compare_table, group_by_seed, mean_std


def _run(root, name, model, seed, top1):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"model": {"name": model, "width": 8}, "trainer": {"seed": seed, "max_epochs": 25}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "results.json").write_text(json.dumps({"video": {"top1": top1}, "clip": {}}))
    return run


def test_runs_that_differ_only_in_the_seed_share_a_column(tmp_path):
    scores = {"i3d_r50": [0.9, 0.95, 0.85], "c2d_r50": [0.2, 0.25]}
    runs = [_run(tmp_path, f"{m}-{s}", m, s, top1)
            for m, values in scores.items() for s, top1 in enumerate(values)]
    lines = compare_table(runs, ["video/top1"]).splitlines()
    assert lines[0].split() == ["i3d_r50-0", "x3", "c2d_r50-0", "x2"]
    row = lines[1]
    for values in scores.values():
        expected = f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f} (n={len(values)})"
        assert expected in row
    # the config rows compare the settings, not the seeds
    assert any(line.startswith("model.name") for line in lines)
    assert not any(line.startswith("trainer.seed") for line in lines)


def test_without_repeats_or_when_asked_every_run_keeps_its_column(tmp_path):
    runs = [_run(tmp_path, "a", "i3d_r50", 0, 0.5), _run(tmp_path, "b", "i3d_r50", 1, 0.75)]
    lines = compare_table(runs, ["video/top1"], group_seeds=False).splitlines()
    assert lines[0].split() == ["a", "b"]
    assert "0.5000" in lines[1] and "0.7500" in lines[1]
    assert any(line.startswith("trainer.seed") for line in lines)


def test_group_by_seed_and_mean_std():
    configs = [{"m": 1, "trainer.seed": 0}, {"m": 2, "trainer.seed": 0}, {"m": 1, "trainer.seed": 1}]
    assert group_by_seed(configs) == [[0, 2], [1]]
    assert mean_std([1.0, None, 3.0]) == f"2.0000 +- {statistics.stdev([1.0, 3.0]):.4f} (n=2)"
    assert mean_std([None]) == "-"
