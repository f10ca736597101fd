import pytest
import torch

from videocls.data.loader import ShardedSampler, VideoBatchSampler, collate_clips


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


def test_eval_batches_keep_whole_clips_of_a_video_together_and_cover_every_view_once():
    """5 videos x 4 clips x 3 crops: runs of at most 7 views are 2 whole clips (6 views)."""
    for world in (1, 2, 3):
        batches = [b for rank in range(world) for b in VideoBatchSampler(
            5, 4, 3, batch_size=8, max_views=7, num_replicas=world, rank=rank)]
        assert sorted(i for b in batches for i in b) == list(range(60))
        assert all(len(b) == 6 and b == list(range(b[0], b[0] + 6)) and b[0] % 6 == 0 for b in batches)
    # Whole videos (no bound), packed up to batch_size views: 1 clip x 3 crops -> two videos a batch.
    assert list(VideoBatchSampler(5, 1, 3, batch_size=8)) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11],
                                                               [12, 13, 14]]
    # A bound below one clip's crops still keeps the clip whole (the model sees it in chunks).
    assert list(VideoBatchSampler(2, 2, 3, batch_size=4, max_views=2)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8],
                                                                            [9, 10, 11]]
    with pytest.raises(ValueError, match=r"test.max_views_per_batch must be an integer >= 1 or null, got 0"):
        VideoBatchSampler(2, 2, 3, batch_size=4, max_views=0)
