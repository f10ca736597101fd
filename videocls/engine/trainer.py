"""The training loop: one readable path from a batch to an optimiser step.

``fit(cfg, run_dir)`` is what ``tools/train.py`` calls. It builds the parts from the Hydra
config, resumes from ``<run dir>/checkpoints/last.pt`` when one exists, trains with DDP /
AMP / accumulation / clipping / EMA as configured, evaluates, and writes ``results.json``.

Why one module of ~500 lines: what is left here is the loop's own state and its order of
operations (micro-batch, accumulate, unscale, norm, step or skip, scaler, schedule, EMA, the
counters that checkpoints store and resuming and preemption restore). That order is one
invariant; split across files, a change on one side would silently break the other. Every job
that is not the loop lives elsewhere: device, precision and seeding (``runtime``), checkpoint
files and signals (``checkpoint``), config checks (``config_checks``), evaluation and the test
protocol (``evaluator``, ``tester``), precise BN, the run-directory lock, and the optimiser and
schedule builders (``optim``).
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from videocls.data.datamodule import model_input
from videocls.data.dataset import report_skipped
from videocls.data.gpu_transforms import device_transform_of
from videocls.data.loader import build_loader
from videocls.data.mix import Mixup, batch_generator
from videocls.engine.checkpoint import (
    Preempted,
    PreemptionFlag,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
    worker_killed_by_signal,
)
from videocls.engine.config_checks import (
    apply_group_hyperparameters,
    check_config,
    format_changes,
    refuse_changed_hyperparameters,
)
from videocls.engine.distributed import (
    all_gather_objects,
    any_rank,
    barrier,
    broadcast_object,
    init_distributed,
    share_cpu_cores,
    shutdown,
)
from videocls.engine.evaluator import EvalResult, evaluate
from videocls.engine.logging import RunLogger
from videocls.engine.losses import SoftTargetCrossEntropy
from videocls.engine.multigrid import MultigridTraining, configure, format_plan
from videocls.engine.precise_bn import recompute_bn_stats
from videocls.engine.run_lock import claim_run_dir, lock_users, release_if_taken_since
from videocls.engine.runtime import Runtime, seed_everything
from videocls.engine.tester import run_test

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: str | Path) -> None:
        # Multigrid (engine/multigrid.py) lengthens the run and moves the LR steps, as PySlowFast.
        cfg, multigrid_plan = configure(cfg)
        self.cfg = cfg
        self.started = (time.monotonic(), cpu_seconds())  # results.json: minutes to the final test
        t = cfg.trainer
        check_config(cfg, training=True)  # before any work: bad values name their key
        self.env = init_distributed(t.device)
        # Each rank's Hydra picks its own timestamped dir; rank 0's is the run's (and resume's).
        self.run_dir = Path(broadcast_object(str(run_dir)))
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.run_lock = claim_run_dir(self.run_dir) if self.env.is_main else None  # one run per dir
        # Device, precision, memory format and seed: one object for every loop that runs the model.
        self.runtime = Runtime.from_config(t, self.env.device)
        seed_everything(self.runtime.seed, deterministic=t.deterministic)
        self.accumulate = int(t.accumulate_grad_batches)

        self.data = instantiate(cfg.data)
        if self.env.is_main:
            self.data.prepare()
        barrier()
        model = instantiate(cfg.model).to(self.env.device)
        # The model owns its input: normalisation and (SlowFast) its pathway ratio.
        # on_device: with data.gpu_transforms the workers ship uint8 and _on_device finishes the batches.
        self.train_set = self.data.dataset("train", train=True, **model_input(model), seed=t.seed,
                                           on_device=True)
        self.val_set = self.data.dataset("val", train=False, **model_input(model), num_clips=t.val_num_clips,
                                         num_crops=t.val_num_crops, seed=t.seed, on_device=True)
        loader_args = dict(num_workers=self.data.num_workers, seed=t.seed, num_replicas=self.env.world_size,
                           rank=self.env.rank, pin_memory=self.env.device.type == "cuda")
        share_cpu_cores(self.env, self.data.num_workers)
        self.train_loader = build_loader(self.train_set, self.data.batch_size, train=True,
                                         class_balanced=self.data.class_balanced, **loader_args)
        self.val_loader = build_loader(self.val_set, cfg.test.batch_size, train=False,
                                       max_views_per_batch=cfg.test.max_views_per_batch, **loader_args)

        if self.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        if t.sync_bn and self.env.distributed:
            if self.env.device.type == "cpu":  # else DDP fails with "only work with GPU modules"
                raise ValueError("trainer.sync_bn=true needs GPUs: SyncBatchNorm has no CPU implementation")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model  # the bare module: what is saved, evaluated and averaged
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
                    if t.ema else None)
        self.global_batch = self.data.batch_size * self.env.world_size * self.accumulate
        self.optimizer = instantiate(cfg.optim)(model, global_batch_size=self.global_batch)
        self.steps_per_epoch = len(self.train_loader) // self.accumulate
        # The micro-batches after the last full accumulation are not run (as the official
        # TimeSformer): run, they would either leak gradients into the next epoch or make a
        # smaller, differently scaled step.
        self.batches_per_epoch = self.steps_per_epoch * self.accumulate
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"an epoch has {len(self.train_loader)} batches, "
                f"fewer than accumulate_grad_batches={self.accumulate}"
            )
        schedule = instantiate(cfg.schedule)
        # Multigrid: each epoch's clip shape and batch sizes, and a schedule that follows them.
        self.multigrid = None if multigrid_plan is None else MultigridTraining(
            multigrid_plan, self.data, model=model, base_loader=self.train_loader,
            num_items=len(self.train_set),
            dataset_kwargs=dict(**model_input(model), seed=t.seed), loader_kwargs=loader_args,
            accumulate=self.accumulate, device=self.env.device)
        if self.multigrid is not None:
            schedule = self.multigrid.schedule(schedule)
            if self.env.is_main:
                log.info("multigrid schedule (%d epochs):\n%s", t.max_epochs,
                         format_plan(multigrid_plan, self.data.batch_size))
        self.scheduler = schedule(self.optimizer, self.steps_per_epoch, t.max_epochs)
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=self.runtime.precision == "16")
        self.mixup = Mixup(num_classes=self.data.num_classes, **self.data.mixup) if self.data.mixup else None
        # Mixup/CutMix yields soft targets (with its own label smoothing): they need a soft-target loss.
        self.criterion = (SoftTargetCrossEntropy() if self.mixup
                          else instantiate(cfg.loss)).to(self.env.device)
        train_model = DistributedDataParallel(model) if self.env.distributed else model
        self.train_model = torch.compile(train_model) if t.compile else train_model

        self.epoch, self.global_step, self.batches_done = 0, 0, 0
        self.best_metric = -math.inf
        self.skipped: dict[str, str] = {}
        self.skipped_steps = 0  # optimiser steps skipped for a non-finite gradient norm
        # The weights validation, best.pt and results.json are computed with.
        self.eval_weights = "ema" if self.ema is not None else "model"
        self.logger = RunLogger(self.run_dir, enabled=self.env.is_main,
                                config=OmegaConf.to_container(cfg, resolve=True), **cfg.logger)
        self._resume()
        if self.env.is_main:
            self._log_start()

    def _base_lr(self, key: str = "lr") -> float:
        """The scheduled LR before fine-tuning's per-group factors (``lr_scale``, optim.head_lr_mult
        and optim.layer_decay): what the recipe's schedule gives at this step."""
        group = self.optimizer.param_groups[0]
        return group[key] / group.get("lr_scale", 1.0)

    def _log_start(self) -> None:
        """The batch, the LR (per group when fine-tuning splits them), and what trains: frozen,
        decayed and undecayed parameter counts."""
        groups = self.optimizer.param_groups
        peak = self._base_lr("initial_lr")
        params = list(self.model.parameters())
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        decayed = sum(p.numel() for g in groups if g["weight_decay"] > 0 for p in g["params"])
        undecayed = sum(p.numel() for g in groups if g["weight_decay"] == 0 for p in g["params"])
        scales = sorted({round(g.get("lr_scale", 1.0), 6) for g in groups})
        log.info("global batch %d (%d per device x %d devices x %d accumulation), peak lr %.4g%s; "
                 "parameters: %d trained (%d decayed, %d not), %d frozen",
                 self.global_batch, self.data.batch_size, self.env.world_size, self.accumulate, peak,
                 f", LR factors {scales}" if scales != [1.0] else "", decayed + undecayed, decayed,
                 undecayed, frozen)
        self.logger.log({"global_batch_size": self.global_batch, "lr_scaled": peak,
                         "params/trained": decayed + undecayed, "params/decayed": decayed,
                         "params/frozen": frozen}, step=self.global_step)

    # ----------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_done": self.batches_done,
            "best_metric": self.best_metric,
            "skipped_steps": self.skipped_steps,
            "rng": rng_state(),
            "model_name": self.cfg.model.name,
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
        }

    def save(self, name: str = "last.pt") -> Path | None:
        if not self.env.is_main:
            return None
        path = save_atomic(self._state(), self.ckpt_dir / name)
        self.logger.log({"checkpoint": str(path)}, step=self.global_step)
        return path

    def _resume(self) -> None:
        choice = str(self.cfg.trainer.resume)
        path = self.ckpt_dir / "last.pt" if choice == "auto" else None if choice == "never" else Path(choice)
        if path is None or not path.is_file():
            if choice not in ("auto", "never"):
                raise FileNotFoundError(f"trainer.resume={choice}: no such checkpoint")
            return
        state = load_checkpoint(path)
        changes = refuse_changed_hyperparameters(path, state.get("config"), self.cfg)
        if changes and self.env.is_main:
            log.warning("resuming %s with changed hyper-parameters (trainer.resume_allow_changes=true); "
                        "the new values apply from the resumed step:\n  %s", path, format_changes(changes))
            self.logger.log({"resume/changed": format_changes(changes, sep="; ")},
                            step=int(state.get("global_step", 0)))
        # The hyper-parameters of the optimiser's groups as this run's config sets them.
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if changes:
            apply_group_hyperparameters(self.optimizer, self.scheduler, fresh)
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batches_done, self.best_metric = state["batches_done"], state["best_metric"]
        self.skipped_steps = int(state.get("skipped_steps", 0))
        set_rng_state(state["rng"])
        if self.env.is_main:
            log.info("resumed from %s at epoch %d, batch %d (global step %d)",
                     path, self.epoch, self.batches_done, self.global_step)

    # ----------------------------------------------------------------------------- training
    def _sync_context(self, batch_index: int):
        """Skip DDP's gradient all-reduce on the accumulating (non-stepping) micro-batches."""
        stepping = (batch_index + 1) % self.accumulate == 0
        if self.env.distributed and not stepping:
            return self.train_model.no_sync() if hasattr(self.train_model, "no_sync") else nullcontext()
        return nullcontext()

    def _optimizer_step(self) -> float:
        """Clip, step, advance the schedule; returns the global gradient norm (before clipping).

        A non-finite norm skips the update, as a GradScaler does for fp16 overflows: the
        gradients are dropped, the weights, the optimiser state and the EMA stay as they were,
        and the parameters with non-finite gradients are named. The schedule still advances and
        the step still counts, so the learning rate stays a function of the step (what resuming
        relies on); skipped steps are counted (``train/skipped_steps``).
        """
        t = self.cfg.trainer
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        # The norm alone does not touch the gradients (clip_grad_norm_(inf) would multiply them
        # all by inf / NaN = NaN); they are scaled only when clipping is asked for.
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        grad_norm = norm.item()
        if math.isfinite(grad_norm):
            if t.grad_clip:
                torch.nn.utils.clip_grads_with_norm_(params, t.grad_clip, norm)
            self.scaler.step(self.optimizer)
        else:
            self._skip_step(grad_norm)
        self.scaler.update()  # after a skip it lowers the fp16 scale (unscale_ recorded the inf)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None and math.isfinite(grad_norm):
            self.ema.update_parameters(self.model)
        self.global_step += 1
        return grad_norm

    def _skip_step(self, grad_norm: float) -> None:
        self.skipped_steps += 1
        if not self.env.is_main:
            return
        bad = [name for name, p in self.model.named_parameters()
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        # fp16 overflows are routine while the GradScaler finds its scale: no alarm for them.
        level = logging.DEBUG if self.runtime.precision == "16" else logging.WARNING
        log.log(level, "skipped optimiser step %d (epoch %d): gradient norm %s; non-finite gradients in "
                "%d parameter(s): %s (%d steps skipped so far)", self.global_step, self.epoch, grad_norm,
                len(bad), ", ".join(bad[:10]) + (", ..." if len(bad) > 10 else ""), self.skipped_steps)

    def _check_finite(self, loss: torch.Tensor) -> None:
        if any_rank(not torch.isfinite(loss).item()):
            if self.env.is_main:
                path = save_atomic(self._state(), self.ckpt_dir / "nan.pt")
                log.error("non-finite loss; debugging state saved to %s (last.pt is untouched)", path)
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {self.epoch}, global step {self.global_step}; "
                f"last good checkpoint: {self.ckpt_dir / 'last.pt'}"
            )

    def train_epoch(self, preempt: PreemptionFlag) -> bool:
        """One epoch from ``self.batches_done``; returns False when stopped by a signal."""
        t = self.cfg.trainer
        self.train_set.set_epoch(self.epoch)
        if self.multigrid is not None:  # this epoch's clip shape and batch sizes, from the resume point
            self.train_loader, self.batches_per_epoch = self.multigrid.epoch_loader(self.epoch,
                                                                                    self.batches_done)
        else:
            self.train_loader.sampler.set_epoch(self.epoch, start=self.batches_done * self.data.batch_size)
        self.train_model.train()
        finish = device_transform_of(self.train_loader.dataset)  # data.gpu_transforms
        total = self.batches_per_epoch
        bar = tqdm(total=total, initial=self.batches_done, desc=f"epoch {self.epoch}",
                   disable=not (self.env.is_main and sys.stderr.isatty()), leave=False)
        wait_start, last = time.perf_counter(), time.perf_counter()
        data_time, clips, losses = 0.0, 0, []
        # The whole epoch's throughput and data stall, for the summary line (the logged ones are
        # per logging interval).
        epoch_start, epoch_wait, epoch_clips = time.perf_counter(), 0.0, 0
        for i, batch in enumerate(self.train_loader, start=self.batches_done):
            if i >= self.batches_per_epoch:
                break  # leftover micro-batches of an incomplete accumulation are not run
            waited = time.perf_counter() - wait_start
            data_time += waited
            epoch_wait += waited
            report_skipped(batch["skipped"])  # one warning per video, not per item or worker
            for path, reason in batch["skipped"]:
                self.skipped.setdefault(path, reason)
            video = batch["video"] if finish is None else finish(batch["video"], self.env.device)
            video = self.runtime.to_device(video)
            label = batch["label"].to(self.env.device, non_blocking=True)
            if self.mixup is not None:
                rng = batch_generator(seed=self.runtime.seed, epoch=self.epoch, batch_index=i,
                                      rank=self.env.rank)
                video, label = self.mixup(video, label, rng)
            with self._sync_context(i):
                with self.runtime.autocast():
                    loss = self.criterion(self.train_model(video), label)
                self.scaler.scale(loss / self.accumulate).backward()
            self._check_finite(loss.detach())
            losses.append(loss.item())
            clips += label.shape[0]
            epoch_clips += label.shape[0]
            bar.update(1)
            if (i + 1) % self.accumulate:
                wait_start = time.perf_counter()
                continue
            grad_norm = self._optimizer_step()
            self.batches_done = i + 1
            if self.global_step % t.log_every_n_steps == 0 and self.env.is_main:
                elapsed = time.perf_counter() - last
                self.logger.log({
                    "train/loss": sum(losses) / len(losses),
                    "train/lr": self._base_lr(),
                    "train/grad_norm": grad_norm,
                    "train/skipped_steps": self.skipped_steps,
                    "train/clips_per_s": clips * self.env.world_size / elapsed,
                    "train/data_wait_frac": data_time / elapsed,
                    "train/gpu_mem_gb": (torch.cuda.max_memory_allocated() / 2**30
                                         if torch.cuda.is_available() else 0.0),
                    "epoch": self.epoch,
                }, step=self.global_step)
                # The stall where the user looks: clips/s and the share of time spent waiting for data.
                bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}",
                                clips_s=f"{clips * self.env.world_size / elapsed:.1f}",
                                data_wait=f"{data_time / elapsed:.0%}")
                last, data_time, clips, losses = time.perf_counter(), 0.0, 0, []
            if t.checkpoint_every_n_steps and self.global_step % t.checkpoint_every_n_steps == 0:
                self.save()
            if any_rank(bool(preempt)):
                self.save()
                bar.close()
                return False
            wait_start = time.perf_counter()
        bar.close()
        self._log_epoch_throughput(epoch_clips, epoch_wait, time.perf_counter() - epoch_start)
        return True

    def _log_epoch_throughput(self, clips: int, waited: float, elapsed: float) -> None:
        """The epoch summary of the data stall: clips/s over all ranks and the fraction of rank 0's
        wall time spent waiting for batches (near 1: add loader workers or cores)."""
        if not self.env.is_main or clips == 0 or elapsed <= 0:
            return
        clips_per_s, wait = clips * self.env.world_size / elapsed, waited / elapsed
        log.info("epoch %d: %.1f clips/s, waited for data %.0f%% of the time", self.epoch, clips_per_s,
                 100 * wait)
        self.logger.log({"train/epoch_clips_per_s": clips_per_s, "train/epoch_data_wait_frac": wait,
                         "epoch": self.epoch}, step=self.global_step)

    def validate(self) -> EvalResult:
        t, rt = self.cfg.trainer, self.runtime
        model = self.ema.module if self.ema is not None else self.model
        if t.precise_bn_batches:
            # Multigrid: statistics of the base shape, the one validation runs at.
            loader = self.train_loader if self.multigrid is None else self.multigrid.base_loader
            recompute_bn_stats(model, _on_device(loader, self.env.device),
                               num_batches=t.precise_bn_batches, env=self.env, precision=rt.precision)
        return evaluate(model, self.val_loader, self.env, aggregation=self.cfg.test.aggregation,
                        precision=rt.precision, max_views_per_batch=self.cfg.test.max_views_per_batch,
                        channels_last=rt.channels_last)

    def _record_epoch(self, result: EvalResult) -> None:
        t = self.cfg.trainer
        metric = result.video[t.best_metric] if t.best_metric in result.video else result.clip[t.best_metric]
        metrics = {f"val/clip_{k}": v for k, v in result.clip.items()}
        metrics.update({f"val/video_{k}": v for k, v in result.video.items()})
        metrics.update({"epoch": self.epoch, "data/skipped_videos": len(self.skipped),
                        "train/skipped_steps": self.skipped_steps})
        self.logger.log(metrics, step=self.global_step)
        if self.env.is_main:
            log.info("epoch %d: val %s, skipped videos %d, skipped steps %d", self.epoch,
                     ", ".join(f"video {k} {v:.3f}" for k, v in result.video.items()), len(self.skipped),
                     self.skipped_steps)
        if metric > self.best_metric:
            self.best_metric = metric
            self.save("best.pt")

    def _write_skipped(self) -> None:
        if self.env.is_main and self.skipped:
            lines = [f"{path}\t{reason}" for path, reason in sorted(self.skipped.items())]
            (self.run_dir / "skipped_videos.tsv").write_text("\n".join(lines) + "\n")

    def fit(self) -> dict | None:
        """Train to ``trainer.max_epochs``, then run the test protocol; returns the results (rank 0).

        SIGTERM/SIGUSR1 (any rank) saves ``last.pt`` at the next optimiser step, or, when it
        comes during validation, once the epoch is validated and saved, then raises
        :class:`Preempted` (``tools/train.py`` exits 128 + the signal number); rerunning the
        same command resumes there. For the final test, see :meth:`test`.
        """
        t = self.cfg.trainer
        with PreemptionFlag() as preempt:
            while self.epoch < t.max_epochs:
                try:
                    stopped = not self.train_epoch(preempt)
                    if not stopped:
                        self.epoch, self.batches_done = self.epoch + 1, 0
                        # Every rank skips its own bad videos; merge them so rank 0 reports them all.
                        for shard in all_gather_objects(self.skipped):
                            self.skipped.update(shard)
                        if self.epoch % t.eval_period == 0 or self.epoch == t.max_epochs:
                            self._record_epoch(self.validate())
                        saved = self.epoch % t.checkpoint_period == 0 or self.epoch == t.max_epochs
                        if saved:
                            self.save()
                        # A signal during validation or the save: the epoch is complete; keep it.
                        stopped = any_rank(bool(preempt))
                        if stopped and not saved:
                            self.save()
                except RuntimeError as exc:
                    signum = worker_killed_by_signal(exc, preempt.received)
                    if signum is None:
                        raise
                    # A loader worker died of the job's signal before its init could ignore it.
                    # Workers start only when a loader's iteration starts, so the loop is at a
                    # step boundary: the state is consistent and saved as is (rank 0; under DDP
                    # the other ranks are left waiting in a collective for the launcher to end).
                    preempt.received = preempt.received or signum
                    log.warning("%s: the job's signal, so this is preemption", str(exc).strip())
                    self.save()
                    stopped = True
                if stopped:
                    self._write_skipped()
                    stop = Preempted(preempt.received, f"stopped by {{signal}} at epoch {self.epoch}, batch "
                                     f"{self.batches_done} (global step {self.global_step}); saved "
                                     f"{self.ckpt_dir / 'last.pt'}: rerun the same command to resume")
                    if self.env.is_main:
                        log.warning("%s", stop)
                    raise stop
        return self.test()

    def test(self) -> dict | None:
        """The final test protocol (``test.*``) on the validation split, with all its reports.

        SIGTERM/SIGUSR1 raises :class:`Preempted` at once (exit 128 + the signal number).
        """
        model = self.ema.module if self.ema is not None else self.model
        self._write_skipped()
        extra = {"checkpoint": str(self.ckpt_dir / "last.pt"), "weights": self.eval_weights,
                 "wandb_dir": self.logger.wandb_dir, "skipped_videos_train": len(self.skipped),
                 # This process only (a resumed run counts from its resume), up to the final test.
                 "train_minutes": round((time.monotonic() - self.started[0]) / 60, 2),
                 "train_cpu_minutes": round((cpu_seconds() - self.started[1]) / 60, 2)}
        # The test changes no training state and last.pt already holds the finished training, so
        # a signal stops it at once (Preempted) instead of at the end of a long evaluation; a
        # rerun of the same command finds last.pt at max_epochs and runs the test again.
        message = (f"stopped by {{signal}} during the final test; {self.ckpt_dir / 'last.pt'} holds the "
                   "finished training: rerun the same command to run the test again")
        with PreemptionFlag(interrupt=True, message=message) as preempt:
            try:
                return run_test(model, self.data, self.cfg.test, runtime=self.runtime, env=self.env,
                                run_dir=self.run_dir, logger=self.logger, step=self.global_step, extra=extra,
                                title=f"{self.cfg.model.name} on {Path(self.data.val_list).name}")
            except RuntimeError as exc:
                # A test loader worker that died of the job's signal before its init could ignore
                # it is the same preemption (as in fit): nothing to save, the same exit status.
                signum = worker_killed_by_signal(exc, preempt.received)
                if signum is None:
                    raise
                raise Preempted(signum, message) from exc

    def close(self) -> None:
        try:
            self.logger.finish()
            shutdown()
        finally:
            if self.run_lock is not None:
                self.run_lock.release()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the loader workers).

    Unlike wall time, this barely changes when other jobs share the machine, so the demo's cost
    can be compared between runs measured side by side.
    """
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _on_device(loader, device: torch.device):
    """``loader``'s batches with their clips finished on ``device`` when its dataset ships uint8
    (``data.gpu_transforms``); for precise BN, which gives the model the batches as they come."""
    finish = device_transform_of(loader.dataset)
    if finish is None:
        return loader
    return ({**batch, "video": finish(batch["video"], device)} for batch in loader)


def fit(cfg: DictConfig, run_dir: str | Path) -> dict | None:
    """Train and test as configured; the results on rank 0, None on the others.

    Raises :class:`~videocls.engine.checkpoint.Preempted` on SIGTERM/SIGUSR1 after saving
    ``last.pt``; :class:`~videocls.engine.run_lock.RunDirInUse` when another run holds ``run_dir``.
    """
    users = lock_users(run_dir)
    try:
        trainer = Trainer(cfg, run_dir)
    except BaseException:
        release_if_taken_since(run_dir, users)  # else this process keeps the directory locked
        raise
    try:
        return trainer.fit()
    finally:
        trainer.close()
