import numpy as np
import pytest
import torch

from videocls.data.transforms import (
    ClipTransform,
    jitter_short_side,
    normalize,
    short_side_resize,
    uniform_crop,
)


def test_short_side_resize_floors_long_side():
    clip = torch.rand(2, 3, 120, 160)
    assert short_side_resize(clip, 64).shape == (2, 3, 64, 85)
    assert short_side_resize(torch.rand(2, 3, 160, 120), 64).shape == (2, 3, 85, 64)


def test_resize_of_constant_image_is_constant():
    clip = torch.full((1, 3, 50, 70), 0.3)
    assert torch.allclose(short_side_resize(clip, 32), torch.full((1, 3, 32, 44), 0.3))


def test_uniform_crop_positions_follow_pyslowfast():
    # Landscape: crops slide along the width; portrait: along the height.
    clip = torch.arange(10 * 16).float().view(1, 1, 10, 16)
    left, centre, right = (uniform_crop(clip, 10, i) for i in range(3))
    assert left[0, 0, 0, 0] == 0 and centre[0, 0, 0, 0] == 3 and right[0, 0, 0, 0] == 6
    tall = torch.arange(16 * 10).float().view(1, 1, 16, 10)
    assert uniform_crop(tall, 10, 0)[0, 0, 0, 0] == 0
    assert uniform_crop(tall, 10, 2)[0, 0, 0, 0] == 6 * 10
    with pytest.raises(ValueError):
        uniform_crop(clip, 10, 3)


def test_normalize_values():
    clip = torch.tensor([0.45, 0.9, 0.0]).view(1, 3, 1, 1)
    out = normalize(clip, (0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 2.0, -2.0]))


def test_clip_transform_train_and_test_shapes_and_values():
    frames = torch.full((8, 90, 120, 3), 115, dtype=torch.uint8)  # 115/255 ~ 0.451
    mean, std = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
    train = ClipTransform(crop_size=56, min_short_side=64, max_short_side=72,
                          mean=mean, std=std, train=True, flip=True)
    out = train(frames, rng=np.random.default_rng(0))
    assert out.shape == (3, 8, 56, 56) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (115 / 255 - 0.45) / 0.225), atol=1e-5)
    test = ClipTransform(crop_size=64, min_short_side=64, max_short_side=64, mean=mean, std=std, train=False)
    assert test(frames, rng=np.random.default_rng(0), spatial_idx=0).shape == (3, 8, 64, 64)


def test_same_random_draw_for_every_frame():
    # A video whose frames are identical must stay identical after random scale/crop/flip.
    base = torch.randint(0, 255, (1, 80, 100, 3), dtype=torch.uint8)
    frames = base.expand(6, -1, -1, -1).contiguous()
    t = ClipTransform(crop_size=48, min_short_side=56, max_short_side=72,
                      mean=(0.5,) * 3, std=(0.5,) * 3, train=True, flip=True)
    for seed in range(5):
        out = t(frames, rng=np.random.default_rng(seed))
        assert torch.equal(out, out[:, :1].expand_as(out))


def test_flip_is_off_by_default():
    ramp = torch.arange(64, dtype=torch.uint8).view(1, 1, 64, 1).expand(2, 64, 64, 3).contiguous()
    t = ClipTransform(crop_size=64, min_short_side=64, max_short_side=64,
                      mean=(0.0,) * 3, std=(1.0,) * 3, train=True)
    for seed in range(10):
        out = t(ramp, rng=np.random.default_rng(seed))
        assert out[0, 0, 0, 0] < out[0, 0, 0, -1]


def test_uint8_resize_is_within_one_level_of_the_float_resize():
    """The transform resizes uint8 frames; PySlowFast resizes floats. Same geometry, and every
    value within one uint8 level (rounding) of the float reference computed here."""
    import torch.nn.functional as F

    frames = torch.randint(0, 256, (4, 90, 160, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    test = ClipTransform(crop_size=64, min_short_side=72, max_short_side=72,
                         mean=(0.0,) * 3, std=(1.0,) * 3, train=False)
    out = test(frames, rng=np.random.default_rng(0), spatial_idx=1)  # 3 x T x 64 x 64
    reference = F.interpolate(frames.permute(0, 3, 1, 2).double() / 255, size=(72, 128), mode="bilinear",
                              align_corners=False)[..., 4:68, 32:96].permute(1, 0, 2, 3)
    assert out.shape == reference.shape == (3, 4, 64, 64)
    assert (out.double() - reference).abs().max() <= 1 / 255 + 1e-6
    # Rounding and fixed-point weights (~0.33 levels on average); a shifted grid on noise is tens.
    assert (out.double() - reference).abs().mean() < 0.4 / 255


def test_inverse_uniform_scale_jitter_is_pyslowfasts():
    # PySlowFast/TimeSformer random_short_side_scale_jitter with inverse_uniform_sampling:
    # size = round(1 / U(1/max, 1/min)); P(size <= s) = (1/min - 1/s) / (1/min - 1/max) before rounding.
    rng = np.random.default_rng(0)
    sizes = np.array([jitter_short_side(256, 320, rng, inverse_uniform=True) for _ in range(20000)])
    assert sizes.min() >= 256 and sizes.max() <= 320
    ref = np.random.default_rng(1)
    expected = np.round(1.0 / ref.uniform(1 / 320, 1 / 256, size=20000))
    for s in (260, 280, 300):
        cdf = (1 / 256 - 1 / (s + 0.5)) / (1 / 256 - 1 / 320)
        assert (sizes <= s).mean() == pytest.approx(cdf, abs=0.012)
        assert (sizes <= s).mean() == pytest.approx((expected <= s).mean(), abs=0.015)
    # the same draw as the official expression on the same generator state
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    official = int(round(1.0 / b.uniform(1 / 320, 1 / 256)))
    assert jitter_short_side(256, 320, a, inverse_uniform=True) == official
    uniform = np.array([jitter_short_side(256, 320, rng) for _ in range(20000)])
    assert (uniform <= 280).mean() == pytest.approx((280.5 - 256) / 64, abs=0.012)
    assert (sizes <= 280).mean() > (uniform <= 280).mean() + 0.03  # favours small sizes


def test_clip_transform_uses_inverse_uniform_scale_when_asked():
    frames = torch.randint(0, 255, (2, 60, 80, 3), dtype=torch.uint8)
    kwargs = dict(crop_size=32, min_short_side=32, max_short_side=48, mean=(0.5,) * 3, std=(0.5,) * 3,
                  train=True)
    inv = ClipTransform(**kwargs, inverse_uniform_scale=True)
    for seed in range(5):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        size = jitter_short_side(32, 48, rng_b, inverse_uniform=True)
        top = int(rng_b.integers(0, size - 32 + 1))
        left = int(rng_b.integers(0, int(size * 80 / 60) - 32 + 1))
        expected = short_side_resize(frames.permute(0, 3, 1, 2), size)[..., top : top + 32, left : left + 32]
        expected = normalize(expected.float() / 255, (0.5,) * 3, (0.5,) * 3).permute(1, 0, 2, 3)
        assert torch.allclose(inv(frames, rng_a), expected)
