"""data.gpu_transforms: the workers ship uint8 and the device finishes the clips.

Test views must be the CPU path's tensors bit for bit; training clips must draw the CPU path's
parameters (identical clip for clip when the resampling is exact, and the same distributions
measured from the pixels when it is not), with pixels at most one uint8 level apart."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from videocls.data.augment import RandAugment, RandomErasing, RandomResizedCrop
from videocls.data.datamodule import VideoData
from videocls.data.gpu_transforms import DeferredTransform, device_transform_of
from videocls.data.loader import ShardedSampler, build_loader, collate_clips, worker_init
from videocls.data.transforms import ClipTransform
from videocls.engine.distributed import DistEnv
from videocls.engine.evaluator import score_views

MEAN, STD = (0.45, 0.4, 0.35), (0.25, 0.2, 0.3)
LEVEL = 1 / 255 / min(STD)  # one uint8 level in normalised units (the largest of the channels)


def _transform(**kwargs) -> ClipTransform:
    args = dict(crop_size=24, min_short_side=36, max_short_side=36, mean=MEAN, std=STD, train=True)
    return ClipTransform(**{**args, **kwargs})


def _both(base: ClipTransform, frames: torch.Tensor, seeds, resize_short=None):
    """The CPU path's clips and the device path's, each clip from the same seed."""
    deferred = DeferredTransform(base=base, resize_short=resize_short)
    cpu = torch.stack([base(frames, np.random.default_rng(s)) for s in seeds])
    payload = default_collate([deferred(frames, np.random.default_rng(s)) for s in seeds])
    assert payload["frames"].dtype == torch.uint8
    return cpu, deferred.on_device()(payload, "cpu")


def _smooth_frames(t=4, h=36, w=50, seed=0) -> torch.Tensor:
    """Smooth random content: the resize's rounding then differs by at most a level."""
    coarse = torch.rand(t, 3, h // 6 + 2, w // 6 + 2, generator=torch.Generator().manual_seed(seed))
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def test_exact_geometry_makes_the_cpu_paths_clips_with_every_augmentation():
    """No resampling (the jitter range is the frame's short side): crop, flip, RandAugment (all
    ops, three per clip) and erasing (two boxes, ``rand`` colours) are the CPU path's exactly."""
    generator = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (4, 36, 50, 3), dtype=torch.uint8, generator=generator)
    augment = RandAugment.from_string("rand-m9-n3-mstd0.5-p0.9", fill=(114,) * 3)
    base = _transform(flip=True, rand_augment=augment,
                      erasing=RandomErasing(prob=0.8, mode="rand", max_count=2))
    cpu, device = _both(base, frames, range(16))
    assert device.shape == cpu.shape == (16, 3, 4, 24, 24)
    torch.testing.assert_close(device, cpu, rtol=0, atol=1e-6)


def test_pixel_erasing_paints_the_cpu_paths_boxes_with_unit_noise():
    frames = torch.full((4, 36, 50, 3), 128, dtype=torch.uint8)
    base = _transform(erasing=RandomErasing(prob=1.0, mode="pixel"))
    cpu, device = _both(base, frames, range(30))
    flat = (128 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    erased_cpu = (cpu - flat.view(1, 3, 1, 1, 1)).abs() > 1e-5
    erased_device = (device - flat.view(1, 3, 1, 1, 1)).abs() > 1e-5
    assert torch.equal(erased_cpu, erased_device)  # the same boxes
    noise = device[erased_device]
    assert noise.numel() > 10_000
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
    assert torch.equal(device[:, :, 0], device[:, :, -1])  # a static occluder: the same in every frame


@pytest.mark.parametrize("crop", ["jitter", "resized"])
def test_resampled_clips_are_the_cpu_paths_float_resize(crop):
    """Scale jitter + crop, or RandomResizedCrop, with flips: the CPU transform run on float
    frames (PyTorch's float bilinear resize) is the device's clip; the CPU path proper (uint8
    resize with fixed-point weights, rounded) is within one level of it."""
    frames = _smooth_frames()
    kwargs = ({"min_short_side": 40, "max_short_side": 56} if crop == "jitter" else
              {"resized_crop": RandomResizedCrop(24, scale=(0.2, 1.0))})
    base = _transform(flip=True, **kwargs)
    cpu, device = _both(base, frames, range(24))
    in_levels = _transform(flip=True, **kwargs, mean=tuple(255 * m for m in MEAN),
                           std=tuple(255 * s for s in STD))
    reference = torch.stack([in_levels(frames.float(), np.random.default_rng(s)) for s in range(24)])
    torch.testing.assert_close(device, reference, rtol=0, atol=1e-5)
    assert (device - cpu).abs().max() <= LEVEL * 1.001


def _ramp_frames(h: int, w: int) -> torch.Tensor:
    """Channel 0 encodes the column, channel 1 the row: the output tells where it was read from."""
    x = torch.linspace(0, 255, w).view(1, w).expand(h, w)
    y = torch.linspace(0, 255, h).view(h, 1).expand(h, w)
    frame = torch.stack([x, y, torch.zeros(h, w)], dim=-1).round().to(torch.uint8)
    return frame.expand(2, h, w, 3).contiguous()


def _read_geometry(clips: torch.Tensor, h: int, w: int) -> dict[str, np.ndarray]:
    """Per clip: where its crop starts, its extent (in source pixels) and whether it is flipped."""
    unit = clips[:, :2, 0] * torch.tensor(STD[:2]).view(1, 2, 1, 1) + torch.tensor(MEAN[:2]).view(1, 2, 1, 1)
    cols = unit[:, 0, :, :].mean(1) * (w - 1)  # B x crop: source column of each output column
    rows = unit[:, 1, :, :].mean(2) * (h - 1)
    n = clips.shape[-1]
    return {"flip": (cols[:, -1] < cols[:, 0]).numpy(),
            "width": ((cols[:, -1] - cols[:, 0]).abs() * n / (n - 1)).numpy(),
            "height": ((rows[:, -1] - rows[:, 0]) * n / (n - 1)).numpy(),
            "left": torch.minimum(cols[:, 0], cols[:, -1]).numpy(), "top": rows[:, 0].numpy()}


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = [np.searchsorted(np.sort(x), grid, side="right") / len(x) for x in (a, b)]
    return float(np.abs(cdf[0] - cdf[1]).max())


@pytest.mark.parametrize("crop", ["jitter", "resized"])
def test_crop_scale_aspect_offset_and_flip_follow_the_cpu_paths_distributions(crop):
    """Measured from the pixels, on frames larger than ``gpu_resize_short`` (resized twice on the
    device path), with different seeds for the two paths: the same distributions."""
    h, w, n = 48, 80, 200
    frames = _ramp_frames(h, w)
    kwargs = ({"min_short_side": 24, "max_short_side": 32} if crop == "jitter" else
              {"resized_crop": RandomResizedCrop(24, scale=(0.08, 1.0))})
    base = _transform(flip=True, **kwargs)
    deferred = DeferredTransform(base=base, resize_short=32)
    cpu = _read_geometry(torch.stack([base(frames, np.random.default_rng([1, s])) for s in range(n)]), h, w)
    payload = default_collate([deferred(frames, np.random.default_rng([2, s])) for s in range(n)])
    device = _read_geometry(deferred.on_device()(payload, "cpu"), h, w)
    bound = 1.95 * math.sqrt(2 / n)  # KS at the 0.1% level
    for key in ("width", "height", "left", "top"):
        assert _ks(cpu[key], device[key]) < bound, key
    if crop == "resized":
        area = [x["width"] * x["height"] / (h * w) for x in (cpu, device)]
        aspect = [np.log(x["width"] / x["height"]) for x in (cpu, device)]
        assert _ks(*area) < bound and _ks(*aspect) < bound
    assert abs(cpu["flip"].mean() - 0.5) < 0.1 and abs(device["flip"].mean() - 0.5) < 0.1


def _data(tmp_path, paths, **kwargs) -> VideoData:
    listed = tmp_path / "val.txt"
    listed.write_text("".join(f"{path} {i % 2}\n" for i, path in enumerate(paths)))
    return VideoData(train_list=str(listed), val_list=str(listed), num_classes=2, num_frames=4,
                     sampling_rate=5, test_short_side=40, test_crop=32, num_workers=0, **kwargs)


@pytest.mark.parametrize("alpha", [None, 2])
def test_test_views_finished_on_the_device_are_the_cpu_views_bit_for_bit(real_videos_dir, tmp_path, alpha):
    """Short-side resize + 3 crops + normalise, through both paths, SlowFast pathways included;
    an unreadable video's placeholder views batch with the uint8 ones."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    paths = [real_videos_dir / "carphone_distorted.mp4", broken, real_videos_dir / "g1.avi"]
    data = _data(tmp_path, paths, gpu_transforms=True)
    args = dict(train=False, mean=MEAN, std=STD, pathway_alpha=alpha, num_clips=2, num_crops=3)
    cpu, gpu = data.dataset("val", **args), data.dataset("val", **args, on_device=True)
    assert device_transform_of(cpu) is None  # callers that do not finish batches get finished clips
    finish = device_transform_of(gpu)
    flags = []
    for a, b in zip(build_loader(cpu, 8, 0, train=False), build_loader(gpu, 8, 0, train=False), strict=True):
        assert b["video"].dtype == torch.uint8
        out = finish(b["video"], "cpu")
        valid = a["valid"].bool()
        assert torch.equal(valid, b["valid"].bool())
        for x, y in zip(*[v if alpha else [v] for v in (a["video"], out)], strict=True):
            assert torch.equal(x[valid], y[valid])
        flags.append(valid)
    assert torch.cat(flags).any() and not torch.cat(flags).all()
    if alpha is None:  # the evaluator finishes the views itself: the same logits
        model = nn.Sequential(nn.Flatten(2), nn.Linear(4 * 32 * 32, 1), nn.Flatten(1))
        env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        views = [score_views(model, build_loader(d, 8, 0, train=False), env)[0] for d in (cpu, gpu)]
        valid = views[0]["valid"].bool()
        assert torch.equal(views[0]["logits"][valid], views[1]["logits"][valid])


def test_a_training_step_with_gpu_transforms(tiny_synthetic, tmp_path):
    """The trainer finishes uint8 batches on its device: the model sees the CPU path's clips
    (statistics of the same items) and a step trains."""
    from helpers import compose_config, tiny_overrides

    from videocls.engine.trainer import Trainer, _on_device

    cfg = compose_config(tiny_overrides(tiny_synthetic, tmp_path / "run", "data.gpu_transforms=true"))
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        finish = device_transform_of(trainer.train_set)
        assert finish is not None
        cpu_set = trainer.data.dataset("train", train=True, mean=finish.base.mean, std=finish.base.std,
                                       seed=cfg.trainer.seed)
        indices = list(range(8))
        device = finish(default_collate([trainer.train_set[i]["video"] for i in indices]), "cpu")
        cpu = torch.stack([cpu_set[i]["video"] for i in indices])
        assert device.shape == cpu.shape
        for dims in [(0, 2, 3, 4)]:
            torch.testing.assert_close(device.mean(dims), cpu.mean(dims), atol=0.02, rtol=0)
            torch.testing.assert_close(device.std(dims), cpu.std(dims), atol=0.02, rtol=0)
        assert (device - cpu).abs().mean() < 0.1  # the same crops: pixel for pixel close
        trainer.batches_per_epoch = 1  # one step
        assert trainer.train_epoch(preempt=0)
        assert trainer.global_step == 1
        precise_bn_batch = next(iter(_on_device(trainer.train_loader, "cpu")))["video"]
        assert precise_bn_batch.dtype == torch.float32 and precise_bn_batch.shape == (4, *cpu.shape[1:])
    finally:
        trainer.close()


@pytest.mark.parametrize(("share", "alpha"), [(False, None), (True, 2)])
def test_repeated_clips_finished_on_the_device_are_the_cpu_paths_rows(real_videos_dir, tmp_path, share,
                                                                      alpha):
    """``data.clips_per_video=3`` with gpu_transforms: the collate flattens each video's three
    payloads into three rows, and the device finishes them into the CPU path's k=3 batch row
    for row (exact geometry: the jitter is the frames' short side, so the crop offsets, flips,
    RandAugment's ops and erasing's boxes of every clip are the CPU path's draws, bit for bit),
    with the same labels, videos and clip indices; SlowFast's pathways cut on the device."""
    listed = tmp_path / "train.txt"
    listed.write_text(f"{real_videos_dir / 'g1.avi'} 0\n{real_videos_dir / 'g2.avi'} 1\n")  # 400x300
    data = VideoData(train_list=str(listed), val_list=str(listed), num_classes=2, num_frames=4,
                     sampling_rate=2, train_short_side=(300, 300), train_crop=24, flip=True,
                     rand_augment="rand-m9-n3-mstd0.5-p0.9", erase_prob=0.8, erase_mode="rand",
                     erase_count=2, backend="pyav", num_workers=0, clips_per_video=3,
                     clips_share_frames=share, gpu_transforms=True)
    args = dict(train=True, mean=MEAN, std=STD, pathway_alpha=alpha, seed=3)
    cpu, gpu = data.dataset("train", **args), data.dataset("train", **args, on_device=True)
    for dataset in (cpu, gpu):
        dataset.set_epoch(1)
    (a,), (b,) = (list(build_loader(d, 2, 0, train=True, seed=3)) for d in (cpu, gpu))
    payload = b["video"]
    canvas = DeferredTransform(base=gpu.transform.base).canvas
    assert payload["frames"].dtype == torch.uint8 and payload["frames"].shape == (6, 4, canvas, canvas, 3)
    assert payload["coords"].shape == (6, 2, 24) and payload["rand_augment"].shape == (6, 3, 3)
    assert payload["erasing"].shape == (6, 2, 7) and payload["seed"].shape == (6,)
    assert (payload["erasing"][:, :, 0] >= 0).any() and (payload["rand_augment"][:, :, 0] >= 0).any()
    for key in ("label", "video_idx", "clip_idx"):
        assert torch.equal(a[key], b[key]), key
    assert b["clip_idx"].tolist() == [0, 1, 2] * 2 and b["video_idx"].unique().numel() == 2
    out = device_transform_of(gpu)(payload, "cpu")
    for x, y in zip(*[v if alpha else [v] for v in (a["video"], out)], strict=True):
        assert x.shape[0] == 6
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    clips = out[1] if alpha else out
    assert all(not torch.equal(clips[i], clips[i + 1]) for i in (0, 1, 3, 4))  # k augmentations


def test_shared_frames_are_shrunk_once_and_each_clip_draws_its_own(real_videos_dir, tmp_path, monkeypatch):
    """Frames above ``data.gpu_resize_short`` that k clips share: the worker's uint8 resize runs
    once per item (it draws nothing), and each clip's payload is what the deferred transform
    makes of the decoded frames with that clip's generator ((seed, epoch, i, 0[, j]), the CPU
    path's), parameters and pixels alike."""
    from videocls.data import gpu_transforms
    from videocls.data.io.reader import open_video

    resizes = []
    real = gpu_transforms.short_side_resize
    monkeypatch.setattr(gpu_transforms, "short_side_resize",
                        lambda clip, size: resizes.append(size) or real(clip, size))
    path = real_videos_dir / "carphone_distorted.mp4"  # 176x144
    listed = tmp_path / "train.txt"
    listed.write_text(f"{path} 1\n")
    data = VideoData(train_list=str(listed), val_list=str(listed), num_classes=2, num_frames=4,
                     sampling_rate=4, train_short_side=(40, 56), train_crop=24, flip=True,
                     rand_augment="rand-m9-n2-mstd0.5", backend="pyav", num_workers=0, clips_per_video=2,
                     clips_share_frames=True, gpu_transforms=True, gpu_resize_short=64)
    dataset = data.dataset("train", train=True, mean=MEAN, std=STD, seed=3, on_device=True)
    item = dataset[0]
    assert resizes == [64] and item["clips_per_video"] == len(item["video"]) == 2
    # Closed here: a PyAV decoder left for the garbage collector can be freed in a forked loader
    # worker of a later test, whose codec threads do not exist there (a deadlock).
    reference = open_video(path, backend="pyav")
    rng = np.random.default_rng([3, 0, 0, 0])
    try:
        indices = dataset.sampler(len(reference), reference.fps, True, 0, 1, rng)
        frames = reference.get_frames(indices.tolist())
    finally:
        reference.close()
    rngs = [rng, np.random.default_rng([3, 0, 0, 0, 1])]
    for j, clip_rng in enumerate(rngs):
        expected = dataset.transform(frames, rng=clip_rng, spatial_idx=1)
        for key, value in expected.items():
            assert torch.equal(item["video"][j][key], value), (j, key)
    assert not torch.equal(item["video"][0]["coords"], item["video"][1]["coords"])


def test_a_workers_repeated_clips_finish_as_in_process(real_videos_dir, tmp_path):
    """Through a real DataLoader worker (k=2 clips per video): the uint8 payloads the worker
    ships finish on the device into the in-process batch bit for bit, which is the CPU path's
    batch (the geometry needs no resampling, so the float and uint8 paths agree)."""
    listed = tmp_path / "train.txt"
    listed.write_text(f"{real_videos_dir / 'g1.avi'} 0\n{real_videos_dir / 'g2.avi'} 1\n")  # 400x300
    data = VideoData(train_list=str(listed), val_list=str(listed), num_classes=2, num_frames=4,
                     sampling_rate=2, train_short_side=(300, 300), train_crop=24, flip=True,
                     rand_augment="rand-m9-n2-mstd0.5", backend="pyav", num_workers=0, clips_per_video=2,
                     gpu_transforms=True)
    args = dict(train=True, mean=MEAN, std=STD, seed=5)
    cpu, gpu = data.dataset("train", **args), data.dataset("train", **args, on_device=True)
    finish = device_transform_of(gpu)
    (reference,) = build_loader(cpu, 2, 0, train=True, seed=5)
    (in_process,) = build_loader(gpu, 2, 0, train=True, seed=5)
    worker = DataLoader(gpu, batch_size=2, sampler=ShardedSampler(2, seed=5), num_workers=1,
                        collate_fn=collate_clips, worker_init_fn=worker_init)
    (batch,) = worker
    assert batch["video"]["frames"].shape[0] == 4 and batch["video"]["frames"].dtype == torch.uint8
    assert torch.equal(batch["video"]["frames"], in_process["video"]["frames"])
    out = finish(batch["video"], "cpu")
    assert torch.equal(out, finish(in_process["video"], "cpu"))
    torch.testing.assert_close(out, reference["video"], rtol=0, atol=1e-6)
    assert torch.equal(batch["clip_idx"], reference["clip_idx"])
    assert torch.equal(batch["label"], reference["label"])
