"""Train a video classifier: `python tools/train.py experiment=demo [key=value ...]`.

Single process, or `torchrun --nproc_per_node=N tools/train.py ...` for DDP. The last line
printed is `results: <run dir>/results.json`.

Exit status:
- 0: trained and tested.
- 128 + the signal number on preemption (143 for SIGTERM, 138 for SIGUSR1), what a shell
  reports for a process ended by that signal, after the save: `last.pt` holds the last
  optimiser step (or the finished training, when the signal came during the final test), and
  rerunning the same command with the same `hydra.run.dir` resumes (and runs the test).
  Send the signal to the process, its process group, or every process of the job (Slurm):
  DataLoader workers ignore it. Under torchrun, SIGTERM to torchrun reaches every worker
  (torchrun forwards it with os.killpg, waits TORCH_ELASTIC_SHUTDOWN_TIMEOUT=30 s, then kills),
  and torchrun itself then exits 1; torchrun dies on SIGUSR1 unless
  TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 is set.
- 1: an error, including a run directory held by another live run (see the message).
"""

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from videocls.engine.checkpoint import Preempted
from videocls.engine.run_lock import RunDirInUse, acquire_run_lock
from videocls.engine.trainer import fit

log = logging.getLogger(__name__)


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    with open_dict(cfg):
        # Runs of one sweep share a W&B group; each run is named by its overrides.
        if cfg.logger.get("group", "missing") is None:
            cfg.logger.group = cfg.experiment_name
        if cfg.logger.get("name", "missing") is None:
            cfg.logger.name = hc.job.override_dirname or cfg.experiment_name
    try:
        summary = fit(cfg, hc.runtime.output_dir)
    except Preempted as stop:
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"preempted: {stop}", flush=True)
        sys.exit(stop.exit_code)  # SystemExit passes through Hydra (it catches Exception)
    if summary is not None:
        print(f"results: {summary['results_path']}")


def _lock_named_run_dir(argv: list[str]) -> None:
    """Lock ``hydra.run.dir=...`` before Hydra writes ``.hydra/`` and its log there: a second run
    refused only by the trainer would already have replaced the first run's recorded config.
    (The trainer takes the same lock again, for every other way of choosing the directory.)"""
    if int(os.environ.get("RANK", 0)) != 0:
        return
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "hydra.run.dir" and value and "${" not in value:
            try:
                acquire_run_lock(value)
            except RunDirInUse as exc:
                sys.exit(f"error: {exc}")


if __name__ == "__main__":
    _lock_named_run_dir(sys.argv[1:])
    main()
