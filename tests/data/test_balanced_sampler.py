"""data.class_balanced: weighted draws that keep ShardedSampler's seeding, sharding and resume."""

from collections import Counter

import pytest
import torch
from helpers import compose_config, tiny_overrides

from videocls.data.annotations import VideoRecord
from videocls.data.dataset import VideoClipDataset
from videocls.data.loader import ShardedSampler, build_loader, class_balanced_weights
from videocls.data.sampling import ClipSampler
from videocls.data.transforms import ClipTransform
from videocls.engine.trainer import Trainer

LABELS = [0] * 900 + [1] * 100  # 90/10


def _dataset(labels) -> VideoClipDataset:
    """A training dataset over records that are never decoded (only the sampler reads them)."""
    records = [VideoRecord(f"v{i}.mp4", label) for i, label in enumerate(labels)]
    transform = ClipTransform(crop_size=32, min_short_side=32, max_short_side=36, mean=(0.5,) * 3,
                              std=(0.5,) * 3, train=True)
    return VideoClipDataset(records, ClipSampler(4, 2), transform, train=True)


def _balanced(rank: int = 0, world: int = 2, seed: int = 0) -> ShardedSampler:
    return ShardedSampler(len(LABELS), world, rank, seed=seed, weights=class_balanced_weights(LABELS))


def test_weights_are_inverse_class_counts_and_rarest_label_for_multilabel():
    assert class_balanced_weights([0, 0, 0, 1]) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    # Class 0 has 3 videos, classes 1 and 2 one each: (0, 1) counts as rare class 1.
    assert class_balanced_weights([(0,), (0,), (0, 1), (2,)]) == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])


def test_drawn_class_frequencies_are_near_even_on_a_90_10_split():
    sampler = ShardedSampler(len(LABELS), weights=class_balanced_weights(LABELS))
    counts = Counter()
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(LABELS)  # one epoch is len(dataset) draws
        counts.update(LABELS[i] for i in drawn)
    # 10 000 draws: one standard deviation of the class-1 share is 0.005.
    assert counts[1] / sum(counts.values()) == pytest.approx(0.5, abs=0.03)
    unweighted = Counter(LABELS[i] for i in ShardedSampler(len(LABELS)))
    assert unweighted[1] == 100  # the plain sampler keeps the 90/10 split


def test_same_seed_and_epoch_give_the_same_order_another_epoch_another():
    a, b = _balanced(), _balanced()
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(_balanced(seed=1)) != list(_balanced(seed=0))


def test_two_ranks_split_the_global_draw_into_disjoint_shards():
    whole = list(_balanced(world=1))
    shards = [list(_balanced(rank)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(whole) // 2
    # Rank r takes positions r, r + 2, ...: interleaving the shards gives the one-process draw.
    assert [i for pair in zip(*shards) for i in pair] == whole


def test_resume_mid_epoch_skips_the_consumed_draws():
    full, resumed = _balanced(rank=1), _balanced(rank=1)
    full.set_epoch(2)
    resumed.set_epoch(2, start=40)
    assert list(resumed) == list(full)[40:] and len(resumed) == len(full) - 40


def test_weights_must_match_the_item_count():
    with pytest.raises(ValueError, match="3 sampling weights for 4 items"):
        ShardedSampler(4, weights=[1.0, 1.0, 1.0])


def test_build_loader_balances_only_when_asked(tmp_path):
    cfg = compose_config(tiny_overrides(tmp_path, tmp_path))
    assert cfg.data.class_balanced is False
    dataset = _dataset(LABELS)
    plain = build_loader(dataset, 4, 0, train=True, seed=5)
    expected = torch.randperm(len(LABELS), generator=torch.Generator().manual_seed(5)).tolist()
    assert plain.sampler.weights is None and list(plain.sampler) == expected
    balanced = build_loader(dataset, 4, 0, train=True, seed=5, num_replicas=2, rank=1, class_balanced=True)
    assert list(balanced.sampler) == list(_balanced(rank=1, seed=5))
    assert len(balanced) == len(LABELS) // 2 // 4


def test_trainer_draws_its_training_videos_by_class_weight(tiny_synthetic, tmp_path):
    lines = (tiny_synthetic / "train.csv").read_text().splitlines()
    class0 = [line for line in lines if line.endswith(",0")] * 3
    class1 = [line for line in lines if line.endswith(",1")]
    (tmp_path / "train.csv").write_text("\n".join(class0 + class1) + "\n")
    overrides = tiny_overrides(tiny_synthetic, tmp_path / "run", f"data.train_list={tmp_path / 'train.csv'}",
                               "data.class_balanced=true")
    cfg = compose_config(overrides)
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        weights = trainer.train_loader.sampler.weights.tolist()
    finally:
        trainer.close()
    assert weights == pytest.approx([1 / 6] * 6 + [1 / 2] * 2)
