"""``results.json`` and the table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(summary: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


def format_results(summary: dict, title: str = "results") -> str:
    """A small fixed-width table of clip- and video-level metrics."""
    rows = [("level", "metric", "value")]
    for level in ("clip", "video"):
        for metric, value in summary.get(level, {}).items():
            rows.append((level, metric, f"{value:.4f}"))
    rows.append(("", "videos", str(summary.get("num_videos", ""))))
    rows.append(("", "views", str(summary.get("num_views", ""))))
    if "protocol" in summary:
        p = summary["protocol"]
        rows.append(("", "protocol", f"{p['num_clips']} clips x {p['num_crops']} crops, {p['aggregation']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for i, row in enumerate(rows):
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)
