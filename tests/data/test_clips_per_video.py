"""data.clips_per_video=k (repeated augmentation): k independently sampled and augmented clips
of one video from one decode; batches flatten to batch_size x k clips; everything that counts
(samplers, batches per epoch, resume offsets, the LR's global batch) counts videos."""

import dataclasses

import numpy as np
import pytest
import torch

from videocls.data.datamodule import VideoData
from videocls.data.io.reader import VideoReader, open_video
from videocls.data.loader import build_loader

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@pytest.fixture
def decode_calls(monkeypatch):
    """The positions of every decode a reader makes (the real decoder runs; this only records)."""
    calls = []
    real = VideoReader._decode

    def recording(self, positions):
        calls.append(list(positions))
        return real(self, positions)

    monkeypatch.setattr(VideoReader, "_decode", recording)
    return calls


def _data(listed, **kwargs) -> VideoData:
    settings = dict(train_list=str(listed), val_list=str(listed), num_classes=10, num_frames=4,
                    sampling_rate=4, train_short_side=(40, 56), train_crop=32, flip=True, batch_size=2,
                    num_workers=0)
    return VideoData(**{**settings, **kwargs})


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_two_clips_are_two_augmentations_of_one_decode(real_videos_dir, tmp_path, decode_calls, backend):
    """Clip j of item i is what the k=1 recipe gives with generator (seed, epoch, i, 0[, j]),
    decoded here independently, clip by clip; the item's own decode is one call on the sorted
    union of both clips' frames. carphone_distorted.mp4 has one keyframe in 120 frames, so one
    pass instead of two is the difference between a union and separate decodes."""
    path = real_videos_dir / "carphone_distorted.mp4"
    listed = tmp_path / "train.txt"
    listed.write_text(f"{path} 7\n")
    data = _data(listed, backend=backend, clips_per_video=2)
    repeated = data.dataset("train", train=True, mean=MEAN, std=STD, seed=3)
    single = dataclasses.replace(data, clips_per_video=1).dataset("train", train=True, mean=MEAN, std=STD,
                                                                 seed=3)
    repeated.set_epoch(2)
    single.set_epoch(2)

    item = repeated[0]
    assert item["video"].shape == (2, 3, 4, 32, 32) and item["label"] == 7 and item["clips_per_video"] == 2
    reference = open_video(path, backend="pyav")
    expected, wanted = [], []
    for j in range(2):
        rng = np.random.default_rng([3, 2, 0, 0] + ([j] if j else []))
        indices = repeated.sampler(len(reference), reference.fps, True, 0, 1, rng)
        wanted += indices.tolist()
        expected.append(repeated.transform(reference.get_frames(indices.tolist()), rng=rng, spatial_idx=1))
    # One decode for the item (the union), then the reference's two.
    assert decode_calls[0] == sorted(set(wanted)) and len(decode_calls) == 1 + 2
    for j in range(2):
        assert torch.equal(item["video"][j], expected[j]), j
    assert not torch.equal(item["video"][0], item["video"][1])  # other frames, scale, crop or flip
    assert torch.equal(single[0]["video"], item["video"][0])  # clip 0 is the k=1 draw


def test_shared_frames_are_one_clip_augmented_twice(real_videos_dir, tmp_path, decode_calls):
    """``clips_share_frames`` (VideoMAE's num_sample): clip 0 as with k=1; clip 1 is clip 0's
    frames under generator (seed, epoch, i, 0, 1)'s augmentation alone; one clip's decode."""
    path = real_videos_dir / "carphone_distorted.mp4"
    listed = tmp_path / "train.txt"
    listed.write_text(f"{path} 7\n")
    data = _data(listed, backend="pyav", clips_per_video=2, clips_share_frames=True)
    dataset = data.dataset("train", train=True, mean=MEAN, std=STD, seed=3)
    item = dataset[0]
    reference = open_video(path, backend="pyav")
    rng = np.random.default_rng([3, 0, 0, 0])
    indices = dataset.sampler(len(reference), reference.fps, True, 0, 1, rng).tolist()
    frames = reference.get_frames(indices)
    assert decode_calls[0] == sorted(set(indices)) and len(decode_calls) == 2
    assert torch.equal(item["video"][0], dataset.transform(frames, rng=rng, spatial_idx=1))
    second = dataset.transform(frames, rng=np.random.default_rng([3, 0, 0, 0, 1]), spatial_idx=1)
    assert torch.equal(item["video"][1], second) and not torch.equal(item["video"][0], second)


def test_batches_flatten_video_major_and_count_videos(tiny_synthetic, decode_calls):
    """A batch of 2 videos x 3 clips is 6 rows, each video's clips adjacent with its label; the
    loader has as many batches as with k=1 (videos // batch_size); one decode per video; SlowFast
    pathways flatten alike."""
    data = _data(tiny_synthetic / "train.csv", root=str(tiny_synthetic), clips_per_video=3)
    dataset = data.dataset("train", train=True, mean=MEAN, std=STD)
    loader = build_loader(dataset, 2, num_workers=0, train=True)
    one = dataclasses.replace(data, clips_per_video=1).dataset("train", train=True, mean=MEAN, std=STD)
    assert len(dataset) == len(one) == 20 and len(loader) == len(build_loader(one, 2, 0, train=True)) == 10

    batch = next(iter(loader))
    assert batch["video"].shape == (6, 3, 4, 32, 32) and len(decode_calls) == 2
    videos = batch["video_idx"].tolist()
    assert videos == [videos[0]] * 3 + [videos[3]] * 3 and videos[0] != videos[3]
    labels = [dataset.records[v].label for v in videos]
    assert batch["label"].tolist() == labels and batch["clip_idx"].tolist() == [0, 1, 2] * 2
    assert "clips_per_video" not in batch

    pathways = data.dataset("train", train=True, mean=MEAN, std=STD, pathway_alpha=2)
    slow, fast = next(iter(build_loader(pathways, 2, 0, train=True)))["video"]
    assert slow.shape == (6, 3, 2, 32, 32) and fast.shape == (6, 3, 4, 32, 32)
    assert torch.equal(slow, fast[:, :, [0, 3]])  # each row's slow pathway is its own clip's


@pytest.mark.parametrize(("balanced", "replicas", "rank"), [(False, 1, 0), (True, 2, 1)])
def test_resume_mid_epoch_replays_the_same_batches(tiny_synthetic, balanced, replicas, rank):
    """The trainer resumes at ``sampler.set_epoch(epoch, start=batches_done * batch_size)``: in
    videos, so with k=2 the resumed loader gives exactly the remaining batches, clips included,
    on any rank, with or without the balanced sampler."""
    data = _data(tiny_synthetic / "train.csv", root=str(tiny_synthetic), clips_per_video=2)

    def epoch_batches(start_batch: int) -> list[dict]:
        dataset = data.dataset("train", train=True, mean=MEAN, std=STD, seed=5)
        loader = build_loader(dataset, 2, 0, train=True, seed=5, num_replicas=replicas, rank=rank,
                              class_balanced=balanced)
        dataset.set_epoch(1)
        loader.sampler.set_epoch(1, start=start_batch * 2)
        return list(loader)

    full, resumed = epoch_batches(0), epoch_batches(3)
    assert len(full) == 10 // replicas and len(resumed) == len(full) - 3
    for a, b in zip(full[3:], resumed, strict=True):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
        assert a["video"].shape[0] == 4


def test_steps_per_epoch_and_lr_count_videos(tiny_synthetic, tmp_path):
    """The trainer with k=2: as many optimiser steps per epoch and the same scaled LR as k=1
    (VideoMAE's num_sample rule: the LR's batch is videos), with twice the clips per batch.
    The k=2 run ships uint8 (``data.gpu_transforms``): the trainer finishes the flattened
    payloads into twice the clips, one label each, and a step trains on them."""
    from helpers import compose_config, tiny_overrides

    from videocls.data.gpu_transforms import device_transform_of
    from videocls.engine.recipe import describe_recipe
    from videocls.engine.trainer import Trainer

    results = {}
    for k in (1, 2):
        cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path / f"k{k}", f"++data.clips_per_video={k}",
                                            "optim.base_batch_size=8", f"data.gpu_transforms={k == 2}"))
        trainer = Trainer(cfg, tmp_path / f"k{k}")
        try:
            batch = next(iter(trainer.train_loader))
            finish = device_transform_of(trainer.train_set)
            assert (finish is None) == (k == 1)
            video = batch["video"] if finish is None else finish(batch["video"], "cpu")
            assert video.shape[0] == batch["label"].shape[0] == batch["video_idx"].shape[0]
            results[k] = (trainer.steps_per_epoch, trainer.optimizer.param_groups[0]["initial_lr"],
                          video.shape[0])
            if k == 2:
                trainer.batches_per_epoch = 1  # one step on the device-finished k=2 batch
                assert trainer.train_epoch(preempt=0) and trainer.global_step == 1
        finally:
            trainer.close()
        recipe = describe_recipe(cfg, gpus=2, train_videos=20)
        assert (recipe.steps_per_epoch, recipe.global_batch, recipe.clips_per_step) == (2, 8, 8 * k)
    # 20 videos, batch 4, 1 device: 5 steps; base LR 3e-3 scaled by 4 videos / 8.
    assert results[1] == (5, pytest.approx(3e-3 * 4 / 8), 4)
    assert results[2] == (5, pytest.approx(3e-3 * 4 / 8), 8)


def test_clips_per_video_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="data.clips_per_video must be an integer >= 1, got 0"):
        _data(tmp_path / "train.txt", clips_per_video=0)
