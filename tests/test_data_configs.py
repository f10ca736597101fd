"""The data configs share configs/data/base/video.yaml: each data=NAME composes to exactly the
values its file held before the base existed, and each file states only what differs."""

import pytest
from helpers import CONFIGS, compose_config
from omegaconf import OmegaConf

#: The keys the three data configs held with the same value before the shared base (frozen).
SAME_BEFORE = {
    "_target_": "videocls.data.datamodule.VideoData", "backend": "auto", "decode_threads": 1, "num_frames": 8,
    "pad": "repeat", "train_scale_inverse_uniform": False, "mean": None, "std": None, "max_retries": 10,
    "class_balanced": False, "train_crop_scale": None, "train_crop_ratio": [0.75, 1.3333],
    "rand_augment": None, "erase_prob": 0.0, "erase_mode": "pixel", "erase_count": 1, "mixup": None,
}
#: Keys added to the base since, each off by default so every earlier run composes as before.
ADDED_SINCE = {"gpu_transforms": False, "gpu_resize_short": None,
               "clips_per_video": 1, "clips_share_frames": False}
#: Each file's other keys before the shared base (frozen; interpolations unresolved).
OWN_BEFORE = {
    "kinetics400": {
        "root": "${oc.env:KINETICS_ROOT,/datasets/kinetics400}", "train_list": "${.root}/train.csv",
        "val_list": "${.root}/val.csv", "classes": None, "format": "list", "num_classes": 400,
        "batch_size": 8, "num_workers": 8, "sampling_rate": 8, "sampling_mode": "clip", "target_fps": 30,
        "train_short_side": [256, 320], "train_crop": 224, "test_short_side": 256, "test_crop": 256,
        "flip": True, "synthetic": None,
    },
    "ssv2": {
        "root": "${oc.env:SSV2_ROOT,/datasets/ssv2}", "train_list": "${.root}/train.json",
        "val_list": "${.root}/validation.json", "classes": "${.root}/labels.json", "format": "ssv2",
        "num_classes": 174, "batch_size": 8, "num_workers": 8, "sampling_rate": 1, "sampling_mode": "segment",
        "target_fps": None, "train_short_side": [256, 320], "train_crop": 224, "test_short_side": 224,
        "test_crop": 224, "flip": False, "synthetic": None,
    },
    "synthetic": {
        "root": "data/synthetic", "train_list": "${.root}/train.csv", "val_list": "${.root}/val.csv",
        "classes": "${.root}/classes.txt", "format": "list", "num_classes": 10, "batch_size": 16,
        "num_workers": 2, "sampling_rate": 8, "sampling_mode": "segment", "target_fps": None,
        "train_short_side": [36, 44], "train_crop": 32, "test_short_side": 36, "test_crop": 32, "flip": False,
        "synthetic": {"seed": 0, "train_per_class": 64, "val_per_class": 10, "workers": 2},
    },
}
DATASETS = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))


def test_every_data_config_is_frozen_here():
    assert DATASETS == sorted(OWN_BEFORE)


@pytest.mark.parametrize("name", sorted(OWN_BEFORE))
def test_data_config_composes_to_its_values_before_the_base(name):
    composed = OmegaConf.to_container(compose_config([f"data={name}"]).data, resolve=False)
    assert composed == {**SAME_BEFORE, **ADDED_SINCE, **OWN_BEFORE[name]}


@pytest.mark.parametrize("name", DATASETS)
def test_a_data_config_states_only_what_differs_from_the_base(name):
    base = OmegaConf.to_container(OmegaConf.load(CONFIGS / "data" / "base" / "video.yaml"), resolve=False)
    own = OmegaConf.to_container(OmegaConf.load(CONFIGS / "data" / f"{name}.yaml"), resolve=False)
    assert own.pop("defaults") == ["base/video@_here_", "_self_"]
    assert set(own) <= set(base), f"configs/data/{name}.yaml: keys VideoData's base does not list"
    assert {key for key, value in own.items() if base[key] == value} == set(), name
