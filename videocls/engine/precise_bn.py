"""Precise BN (PySlowFast): BatchNorm statistics re-estimated for the final weights, and the
same on every DDP rank."""

from __future__ import annotations

import torch
from torch import nn

from videocls.engine.distributed import DistEnv, all_reduce_sum_
from videocls.engine.runtime import autocast, to_device
from videocls.models.freezing import FROZEN_ATTRIBUTE


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader, num_batches: int, env: DistEnv, precision: str) -> None:
    """Precise BN (PySlowFast): re-estimate BatchNorm statistics as a true average over batches.

    Running averages with momentum lag behind the final weights; this replaces them. Each
    statistic is the average of the per-batch statistics (means and unbiased variances, as
    PySlowFast's precise BN; not the pooled variance of all features).

    Under DDP every rank sees its own shard, so the per-rank averages are then averaged over
    ranks, weighted by each rank's batch count: every rank ends with the statistics a single
    process would compute from all ranks' batches, and the saved checkpoint (rank 0's) holds
    the statistics every rank evaluated with.
    """
    # Frozen BatchNorms (fine-tuning, videocls.models.freezing) keep the statistics they came with.
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and not getattr(m, FROZEN_ATTRIBUTE, False)]
    if not bns or num_batches <= 0:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = exact mean over the batches seen
    was_training = model.training
    model.train()
    for i, batch in enumerate(loader):
        if i >= num_batches:
            break
        with autocast(env.device, precision):
            model(to_device(batch["video"], env.device))
    if env.distributed:
        for bn in bns:
            count = bn.num_batches_tracked.to(bn.running_mean.dtype)
            packed = torch.cat([bn.running_mean * count, bn.running_var * count, count.view(1)])
            all_reduce_sum_(packed)
            total = packed[-1].clamp(min=1)
            bn.running_mean.copy_(packed[: bn.num_features] / total)
            bn.running_var.copy_(packed[bn.num_features : 2 * bn.num_features] / total)
            bn.num_batches_tracked.fill_(int(packed[-1].item()))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.train(was_training)
