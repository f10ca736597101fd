"""Read finished run directories back: their config, final metrics and results.

``tools/compare_runs.py`` puts sibling runs side by side on clusters without W&B access.
Runs whose configs differ only in the seed are one setting repeated: ``compare_table`` puts
them in one column as ``mean +- std (n)``, the ablation table a sweep over seeds is for.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from omegaconf import OmegaConf

#: Config keys that only re-draw randomness: runs that differ in nothing else are grouped.
SEED_KEYS = ("trainer.seed", "seed")


def _flatten(tree, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        flat[prefix] = tree
    return flat


def run_config(run_dir: str | Path) -> dict[str, object]:
    """The run's config as saved by Hydra, flattened to dotted keys."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no .hydra/config.yaml (not a tools/train.py run directory?)")
    return _flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))


def run_metrics(run_dir: str | Path) -> dict[str, object]:
    """Last logged value of every metric in ``metrics.jsonl``, then ``results.json`` on top."""
    run_dir = Path(run_dir)
    metrics: dict[str, object] = {}
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            row = json.loads(line)
            metrics.update({k: v for k, v in row.items() if k != "step"})
    results = run_dir / "results.json"
    if results.is_file():
        summary = json.loads(results.read_text())
        for level in ("clip", "video"):
            metrics.update({f"{level}/{k}": v for k, v in summary.get(level, {}).items()})
        # The run's cost, e.g. train_minutes / train_cpu_minutes (tools/compare_runs.py --metrics).
        metrics.update({k: v for k, v in summary.items() if k.endswith("_minutes")})
    return metrics


def differing_config(configs: list[dict[str, object]]) -> list[str]:
    """Config keys whose value is not the same in every run."""
    keys = sorted(set().union(*configs))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def group_by_seed(configs: list[dict[str, object]]) -> list[list[int]]:
    """Indices of the runs grouped by their config without the seed keys, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        key = json.dumps({k: v for k, v in config.items() if k not in SEED_KEYS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def mean_std(values: list[object]) -> str:
    """``mean +- std (n)`` of the numeric values (sample std; runs without the metric are left out)."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return "-"
    if len(numbers) == 1:
        return f"{numbers[0]:.4f} (n=1)"
    return f"{statistics.mean(numbers):.4f} +- {statistics.stdev(numbers):.4f} (n={len(numbers)})"


def compare_table(run_dirs: list[str | Path], metrics: list[str], group_seeds: bool = True) -> str:
    """Rows: the chosen metrics, then every config value that differs between the runs.

    With ``group_seeds`` (and some runs that differ only in the seed) each column is one group of
    runs, its metrics ``mean +- std (n)`` over the seeds, its header the first run's name plus
    ``x n``; the config rows then compare the groups (seeds left out).
    """
    configs = [run_config(d) for d in run_dirs]
    values = [run_metrics(d) for d in run_dirs]
    groups = group_by_seed(configs) if group_seeds else [[i] for i in range(len(run_dirs))]
    if len(groups) == len(run_dirs):  # no repeated setting: one column per run, exact values
        header = ["", *[Path(d).name for d in run_dirs]]
        cells = [[_fmt(v.get(name)) for v in values] for name in metrics]
        group_configs = configs
    else:
        header = ["", *[f"{Path(run_dirs[g[0]]).name} x{len(g)}" for g in groups]]
        cells = [[mean_std([values[i].get(name) for i in g]) for g in groups] for name in metrics]
        group_configs = [{k: v for k, v in configs[g[0]].items() if k not in SEED_KEYS} for g in groups]
    rows = [header]
    rows.extend([name, *row] for name, row in zip(metrics, cells))
    diff = differing_config(group_configs)
    if diff:
        rows.append(["-- config --", *[""] * (len(header) - 1)])
        rows.extend([key, *[_fmt(c.get(key)) for c in group_configs]] for key in diff)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
