"""Sampler indices against values computed by hand with PySlowFast's formulas."""

import numpy as np
import pytest
import torch

from videocls.data.sampling import ClipSampler, clip_indices, clip_span, pack_pathways, segment_indices


def test_test_clip_matches_pyslowfast_hand_computation():
    # 8x8 clip in a 100-frame video, test clip 3 of 10: delta = 100 - 64 = 36, start = 36*3/10 = 10.8,
    # end = start + 63, linspace(10.8, 73.8, 8) truncated.
    idx = clip_indices(100, num_frames=8, sampling_rate=8, clip_idx=3, num_clips=10)
    assert idx.tolist() == [10, 19, 28, 37, 46, 55, 64, 73]


def test_first_and_last_test_clip_stay_inside_video():
    first = clip_indices(100, 8, 8, clip_idx=0, num_clips=10)
    last = clip_indices(100, 8, 8, clip_idx=9, num_clips=10)
    assert first[0] == 0
    # start = 36 * 9 / 10 = 32.4, end = 95.4
    assert last.tolist() == [32, 41, 50, 59, 68, 77, 86, 95]


def test_fps_normalisation_halves_stride_for_half_frame_rate():
    # span = 8 * 8 / 30 * 15 = 32 frames; clip 0 -> linspace(0, 31, 8)
    assert clip_span(8, 8, 15.0, 30.0) == 32.0
    idx = clip_indices(100, 8, 8, clip_idx=0, num_clips=10, video_fps=15.0, target_fps=30.0)
    assert idx.tolist() == [0, 4, 8, 13, 17, 22, 26, 31]


def test_short_video_repeats_last_frame_or_loops():
    # 20-frame video, 64-frame span: linspace(0, 63, 8) = 0, 9, 18, 27, ... clamped or wrapped.
    assert clip_indices(20, 8, 8, clip_idx=0, num_clips=1).tolist() == [0, 9, 18, 19, 19, 19, 19, 19]
    assert clip_indices(20, 8, 8, clip_idx=0, num_clips=1, pad="loop").tolist() == [0, 9, 18, 7, 16, 5, 14, 3]


def test_random_training_clips_in_range_and_follow_stride():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = clip_indices(150, 8, 4, clip_idx=-1, rng=rng)
        assert idx.min() >= 0 and idx.max() <= 149
        steps = np.diff(idx)
        # span 32, linspace over 31 frames in 7 steps: 31/7 = 4.43 -> integer steps of 4 or 5
        assert set(steps.tolist()) <= {4, 5}
        assert idx[-1] - idx[0] in (30, 31)
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) >= 110  # start is uniform over [0, 150 - 32]


def test_segment_sampler_test_and_train():
    # 30 frames in 8 segments of 3.75: middles 1.875, 5.625, ... floored
    assert segment_indices(30, 8, train=False).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]
    # Two test views: the first and third quarter of every 3.75-frame segment.
    assert segment_indices(30, 8, train=False, clip_idx=0, num_clips=2).tolist() == [0, 4, 8, 12, 15, 19, 23, 27]
    assert segment_indices(30, 8, train=False, clip_idx=1, num_clips=2).tolist() == [2, 6, 10, 14, 17, 21, 25, 29]
    with pytest.raises(ValueError, match="clip_idx 2"):
        segment_indices(30, 8, train=False, clip_idx=2, num_clips=2)
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx = segment_indices(30, 8, train=True, rng=rng)
        seg = 30 / 8
        for i, j in enumerate(idx):
            assert np.floor(seg * i) <= j < seg * (i + 1)


def test_clip_sampler_dispatch():
    sampler = ClipSampler(num_frames=8, sampling_rate=8)
    assert sampler(100, 30.0, train=False, clip_idx=3, num_clips=10).tolist() == [10, 19, 28, 37, 46, 55, 64, 73]
    seg = ClipSampler(num_frames=8, mode="segment")
    assert seg(30, 30.0, train=False).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]
    with pytest.raises(ValueError):
        ClipSampler(8, mode="dense")(30, 30.0, train=False)


def test_pack_pathways_slow_is_every_alpha_th_frame():
    clip = torch.arange(32).float().view(1, 32, 1, 1).expand(3, 32, 2, 2)
    slow, fast = pack_pathways(clip, alpha=4)
    assert fast.shape == (3, 32, 2, 2) and slow.shape == (3, 8, 2, 2)
    # PySlowFast: linspace(0, 31, 8).long()
    assert slow[0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
