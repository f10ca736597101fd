"""Sampler indices against values computed by hand with PySlowFast's formulas."""

import numpy as np
import pytest
import torch

from videocls.data.sampling import (
    ClipSampler,
    clip_indices,
    clip_span,
    pack_pathways,
    rounded_segment_indices,
    segment_indices,
)


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
    assert (segment_indices(30, 8, train=False, clip_idx=0, num_clips=2).tolist()
            == [0, 4, 8, 12, 15, 19, 23, 27])
    assert (segment_indices(30, 8, train=False, clip_idx=1, num_clips=2).tolist()
            == [2, 6, 10, 14, 17, 21, 25, 29])
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
    assert (sampler(100, 30.0, train=False, clip_idx=3, num_clips=10).tolist()
            == [10, 19, 28, 37, 46, 55, 64, 73])
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


def official_get_seq_frames(video_length: int, num_frames: int, train: bool, draw=None) -> list[int]:
    """PySlowFast/TimeSformer ``Ssv2.get_seq_frames`` (``__getitem__``), re-written from its math:
    segments of ``(L - 1) / N`` frames, ends rounded half-to-even (numpy's round, as Python's)."""
    seg_size = float(video_length - 1) / num_frames
    seq = []
    for i in range(num_frames):
        start, end = int(round(seg_size * i)), int(round(seg_size * (i + 1)))
        seq.append(draw(start, end) if train else (start + end) // 2)
    return seq


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 17, 25, 41, 48, 49, 50, 96, 117, 300])
def test_rounded_segments_test_view_equals_the_official_formula(length):
    got = rounded_segment_indices(length, 8, train=False)
    assert got.tolist() == official_get_seq_frames(length, 8, train=False)
    assert ClipSampler(8, mode="rounded_segment")(length, 12.0, train=False).tolist() == got.tolist()


def test_rounded_segments_differ_from_tsn_segments_by_up_to_a_frame():
    # L = 21, N = 8: s = 2.5, bounds 0, 2.5 -> 2, 5, 7.5 -> 8, 10, 12.5 -> 12, 15, 17.5 -> 18, 20
    # (half-way values round to even), middles (start + end) // 2 by hand:
    assert rounded_segment_indices(21, 8, train=False).tolist() == official_get_seq_frames(21, 8, False)
    assert rounded_segment_indices(21, 8, train=False).tolist() == [1, 3, 6, 9, 11, 13, 16, 19]
    tsn = segment_indices(21, 8, train=False)
    assert 0 < np.abs(tsn - rounded_segment_indices(21, 8, train=False)).max() <= 1


@pytest.mark.parametrize("length", [3, 9, 41, 117])
def test_rounded_segments_training_draws_cover_the_official_ranges(length):
    # Every draw lies in the official [start, end] (randint includes both ends), and over many
    # draws every integer of each range appears.
    rng = np.random.default_rng(0)
    draws = np.stack([rounded_segment_indices(length, 8, train=True, rng=rng) for _ in range(3000)])
    lows = official_get_seq_frames(length, 8, True, draw=lambda a, b: a)
    highs = official_get_seq_frames(length, 8, True, draw=lambda a, b: b)
    for i, (low, high) in enumerate(zip(lows, highs)):
        assert set(draws[:, i].tolist()) == set(range(low, high + 1))


def test_rounded_segments_several_test_views_interleave():
    one = rounded_segment_indices(117, 8, train=False)
    views = [rounded_segment_indices(117, 8, train=False, clip_idx=k, num_clips=2) for k in range(2)]
    assert (views[0] <= one).all() and (one <= views[1]).all() and (views[0] < views[1]).all()


def test_clip_sampler_refuses_unknown_modes_when_built():
    # At construction: inside a dataset a ValueError would be taken for a bad video.
    with pytest.raises(ValueError, match="data.sampling_mode"):
        ClipSampler(8, mode="tsn")
    with pytest.raises(ValueError, match="data.pad"):
        ClipSampler(8, pad="mirror")
