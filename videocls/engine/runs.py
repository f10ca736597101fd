"""Read finished run directories back: their config, final metrics and results.

``tools/compare_runs.py`` puts sibling runs side by side on clusters without W&B access.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf


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
    return metrics


def differing_config(configs: list[dict[str, object]]) -> list[str]:
    """Config keys whose value is not the same in every run."""
    keys = sorted(set().union(*configs))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def compare_table(run_dirs: list[str | Path], metrics: list[str]) -> str:
    """Rows: the chosen metrics, then every config value that differs between the runs."""
    configs = [run_config(d) for d in run_dirs]
    values = [run_metrics(d) for d in run_dirs]
    header = ["", *[Path(d).name for d in run_dirs]]
    rows = [header]
    for name in metrics:
        rows.append([name, *[_fmt(v.get(name)) for v in values]])
    diff = differing_config(configs)
    if diff:
        rows.append(["-- config --", *[""] * len(run_dirs)])
        rows.extend([key, *[_fmt(c.get(key)) for c in configs]] for key in diff)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
