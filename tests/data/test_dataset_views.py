"""Test views decoded once per video are the views decoded one by one, as every view used to be:
the same tensors and logits, each view once whatever the number of ranks, runs of whole clips
of at most ``test.max_views_per_batch`` views, one opening of the file per video, and an
unreadable video reported once per batch instead of once per view."""

import numpy as np
import pytest
import torch
from torch import nn

from videocls.data import dataset as dataset_module
from videocls.data.datamodule import VideoData
from videocls.data.io.reader import open_video
from videocls.data.loader import build_loader
from videocls.data.sampling import pack_pathways
from videocls.engine.distributed import DistEnv
from videocls.engine.evaluator import gather_views, score_views

MEAN, STD = (0.45, 0.4, 0.35), (0.25, 0.2, 0.3)
# An H.264 file (keyframe seeks), an MJPEG one (every frame a keyframe), a 16-frame MPEG-4 one
# (shorter than a clip's span: the last frame repeats).
VIDEOS = ("carphone_distorted.mp4", "kphotoalbum-movie.avi", "g1.avi")


def _data(tmp_path, paths, backend="auto") -> VideoData:
    listed = tmp_path / "val.txt"
    listed.write_text("".join(f"{path} {i % 2}\n" for i, path in enumerate(paths)))
    return VideoData(train_list=str(listed), val_list=str(listed), num_classes=2, num_frames=4,
                     sampling_rate=5, test_short_side=40, test_crop=32, backend=backend, num_workers=0)


def reference_views(data: VideoData, paths, num_clips: int, num_crops: int, frame_filter=None, alpha=None):
    """Every view the way each used to be made on its own: open the file, decode that clip's
    frames, resize and crop (with the view's own generator for a frame filter)."""
    sampler, transform = data.sampler(), data.test_transform(MEAN, STD)
    views = {}
    for v, path in enumerate(paths):
        for c in range(num_clips):
            for k in range(num_crops):
                with open_video(path, backend=data.backend) as reader:
                    frames = reader.get_frames(sampler(len(reader), reader.fps, False, c, num_clips).tolist())
                index = (v * num_clips + c) * num_crops + k
                rng = np.random.default_rng([0, 0, index, 0])
                if frame_filter is not None:
                    frames = frame_filter(frames, rng)
                clip = transform(frames, rng=rng, spatial_idx=k if num_crops == 3 else 1)
                views[(v, c, k)] = pack_pathways(clip, alpha) if alpha else clip
    return views


def _batches(data, num_clips, num_crops, *, max_views, world, batch_size=4, num_workers=0, **dataset_args):
    """All ranks' batches of the evaluation loader."""
    dataset = data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=num_clips, num_crops=num_crops,
                           **dataset_args)
    return [batch for rank in range(world)
            for batch in build_loader(dataset, batch_size, num_workers, train=False, num_replicas=world,
                                      rank=rank, max_views_per_batch=max_views)]


def _keys(batch) -> list[tuple[int, int, int]]:
    return list(zip(batch["video_idx"].tolist(), batch["clip_idx"].tolist(), batch["spatial_idx"].tolist()))


def _assert_equal(a, b) -> None:
    if isinstance(a, list):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    else:
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend, num_clips, num_crops, max_views, world, num_workers", [
    ("auto", 3, 3, None, 1, 0),  # whole videos: one batch each
    ("pyav", 3, 3, 4, 2, 0),  # runs of one clip (3 views) dealt to two ranks
    ("auto", 4, 1, 2, 3, 2),  # runs of two clips on three ranks, in loader workers
])
def test_views_decoded_once_per_video_are_the_views_decoded_one_by_one(
    real_videos_dir, tmp_path, monkeypatch, backend, num_clips, num_crops, max_views, world, num_workers
):
    paths = [str(real_videos_dir / name) for name in VIDEOS]
    data = _data(tmp_path, paths, backend)
    opened = []
    monkeypatch.setattr(dataset_module, "open_video",  # counts the openings, opens for real
                        lambda path, **kw: opened.append(path) or open_video(path, **kw))
    batches = _batches(data, num_clips, num_crops, max_views=max_views, world=world, num_workers=num_workers)
    reference = reference_views(data, paths, num_clips, num_crops)

    seen = [key for batch in batches for key in _keys(batch)]
    assert sorted(seen) == sorted(reference)  # every view once, over all ranks
    run = num_clips * num_crops if max_views is None else max(max_views // num_crops, 1) * num_crops
    for batch in batches:
        assert all(batch["valid"].tolist()) and batch["skipped"] == []
        for row, key in enumerate(_keys(batch)):
            _assert_equal(batch["video"][row], reference[key])
        for v in set(batch["video_idx"].tolist()):
            clips = {c for video, c, _ in _keys(batch) if video == v}
            # whole clips, at most a run of them, all of their crops
            assert len(clips) * num_crops == batch["video_idx"].eq(v).sum() <= run
    if num_workers == 0:  # one opening of each file per run of clips (workers open theirs elsewhere)
        assert len(opened) == sum(-(-num_clips * num_crops // run) for _ in paths)


def test_slowfast_pathways_and_frame_filters_are_made_per_view(real_videos_dir, tmp_path):
    """A frame filter (robustness corruptions) draws from each view's own generator, before the
    resize; SlowFast's two pathways are packed per view."""
    paths = [str(real_videos_dir / name) for name in VIDEOS[:2]]
    data = _data(tmp_path, paths)

    def darken(frames, rng):
        return (frames.float() * rng.uniform(0.3, 0.9)).to(torch.uint8)

    batches = _batches(data, 2, 3, max_views=None, world=1, frame_filter=darken, pathway_alpha=2)
    reference = reference_views(data, paths, 2, 3, frame_filter=darken, alpha=2)
    rows = [(key, [pathway[row] for pathway in batch["video"]]) for batch in batches
            for row, key in enumerate(_keys(batch))]
    assert len(rows) == len(reference) == 12
    for key, pathways in rows:
        _assert_equal(pathways, reference[key])
    assert [p.shape[1] for p in rows[0][1]] == [2, 4]  # slow: every second frame


def test_an_unreadable_video_is_one_skip_per_batch_and_every_view_invalid(real_videos_dir, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 50)
    data = _data(tmp_path, [str(real_videos_dir / VIDEOS[0]), str(bad)])
    batches = _batches(data, 2, 3, max_views=None, world=1)
    assert [batch["valid"].tolist() for batch in batches] == [[True] * 6, [False] * 6]
    assert [path for path, _ in batches[1]["skipped"]] == [str(bad)] and batches[0]["skipped"] == []


def test_logits_of_the_new_batches_are_those_of_the_views_one_by_one(real_videos_dir, tmp_path):
    """What predictions.csv is made of: the gathered logits equal a model run on the reference
    views (each video's views in one forward, as the loader batches them here), in (video,
    clip, crop) order."""
    paths = [str(real_videos_dir / name) for name in VIDEOS]
    data = _data(tmp_path, paths)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
    dataset = data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=3, num_crops=3)
    loader = build_loader(dataset, 8, 0, train=False, max_views_per_batch=9)
    views, _ = score_views(model, loader, DistEnv(0, 0, 1, torch.device("cpu")))
    views = gather_views(views)
    reference = reference_views(data, paths, 3, 3)
    with torch.no_grad():
        expected = torch.cat([model(torch.stack([reference[(v, c, k)] for c in range(3) for k in range(3)]))
                              for v in range(len(paths))])
    assert torch.equal(views["logits"], expected)
    assert views["video_idx"].tolist() == [v for v in range(3) for _ in range(9)]
