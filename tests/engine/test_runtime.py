"""engine/runtime.py: one frozen object carries device, precision, memory format and seed."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from videocls.engine.runtime import Runtime, seed_everything, to_device


def test_from_config_reads_the_trainer_section_and_normalises_values():
    trainer = OmegaConf.create({"precision": 32, "channels_last": True, "seed": 7, "device": "auto"})
    runtime = Runtime.from_config(trainer, torch.device("cpu"))
    # YAML gives precision 32 as an int; trainer.device "auto" is not a device: the resolved one is used.
    assert runtime == Runtime(torch.device("cpu"), precision="32", channels_last=True, seed=7)
    assert Runtime("cpu").device == torch.device("cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        runtime.seed = 1


def test_a_bad_precision_is_refused_naming_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"trainer.precision='64': use one of 32, bf16, 16"):
        Runtime(torch.device("cpu"), precision="64")


def test_to_device_keeps_values_and_sets_the_memory_format_of_every_pathway():
    slow, fast = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 8, 4, 4)
    moved = Runtime(torch.device("cpu"), channels_last=True).to_device([slow, fast])
    assert [torch.equal(a, b) for a, b in zip(moved, (slow, fast))] == [True, True]
    assert all(v.is_contiguous(memory_format=torch.channels_last_3d) and not v.is_contiguous() for v in moved)
    plain = to_device(slow, torch.device("cpu"))
    assert plain.is_contiguous()


def test_autocast_follows_the_precision():
    x = torch.randn(2, 4)
    w = torch.randn(4, 3)
    with Runtime(torch.device("cpu"), precision="bf16").autocast():
        assert (x @ w).dtype == torch.bfloat16
    with Runtime(torch.device("cpu")).autocast():
        assert (x @ w).dtype == torch.float32


def test_seed_everything_repeats_the_draws():
    seed_everything(3)
    first = (torch.rand(3), np.random.rand(), random.random())
    seed_everything(3)
    second = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
