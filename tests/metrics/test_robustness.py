import colorsys
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from videocls.data.corruptions import (
    CORRUPTIONS,
    DEFOCUS_BLUR,
    JITTER_MAX_OFFSET,
    JPEG_QUALITY,
    NOISE_STD,
    corrupt,
)
from videocls.metrics.robustness import robustness_summary, robustness_table


def _textured_clip(num_frames: int = 2, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Random colour texture at three scales: no periodic pattern for a blur to resonate with."""
    g = torch.Generator().manual_seed(seed)
    layers = [
        F.interpolate(torch.rand(num_frames, 3, n, n, generator=g), size=(size, size), mode="bilinear")
        for n in (4, 12, 24)
    ]
    texture = sum(layers) / 3
    images = (texture - texture.mean()) * 1.6 + 0.5
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _indexed_clip(num_frames: int) -> torch.Tensor:
    """Frame t is filled with the value 10 t, so outputs reveal which input frame they copy."""
    values = torch.arange(num_frames, dtype=torch.uint8) * 10
    return values.view(-1, 1, 1, 1).expand(-1, 8, 8, 3).contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.double() - b.double()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_keeps_layout_and_is_deterministic(name):
    clip = _textured_clip(num_frames=5, size=40)
    for severity in range(1, 6):
        out = corrupt(clip, name, severity, np.random.default_rng(7))
        assert out.shape == clip.shape and out.dtype == torch.uint8
        assert torch.equal(out, corrupt(clip, name, severity, np.random.default_rng(7)))
    clean = corrupt(clip, name, 0, np.random.default_rng(7))
    assert torch.equal(clean, clip) and clean.data_ptr() != clip.data_ptr()


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "defocus_blur", "jpeg_compression"])
def test_psnr_falls_with_severity(name):
    clip = _textured_clip()
    psnr = [_psnr(corrupt(clip, name, s, np.random.default_rng(0)), clip) for s in range(6)]
    assert psnr[0] == float("inf")
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_photometric_change_grows_with_severity(name):
    clip = _textured_clip()
    change = [(corrupt(clip, name, s, None).double() - clip.double()).abs().mean().item() for s in range(6)]
    assert change[0] == 0 and all(a < b for a, b in zip(change, change[1:])), change


def test_gaussian_noise_has_the_table_std():
    grey = torch.full((2, 64, 64, 3), 128, dtype=torch.uint8)  # far from 0 and 255: no clipping at sev 1
    diff = corrupt(grey, "gaussian_noise", 1, np.random.default_rng(0)).double() - 128
    assert diff.std().item() == pytest.approx(NOISE_STD[0] * 255, rel=0.03)
    assert abs(diff.mean().item()) < 0.5


def test_brightness_matches_colorsys_hsv_round_trip():
    rng = np.random.default_rng(3)
    clip = torch.from_numpy(rng.integers(0, 256, (1, 6, 6, 3), dtype=np.uint8))
    clip[0, 0, 0] = 0  # black: no hue, becomes grey
    out = corrupt(clip, "brightness", 2, rng)
    for pixel, result in zip(clip.view(-1, 3).tolist(), out.view(-1, 3).tolist()):
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in pixel))
        expected = [round(c * 255) for c in colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0))]
        assert np.abs(np.array(result) - expected).max() <= 1, (pixel, result, expected)
    assert out[0, 0, 0].tolist() == [51, 51, 51]  # 0.2 * 255


def test_contrast_by_hand():
    clip = torch.tensor([[[[0, 100, 200], [100, 100, 100]]]], dtype=torch.uint8)  # 1 x 1 x 2 x 3
    out = corrupt(clip, "contrast", 1, None)
    # channel means 50, 100, 150; factor 0.4: 50 + (0 - 50) .4 = 30, 50 + 50 .4 = 70; 100 stays;
    # 150 + 50 .4 = 170, 150 - 50 .4 = 130
    assert out.tolist() == [[[[30, 100, 170], [70, 100, 130]]]]


def test_defocus_blur_impulse_response_is_the_disk():
    clip = torch.zeros(1, 31, 31, 3, dtype=torch.uint8)
    clip[0, 15, 15] = 255
    out = corrupt(clip, "defocus_blur", 1, None)[0, :, :, 0].double()  # radius 3, alias sigma .1
    radius = DEFOCUS_BLUR[0][0]
    yy, xx = torch.meshgrid(torch.arange(31) - 15, torch.arange(31) - 15, indexing="ij")
    disk = (yy**2 + xx**2) <= radius**2
    assert torch.equal(out > 0, disk)
    assert out.sum().item() == pytest.approx(255, abs=disk.sum().item() / 2)  # rounding per pixel


def test_motion_blur_smears_along_one_ray():
    clip = torch.zeros(1, 81, 81, 3, dtype=torch.uint8)
    clip[0, 40, 40] = 255
    out = corrupt(clip, "motion_blur", 1, np.random.default_rng(5))[0, :, :, 0]
    ys, xs = torch.nonzero(out, as_tuple=True)
    dy, dx = ys - 40, xs - 40
    # the impulse moves forward along an angle within [-45, 45] degrees from +x, at most 2 r away
    assert len(ys) > 3 and (dx >= 0).all() and (dy.abs() <= dx + 1).all() and (dx <= 20).all()
    assert 200 < out.double().sum().item() < 300


def test_jpeg_matches_pillow_at_the_same_quality():
    clip = _textured_clip(num_frames=1)
    ours = corrupt(clip, "jpeg_compression", 3, None)
    buffer = io.BytesIO()
    Image.fromarray(clip[0].numpy()).save(buffer, format="JPEG", quality=JPEG_QUALITY[2])
    pillow = torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB")).copy())
    assert _psnr(ours[0], pillow) > 35  # same codec settings, libjpeg builds may differ slightly
    assert _psnr(ours, clip) < 35


def _source_frames(out: torch.Tensor) -> list[int]:
    return (out[:, 0, 0, 0] // 10).tolist()


def test_frame_drop_count_is_exact_where_float_products_are_not():
    # 30% of 10 frames after the first is exactly 3, though 0.3 * 10 > 3 in floating point
    source = _source_frames(corrupt(_indexed_clip(11), "frame_drop", 3, np.random.default_rng(0)))
    assert sum(s != t for t, s in enumerate(source)) == 3


def test_frame_drop_repeats_previous_kept_frame():
    clip = _indexed_clip(16)
    dropped_per_severity = [2, 3, 5, 7, 9]  # ceil(15 x 10%, 20%, 30%, 45%, 60%) = ceil(1.5, 3, 4.5, 6.75, 9)
    previous_dropped: set[int] = set()
    for severity in range(1, 6):
        source = _source_frames(corrupt(clip, "frame_drop", severity, np.random.default_rng(1)))
        assert source[0] == 0
        assert all(s == t or s == source[t - 1] for t, s in enumerate(source))  # kept, or the one before
        dropped = {t for t, s in enumerate(source) if s != t}
        assert len(dropped) == dropped_per_severity[severity - 1]
        assert previous_dropped <= dropped  # one seed: nested across severities
        previous_dropped = dropped


def test_temporal_jitter_offsets_stay_local_and_grow():
    clip = _indexed_clip(24)
    previous = np.zeros(24)
    for severity in range(1, 6):
        out = corrupt(clip, "temporal_jitter", severity, np.random.default_rng(2))
        source = np.array(_source_frames(out))
        offsets = np.abs(source - np.arange(24))
        assert set(source) <= set(range(24))
        assert offsets.max() <= JITTER_MAX_OFFSET[severity - 1] and offsets.max() > 0
        assert (offsets >= previous).all()
        previous = offsets


def test_corrupt_rejects_bad_arguments():
    clip = _textured_clip(num_frames=1)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(clip, "fog", 1, None)
    with pytest.raises(ValueError, match="severity must be"):
        corrupt(clip, "contrast", 6, None)
    with pytest.raises(ValueError, match="severity must be"):
        CORRUPTIONS["contrast"](clip, 0, None)
    with pytest.raises(ValueError, match="uint8 clip"):
        corrupt(clip.float(), "contrast", 1, None)
    with pytest.raises(ValueError, match="uint8 clip"):
        corrupt(clip.permute(0, 3, 1, 2), "contrast", 1, None)


def test_robustness_table_and_summary():
    results = {("gaussian_noise", s): 0.9 - 0.1 * s for s in range(1, 6)}
    results |= {("contrast", 1): 0.8, ("contrast", 3): 0.6}  # missing severities are allowed
    summary = robustness_summary(results)
    assert list(summary["corruptions"]) == ["gaussian_noise", "contrast"]
    assert summary["corruptions"]["gaussian_noise"]["mean"] == pytest.approx(0.6)
    assert summary["corruptions"]["contrast"] == pytest.approx({"1": 0.8, "3": 0.6, "mean": 0.7})
    assert summary["mean"] == pytest.approx(0.65)  # each corruption weighs the same
    json.dumps(summary)

    lines = robustness_table(results).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["corruption", "1", "2", "3", "4", "5", "mean"]
    assert cells[2] == ["gaussian_noise", "0.8000", "0.7000", "0.6000", "0.5000", "0.4000", "0.6000"]
    assert cells[3] == ["contrast", "0.8000", "-", "0.6000", "-", "-", "0.7000"]
    assert cells[4] == ["mean", "", "", "", "", "", "0.6500"]
    with pytest.raises(ValueError, match="no robustness results"):
        robustness_summary({})
