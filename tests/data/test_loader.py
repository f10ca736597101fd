import torch

from videocls.data.loader import ShardedSampler, collate_clips


def test_eval_shards_cover_every_item_once_for_uneven_split():
    for world in (1, 2, 3, 4):
        seen = []
        for rank in range(world):
            s = ShardedSampler(10, world, rank, shuffle=False, pad=False)
            assert len(s) == len(list(s))
            seen += list(s)
        assert sorted(seen) == list(range(10))


def test_train_shards_are_equal_sized_disjoint_and_reshuffled_per_epoch():
    shards = [ShardedSampler(10, 3, r, shuffle=True, seed=7, pad=True) for r in range(3)]
    lists = [list(s) for s in shards]
    assert all(len(x) == 4 for x in lists)
    assert set().union(*lists) == set(range(10))
    assert len(set(lists[0]) & set(lists[1])) <= 1  # only padding may repeat
    before = list(shards[0])
    shards[0].set_epoch(1)
    assert list(shards[0]) != before


def test_resume_inside_epoch_skips_consumed_items():
    full = ShardedSampler(20, 1, 0, shuffle=True, seed=3)
    full.set_epoch(2)
    resumed = ShardedSampler(20, 1, 0, shuffle=True, seed=3)
    resumed.set_epoch(2, start=8)
    assert list(resumed) == list(full)[8:] and len(resumed) == 12


def test_collate_concatenates_skipped_lists():
    samples = [
        {"video": torch.zeros(3, 2), "label": torch.tensor(1), "skipped": [("a.mp4", "bad")]},
        {"video": torch.ones(3, 2), "label": torch.tensor(0), "skipped": []},
    ]
    batch = collate_clips(samples)
    assert batch["video"].shape == (2, 3, 2) and batch["label"].tolist() == [1, 0]
    assert batch["skipped"] == [("a.mp4", "bad")]
