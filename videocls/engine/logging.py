"""Run logging: ``metrics.jsonl`` always, W&B (offline unless configured) on rank 0.

Everything sent to W&B is also appended to ``<run dir>/metrics.jsonl``, so offline clusters
and ``tools/compare_runs.py`` see the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Rank-0 logger; on other ranks every method is a no-op (construct with ``enabled=False``)."""

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        backend: str = "wandb",
        project: str = "videocls",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        mode: str | None = None,
        config: dict | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.wandb_run = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if backend == "wandb":
            import wandb

            self.wandb_run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                name=name,
                tags=list(tags or []),
                config=config,
                dir=str(self.run_dir),
                # Offline unless the environment says otherwise: clusters often have no network.
                mode=mode or os.environ.get("WANDB_MODE", "offline"),
                resume="allow",
                id=self._run_id(),
            )
        elif backend != "none":
            raise ValueError(f"unknown logger backend {backend!r}; use wandb or none")

    def _run_id(self) -> str:
        """One W&B run per run directory, so a resumed run continues the same W&B run."""
        id_file = self.run_dir / "wandb_id.txt"
        if id_file.exists():
            return id_file.read_text().strip()
        run_id = secrets.token_hex(4)
        id_file.write_text(run_id)
        return run_id

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: _jsonable(v) for k, v in metrics.items()}, step=step)

    def images(self, images: dict[str, Path], step: int) -> None:
        """PNG files (confusion matrix, reliability diagram); metrics.jsonl records their paths."""
        images = {k: Path(v) for k, v in images.items() if Path(v).is_file()}
        if not self.enabled or not images:
            return
        self._jsonl.write(
            json.dumps({"step": step, **{f"image/{k}": str(v) for k, v in images.items()}}) + "\n"
        )
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({f"image/{k}": wandb.Image(str(v)) for k, v in images.items()}, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.enabled and self.wandb_run is not None:
            for key, value in metrics.items():
                self.wandb_run.summary[key] = _jsonable(value)

    @property
    def wandb_dir(self) -> str | None:
        return self.wandb_run.dir if self.wandb_run is not None else None

    def finish(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
