"""VideoClipDataset: test views it cannot produce are refused; an unreadable video is warned
about once per file and run, not once per item, worker and epoch."""

import logging
import os
import re

import pytest
import torch
from torch.utils.data import DataLoader

from videocls.data import dataset as dataset_module
from videocls.data.datamodule import VideoData
from videocls.data.dataset import report_skipped
from videocls.data.loader import collate_clips

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture
def two_videos(real_videos_dir, tmp_path):
    """A readable real video and a text file posing as a video; two test clips each."""
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 50)
    listed = tmp_path / "val.txt"
    listed.write_text(f"{real_videos_dir / 'g1.avi'} 0\n{bad} 1\n")
    data = VideoData(train_list=str(listed), val_list=str(listed), num_classes=2, num_frames=2,
                     sampling_rate=1, test_short_side=32, test_crop=32, batch_size=2)
    return data, str(bad)


@pytest.mark.parametrize("num_crops", [0, 2, 4, 5])
def test_test_views_other_than_one_or_three_crops_are_refused(two_videos, num_crops):
    data, _ = two_videos
    message = (f"test.num_crops (trainer.val_num_crops for validation) must be 1 (centre) or 3 "
               f"(left/centre/right), got {num_crops}")
    with pytest.raises(ValueError, match=re.escape(message)):
        data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=1, num_crops=num_crops)


def test_one_and_three_crops_are_the_views_they_claim(two_videos):
    data, _ = two_videos
    one = data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=1, num_crops=1)
    three = data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=1, num_crops=3)
    assert (len(one), len(three)) == (2, 6)
    assert [three.view_of(i)[2] for i in range(3)] == [0, 1, 2]
    crops = [three[i]["video"] for i in range(3)]
    assert torch.equal(one[0]["video"], crops[1])  # the single crop is the centre one
    assert not torch.equal(crops[0], crops[1]) and not torch.equal(crops[2], crops[1])
    # Training draws one random crop whatever the test setting.
    assert len(data.dataset("train", train=True, mean=MEAN, std=STD, num_clips=5, num_crops=2)) == 2
    with pytest.raises(ValueError, match=re.escape("test.num_clips (trainer.val_num_clips for validation) "
                                                   "must be an integer >= 1, got 0")):
        data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=0, num_crops=1)


def run_epochs(loader, epochs: int) -> list[tuple[str, str]]:
    """What the trainer does with the batches: collect ``skipped`` and report new paths."""
    collected = []
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            collected += batch["skipped"]
            report_skipped(batch["skipped"])
    return collected


def test_unreadable_video_is_warned_once_in_the_main_process(two_videos, monkeypatch, caplog):
    data, bad = two_videos
    monkeypatch.setattr(dataset_module, "_warned", set())
    val = data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=2, num_crops=1)
    loader = DataLoader(val, batch_size=2, num_workers=0, collate_fn=collate_clips)
    with caplog.at_level(logging.DEBUG, logger="videocls.data.dataset"):
        collected = run_epochs(loader, epochs=3)
    # Its 2 views come in one batch and the file is opened once for both: one skip per epoch.
    assert [path for path, _ in collected] == [bad] * 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith(f"skipping unreadable video {bad} (")


def test_workers_leave_the_warning_to_the_main_process(two_videos, monkeypatch, tmp_path):
    """Workers are re-created every epoch: they log the skip at debug level only, and the
    main process warns once when the batches arrive."""
    data, bad = two_videos
    monkeypatch.setattr(dataset_module, "_warned", set())
    val = data.dataset("val", train=False, mean=MEAN, std=STD, num_clips=2, num_crops=1)
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)  # inherited by the forked workers
    handler.setFormatter(logging.Formatter("%(levelname)s %(process)d %(message)s"))
    logger = logging.getLogger("videocls.data.dataset")
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    logger.addHandler(handler)
    try:
        loader = DataLoader(val, batch_size=1, num_workers=2, collate_fn=collate_clips,
                            multiprocessing_context="fork")
        collected = run_epochs(loader, epochs=2)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert [path for path, _ in collected] == [bad] * 4
    lines = [line.split(" ", 2) for line in log_file.read_text().splitlines()]
    warnings = [(pid, message) for level, pid, message in lines if level == "WARNING"]
    assert len(warnings) == 1 and warnings[0][0] == str(os.getpid())
    assert warnings[0][1].startswith(f"skipping unreadable video {bad} (")
    worker_debug = [pid for level, pid, _ in lines if level == "DEBUG" and pid != str(os.getpid())]
    assert len(worker_debug) == 4 and len(set(worker_debug)) >= 2  # workers saw every skip
