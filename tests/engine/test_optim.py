import math

import pytest
import torch
from torch import nn

from videocls.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups, scaled_lr


def test_linear_scaling_rule():
    assert scaled_lr(0.1, 512, 64) == pytest.approx(0.8)
    assert scaled_lr(0.1, 512, None) == 0.1


def test_warmup_then_cosine_by_hand():
    # 10 warm-up steps from 0.1x, then cosine over the remaining 90 steps to 0.
    assert lr_factor(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(5, 100, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(40, 100, 10, "steps", milestones=(30, 60), gamma=0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, 1)
            self.bn = nn.BatchNorm3d(4)
            self.pos_embed = nn.Parameter(torch.zeros(1, 4))
            self.fc = nn.Linear(4, 2)

    net = Net()
    decay, no_decay = param_groups(net, 1e-4, decay_norm_bias_embed=False)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([net.conv.weight, net.fc.weight])
    assert ids(no_decay["params"]) == ids([net.conv.bias, net.bn.weight, net.bn.bias, net.pos_embed, net.fc.bias])
    assert no_decay["weight_decay"] == 0.0
    assert len(param_groups(net, 1e-4, decay_norm_bias_embed=True)) == 1


def test_scheduler_is_per_iteration():
    net = nn.Linear(2, 2)
    opt = build_optimizer(net, global_batch_size=128, name="sgd", base_lr=0.1, base_batch_size=64)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # linear scaling: 0.1 * 128 / 64
    sched = build_scheduler(opt, steps_per_epoch=10, max_epochs=5, warmup_epochs=1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.01)  # warm-up starts at 1%
    lrs = []
    for _ in range(50):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[9] == pytest.approx(0.2)  # warm-up over after 10 steps
    assert lrs[29] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 20 / 40)))
