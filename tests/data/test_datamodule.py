"""VideoData refuses bad sizes when it is built and bad labels when a dataset is read."""

import re

import pytest
from helpers import compose_config, tiny_overrides
from hydra.utils import instantiate

from videocls.data.annotations import AnnotationError
from videocls.data.datamodule import VideoData

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def data(tmp_path, **overrides) -> VideoData:
    listed = tmp_path / "train.txt"
    if not listed.exists():
        listed.write_text("a.mp4 0\nb.mp4 4\n")
    return VideoData(train_list=str(listed), val_list=str(listed), **{"num_classes": 5, **overrides})


@pytest.mark.parametrize(
    "key, value, low",
    [
        ("num_frames", 0, 1),
        ("num_frames", -4, 1),
        ("num_frames", 8.0, 1),
        ("batch_size", 0, 1),
        ("sampling_rate", 0, 1),
        ("num_classes", 0, 1),
        ("num_workers", -1, 0),
        ("decode_threads", 0, 1),
        ("max_retries", -1, 0),
    ],
)
def test_bad_sizes_are_refused_naming_the_key(tmp_path, key, value, low):
    with pytest.raises(ValueError, match=re.escape(f"data.{key} must be an integer >= {low}, got {value!r}")):
        data(tmp_path, **{key: value})


def test_config_with_zero_frames_fails_when_instantiated(tmp_path):
    cfg = compose_config(tiny_overrides(tmp_path / "data", tmp_path / "run", "data.num_frames=0"))
    with pytest.raises(Exception, match=re.escape("data.num_frames must be an integer >= 1, got 0")):
        instantiate(cfg.data)


def test_labels_outside_num_classes_fail_when_the_dataset_is_read(tmp_path):
    listed = tmp_path / "train.txt"
    listed.write_text("a.mp4 0\n\nb.mp4 4\n")
    # num_classes larger than the labels used is fine ...
    assert len(data(tmp_path, num_classes=10).dataset("train", train=True, mean=MEAN, std=STD)) == 2
    # ... a label at or above it fails at once, naming file, line and count.
    message = f"{listed}:3: label 4 is outside 0..3 for num_classes=4"
    with pytest.raises(AnnotationError, match=re.escape(message)):
        data(tmp_path, num_classes=4).dataset("val", train=False, mean=MEAN, std=STD)


def test_class_list_must_have_num_classes_names(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\nd\ne\nf\n")
    assert data(tmp_path, num_classes=6, classes=str(classes)).class_names() == list("abcdef")
    for n in (5, 7):
        message = f"{classes}: the class list has 6 names but data.num_classes={n}"
        with pytest.raises(ValueError, match=re.escape(message)):
            data(tmp_path, num_classes=n, classes=str(classes)).dataset("train", train=True, mean=MEAN,
                                                                        std=STD)


def test_inverse_uniform_scale_jitter_reaches_the_training_transform(tmp_path):
    from videocls.data.datamodule import VideoData

    (tmp_path / "list.csv").write_text("a.mp4 0\n")
    common = dict(train_list=str(tmp_path / "list.csv"), val_list=str(tmp_path / "list.csv"), num_classes=1)
    on = VideoData(**common, train_scale_inverse_uniform=True)._train_transform((0.5,) * 3, (0.5,) * 3)
    off = VideoData(**common)._train_transform((0.5,) * 3, (0.5,) * 3)
    assert on.inverse_uniform_scale is True and off.inverse_uniform_scale is False
