import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import AugmentOp

from videocls.data.augment import (
    RAND_AUGMENT_OPS,
    RandAugment,
    RandomErasing,
    RandomResizedCrop,
    random_resized_crop_box,
)

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
HAS_INCREASING = ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")


def one_op(op, **kwargs):
    """RandAugment reduced to one op that always runs."""
    return RandAugment(num_ops=1, prob=1.0, ops=(op,), **kwargs)


def identical_frames(num_frames=4, channels=3, height=40, width=48, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (1, channels, height, width), generator=g, dtype=torch.uint8)
    clip = frame.expand(num_frames, -1, -1, -1).contiguous()
    return clip if dtype == torch.uint8 else clip.float() / 255


def assert_same_per_frame(out):
    assert torch.equal(out, out[:1].expand_as(out))


def smooth_frame(height=48, width=64):
    """A smooth RGB image: resampling differences between PIL and torch stay small on it."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([60 + 2 * xx, 40 + 3 * yy, 128 + 60 * np.sin(xx / 9.0 + yy / 13.0)], -1)
    return img.clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------- RandomResizedCrop


def test_random_resized_crop_boxes_respect_area_and_ratio_ranges():
    rng = np.random.default_rng(0)
    height, width, scale, ratio = 90, 120, (0.08, 1.0), (3 / 4, 4 / 3)
    fractions, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_box(height, width, scale, ratio, rng)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        fractions.append(h * w / (height * width))
        ratios.append(w / h)
    fractions, ratios = np.array(fractions), np.array(ratios)
    # int(round()) of each side moves area and ratio by at most a pixel's worth.
    assert fractions.min() >= 0.08 * 0.9 and fractions.max() <= 1.0
    assert ratios.min() >= 0.75 * 0.9 and ratios.max() <= 4 / 3 * 1.1
    # The draws reach both ends of both ranges.
    assert fractions.min() < 0.1 and fractions.max() > 0.9
    assert ratios.min() < 0.8 and ratios.max() > 1.25


def test_random_resized_crop_falls_back_to_the_centre():
    # A 100 x 20 frame is too narrow for any 3/4..4/3 box with >= 90% of its area: the fallback
    # is the full width, height 20 / (3/4) = 26.67 -> 27, centred vertically.
    box = random_resized_crop_box(100, 20, (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert box == ((100 - 27) // 2, 0, 27, 20)
    # A square frame with ratio range containing 1: the whole frame.
    assert random_resized_crop_box(10, 10, (2.0, 3.0), (0.5, 2.0), np.random.default_rng(0)) == (0, 0, 10, 10)


def test_random_resized_crop_output_is_the_resized_box_of_every_frame():
    clip = torch.rand(3, 3, 50, 70)
    rrc = RandomResizedCrop(32, scale=(0.2, 0.6))
    out = rrc(clip, np.random.default_rng(5))
    top, left, h, w = random_resized_crop_box(50, 70, (0.2, 0.6), rrc.ratio, np.random.default_rng(5))
    expected = F.interpolate(
        clip[..., top : top + h, left : left + w], size=(32, 32), mode="bilinear", align_corners=False
    )
    assert out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(out, expected)
    for seed in range(5):
        assert_same_per_frame(rrc(identical_frames(dtype=torch.float32), np.random.default_rng(seed)))


def test_random_resized_crop_rejects_bad_ranges():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(32, scale=(0.8, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCrop(32, ratio=(0.0, 1.0))


# ---------------------------------------------------------------- RandAugment


def test_rand_augment_config_strings():
    ra = RandAugment.from_string("rand-m9-mstd0.5-inc1", fill=(124, 116, 104))
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.increasing, ra.prob) == (9, 2, 0.5, True, 0.5)
    assert ra.fill == (124, 116, 104) and ra.magnitude_max == 10
    ra = RandAugment.from_string("rand-n3-m7-mstd101-p1.0-mmax12-inc0")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.prob) == (7, 3, math.inf, 1.0)
    assert ra.magnitude_max == 12
    assert not ra.increasing
    assert RandAugment.from_string("rand").magnitude == 10  # timm's default magnitude
    for bad in ("rand-n2.5", "rand-x1", "rand-m", "rand-tweights", "augmix-m9"):
        with pytest.raises(ValueError, match="RandAugment config"):
            RandAugment.from_string(bad)
    with pytest.raises(ValueError, match="ops"):
        RandAugment(ops=("Cutout",))


@pytest.mark.parametrize(
    "op, increasing", [(op, False) for op in RAND_AUGMENT_OPS] + [(op, True) for op in HAS_INCREASING]
)
def test_rand_augment_ops_match_timm_on_one_frame(op, increasing):
    """Each op at a fixed magnitude against timm's PIL op (timm's random sign: either one)."""
    img = smooth_frame()
    clip = torch.from_numpy(img).permute(2, 0, 1)[None]
    timm_name = op + "Increasing" if increasing else op
    hparams = dict(translate_const=250, img_mean=(100, 120, 140), interpolation=Image.BILINEAR)
    ours = one_op(op, magnitude=7, increasing=increasing, fill=(100, 120, 140))
    out = ours(clip, np.random.default_rng(0))[0].permute(1, 2, 0).numpy().astype(int)
    errors = []
    for seed in range(4):
        random.seed(seed)
        ref = np.asarray(AugmentOp(timm_name, prob=1.0, magnitude=7, hparams=hparams)(Image.fromarray(img)))
        errors.append(np.abs(out - ref.astype(int)))
    best = min(errors, key=np.mean)
    if op in GEOMETRIC:  # bilinear resampling differs a little between PIL and torch, mostly at borders
        assert best.mean() < 1.5
        assert max(np.mean(e) for e in errors) > 10  # the other sign is far off: the test can tell
    else:
        assert best.max() <= 1


@pytest.mark.parametrize("op", ["AutoContrast", "Equalize", "Contrast"])
def test_rand_augment_statistics_cover_the_whole_clip(op):
    # Frames of different brightness: one mapping computed over the clip, as if the frames were
    # one image (PIL on the frames stacked vertically), not a per-frame mapping.
    frames = smooth_frame(24, 32)[None].astype(int) + np.array([-50, 0, 40]).reshape(3, 1, 1, 1)
    frames = frames.clip(0, 255).astype(np.uint8)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    out = one_op(op, magnitude=9)(clip, np.random.default_rng(0))
    stacked = Image.fromarray(frames.reshape(3 * 24, 32, 3))
    ref = np.asarray(AugmentOp(op, prob=1.0, magnitude=9)(stacked)).reshape(3, 24, 32, 3)
    assert np.abs(out.permute(0, 2, 3, 1).numpy().astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_rand_augment_same_draw_for_every_frame(dtype):
    ra = RandAugment.from_string("rand-m9-mstd0.5-n3-p1.0")
    clip = identical_frames(dtype=dtype)
    for seed in range(30):
        out = ra(clip, np.random.default_rng(seed))
        assert out.shape == clip.shape and out.dtype == dtype
        assert_same_per_frame(out)


def test_rand_augment_magnitude_zero_is_identity_for_magnitude_driven_increasing_ops():
    # With inc1 and M0: enhancement factor 1, rotation/shear/translation 0, solarize threshold
    # 256, solarize-add 0. (Posterize keeps 4 bits at M0 and AutoContrast/Equalize/Invert
    # ignore the magnitude, so they are left out.)
    ops = (
        "Rotate",
        "Solarize",
        "SolarizeAdd",
        "Color",
        "Contrast",
        "Brightness",
        "Sharpness",
        "ShearX",
        "ShearY",
        "TranslateXRel",
        "TranslateYRel",
    )
    ra = RandAugment(magnitude=0, num_ops=4, prob=1.0, increasing=True, ops=ops)
    clip = torch.randint(0, 256, (3, 3, 24, 32), dtype=torch.uint8)
    for seed in range(20):
        assert torch.equal(ra(clip, np.random.default_rng(seed)), clip)


def test_rand_augment_timm_level_quirks_at_magnitude_zero():
    clip = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    # Non-increasing posterize keeps int(0 * 4) = 0 bits: black; solarize threshold 0 inverts all.
    assert not one_op("Posterize", magnitude=0)(clip, rng).any()
    assert torch.equal(one_op("Solarize", magnitude=0)(clip, rng), 255 - clip)


def test_rand_augment_magnitude_noise():
    # Brightness (non-increasing) multiplies by 0.18 * M + 0.1, which reveals the drawn magnitude.
    clip = torch.full((1, 3, 4, 4), 0.4)

    def magnitudes(ra):
        factors = np.array([ra(clip, np.random.default_rng(s))[0, 0, 0, 0].item() / 0.4 for s in range(400)])
        return (factors - 0.1) / 0.18

    gauss = magnitudes(one_op("Brightness", magnitude=8, magnitude_std=0.5))
    assert abs(gauss.mean() - 8) < 0.1 and abs(gauss.std() - 0.5) < 0.1
    clamped = magnitudes(one_op("Brightness", magnitude=9.8, magnitude_std=1.0))
    assert clamped.max() <= 10 + 1e-4 and (clamped > 10 - 1e-4).mean() > 0.3
    uniform = magnitudes(one_op("Brightness", magnitude=6, magnitude_std=math.inf))
    assert uniform.min() >= -1e-4 and uniform.max() <= 6 + 1e-4 and abs(uniform.mean() - 3) < 0.3


def test_rand_augment_op_probability():
    # p0.5, n2 on one op: the clip ends up inverted when exactly one of the two coins passes.
    ra = RandAugment(magnitude=9, num_ops=2, prob=0.5, ops=("Invert",))
    clip = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    inverted = [int(torch.equal(ra(clip, np.random.default_rng(s)), 255 - clip)) for s in range(800)]
    assert abs(np.mean(inverted) - 0.5) < 0.06


# ---------------------------------------------------------------- Random erasing


def erased_mask(out, clip):
    changed = out != clip
    assert torch.equal(changed, changed[:1, :1].expand_as(changed)), "box differs across frames or channels"
    return changed[0, 0]


def bounding_box(mask):
    """(is the mask exactly its bounding box, box height, box width)"""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    box = torch.zeros_like(mask)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return torch.equal(mask, box), int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_random_erasing_erases_one_box_in_every_frame(mode):
    erase = RandomErasing(prob=1.0, area=(0.05, 0.3), aspect=(0.5, 2.0), mode=mode)
    clip = torch.rand(4, 3, 40, 50) + 5.0  # far from any N(0, 1) fill
    original = clip.clone()
    for seed in range(20):
        out = erase(clip, np.random.default_rng(seed))
        mask = erased_mask(out, clip)
        rectangle, h, w = bounding_box(mask)
        assert rectangle
        assert 0.05 * 0.8 <= h * w / (40 * 50) <= 0.3 * 1.2 and 0.5 * 0.8 <= h / w <= 2.0 * 1.25
        patch = out[:, :, mask].view(4, 3, -1)
        assert torch.equal(patch, patch[:1].expand_as(patch))  # the same fill in every frame
        if mode == "const":
            assert not patch.any()
        elif mode == "rand":
            assert torch.equal(patch, patch[..., :1].expand_as(patch))  # one colour per channel
        else:
            assert patch[0].std() > 0.5
    assert torch.equal(clip, original)  # the input is not modified


def test_random_erasing_probability_and_count():
    clip = torch.rand(2, 3, 40, 50) + 5.0
    assert RandomErasing(prob=0.0)(clip, np.random.default_rng(0)) is clip
    erase = RandomErasing(prob=0.25)
    erased = [not torch.equal(erase(clip, np.random.default_rng(s)), clip) for s in range(400)]
    assert abs(np.mean(erased) - 0.25) < 0.06
    # max_count=3: 1 to 3 boxes, each with 0.1 / count of the area, so at most 0.1 in all.
    many = RandomErasing(prob=1.0, area=(0.1, 0.1), mode="const", max_count=3)
    masks = [erased_mask(many(clip, np.random.default_rng(s)), clip) for s in range(30)]
    assert all(0.1 / 3 * 0.8 <= m.float().mean() <= 0.1 * 1.1 for m in masks)
    assert any(bounding_box(m)[0] for m in masks) and not all(bounding_box(m)[0] for m in masks)
    with pytest.raises(ValueError, match="mode"):
        RandomErasing(mode="zeros")
    with pytest.raises(ValueError, match="float"):
        RandomErasing()(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), np.random.default_rng(0))


def test_random_erasing_same_draw_for_every_frame():
    clip = identical_frames(dtype=torch.float32)
    for seed in range(10):
        assert_same_per_frame(RandomErasing(prob=1.0, mode="pixel")(clip, np.random.default_rng(seed)))
