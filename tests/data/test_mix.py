import numpy as np
import pytest
import torch

from videocls.data.mix import Mixup, batch_generator, cutmix_box, soft_targets


def batch(b=4, t=3, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g), torch.arange(b)


def test_soft_targets_by_hand():
    label = torch.tensor([0, 2])
    smooth = soft_targets(label, 4, smoothing=0.2)
    torch.testing.assert_close(smooth, torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]]))
    # Row 0 is paired with row 1 (the flipped batch): 0.7 * y0 + 0.3 * y1.
    mixed = soft_targets(label, 4, lam=0.7, smoothing=0.2)
    row0 = [0.7 * 0.85 + 0.3 * 0.05, 0.05, 0.7 * 0.05 + 0.3 * 0.85, 0.05]
    torch.testing.assert_close(mixed[0], torch.tensor(row0))
    torch.testing.assert_close(mixed.sum(1), torch.ones(2))


def test_mixup_blends_with_the_flipped_batch_at_the_target_weight():
    video, label = batch()
    mix = Mixup(num_classes=6, mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.0, label_smoothing=0.0)
    for seed in range(5):
        out, target = mix(video, label, np.random.default_rng(seed))
        # Recover lam from the clips alone: out = lam * x + (1 - lam) * x.flip(0).
        diff = video - video.flip(0)
        lam = ((out - video.flip(0))[diff.abs() > 0.1] / diff[diff.abs() > 0.1]).mean().item()
        torch.testing.assert_close(out, lam * video + (1 - lam) * video.flip(0))
        expected = torch.zeros(4, 6)
        expected[torch.arange(4), label] += lam
        expected[torch.arange(4), label.flip(0)] += 1 - lam
        torch.testing.assert_close(target, expected)
    # lam is Beta(0.4, 0.4), drawn after the `prob` and CutMix-switch coins (timm's draw order).
    rng = np.random.default_rng(3)
    rng.random(2)
    lam = rng.beta(0.4, 0.4)
    out, _ = mix(video, label, np.random.default_rng(3))
    torch.testing.assert_close(out, lam * video + (1 - lam) * video.flip(0))


def pasted_mask(out, video):
    """Where each clip took its partner's pixels; must be one box for all clips, frames, channels."""
    from_partner = (out == video.flip(0)) & (out != video)
    mask = from_partner[0, 0, 0]
    assert torch.equal(from_partner, mask.expand_as(from_partner))
    return mask


def test_cutmix_pastes_one_box_whose_area_is_the_target_weight():
    video, label = batch()
    mix = Mixup(num_classes=4, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=1.0, label_smoothing=0.0)
    for seed in range(10):
        out, target = mix(video, label, np.random.default_rng(seed))
        mask = pasted_mask(out, video)
        assert torch.equal(out[..., ~mask], video[..., ~mask])
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if len(rows):
            assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        kept = 1 - mask.float().mean().item()
        torch.testing.assert_close(target[torch.arange(4), label], torch.full((4,), kept))
        torch.testing.assert_close(target[torch.arange(4), label.flip(0)], torch.full((4,), 1 - kept))


def test_cutmix_box_by_hand():
    # lam 0.75: sides scaled by sqrt(0.25) = 0.5 -> 10 x 12 on 20 x 24, centred at a random pixel.
    centre = np.random.default_rng(0)
    cy, cx = int(centre.integers(0, 20)), int(centre.integers(0, 24))
    box = cutmix_box(20, 24, 0.75, np.random.default_rng(0))
    assert box == (max(cy - 5, 0), min(cy + 5, 20), max(cx - 6, 0), min(cx + 6, 24))


def test_label_smoothing_without_mixing():
    video, label = batch()
    out, target = Mixup(num_classes=5, prob=0.0, label_smoothing=0.1)(video, label, np.random.default_rng(0))
    assert out is video
    expected = torch.full((4, 5), 0.02)
    expected[torch.arange(4), label] = 0.92
    torch.testing.assert_close(target, expected)


def test_slowfast_pathways_are_mixed_consistently():
    fast, label = batch(t=8)
    slow = fast[:, :, ::4].clone()
    mix = Mixup(num_classes=4, switch_prob=1.0, label_smoothing=0.0)
    for seed in range(5):
        (out_slow, out_fast), target = mix([slow, fast], label, np.random.default_rng(seed))
        assert torch.equal(out_slow, out_fast[:, :, ::4])
        assert torch.equal(pasted_mask(out_slow, slow), pasted_mask(out_fast, fast))
    mix = Mixup(num_classes=4, switch_prob=0.0)
    (out_slow, out_fast), _ = mix([slow, fast], label, np.random.default_rng(0))
    assert torch.equal(out_slow, out_fast[:, :, ::4])
    # A pathway at twice the resolution gets the box scaled by two.
    big = fast.repeat_interleave(2, -1).repeat_interleave(2, -2)
    (out_small, out_big), _ = Mixup(4, switch_prob=1.0)([fast, big], label, np.random.default_rng(1))
    mask = pasted_mask(out_small, fast)
    assert mask.any()
    assert torch.equal(pasted_mask(out_big, big), mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_batch_generator_reproduces_a_batch_and_separates_batches():
    video, label = batch()
    mix = Mixup(num_classes=4)
    a = mix(video, label, batch_generator(0, 2, 17, 0))
    b = mix(video, label, batch_generator(0, 2, 17, 0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [mix(video, label, batch_generator(0, 2, i, 0))[1] for i in range(18, 22)]
    assert not all(torch.equal(a[1], o) for o in others)


def test_mixup_rejects_bad_input():
    video, label = batch()
    with pytest.raises(ValueError, match="alpha"):
        Mixup(num_classes=4, mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match="labels"):
        Mixup(num_classes=4)(video, label.float(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="B C T H W"):
        Mixup(num_classes=4)(video[:3], label, np.random.default_rng(0))
