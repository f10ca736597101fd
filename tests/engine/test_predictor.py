"""The predictor makes a videocls checkpoint's views from the run's own data config."""

import torch
import yaml

from videocls.data.datamodule import VideoData
from videocls.engine.predictor import load_predictor
from videocls.models import get_model_config


def _model_inputs(predictor, video) -> torch.Tensor:
    seen = []
    handle = predictor.model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    predictor.predict(video)
    handle.remove()
    return seen[0]


def test_checkpoint_views_come_from_its_data_config(tiny_run):
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    cfg = yaml.safe_load(torch.load(checkpoint, weights_only=True)["config"])
    assert (cfg["data"]["num_frames"], cfg["data"]["test_crop"]) == (4, 32)
    registry = get_model_config(cfg["model"]["name"])
    assert (registry.num_frames, registry.crop_size) != (4, 32)  # the registry's defaults would differ

    predictor = load_predictor(checkpoint, num_clips=1, num_crops=1)
    mean, std = registry.mean, registry.std
    data = VideoData(**{k: v for k, v in cfg["data"].items() if k != "_target_"})
    dataset = data.dataset("val", train=False, mean=mean, std=std, num_clips=1, num_crops=1)
    inputs = _model_inputs(predictor, dataset.records[0].path)
    assert inputs.shape == (1, 3, 4, 32, 32)
    # Exactly the view the run's own test protocol makes (segment sampling, short side, normalisation).
    assert torch.equal(inputs[0], dataset[0]["video"])


def test_explicit_values_win_over_the_checkpoint(tiny_run, tiny_synthetic):
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    predictor = load_predictor(checkpoint, num_clips=2, num_crops=3, num_frames=2, crop_size=24,
                               short_side=28, sampling_mode="clip", sampling_rate=3)
    sampler, transform = predictor.preprocessing.sampler, predictor.preprocessing.transform
    assert (sampler.num_frames, sampler.mode, sampler.sampling_rate) == (2, "clip", 3)
    assert (transform.min_short_side, transform.max_short_side, transform.crop_size) == (28, 28, 24)
    inputs = _model_inputs(predictor, tiny_synthetic / "videos" / "val" / "00000.mp4")
    assert inputs.shape == (6, 3, 2, 24, 24)


def test_crops_other_than_one_or_three_are_refused(tiny_run):
    import pytest

    checkpoint = tiny_run / "checkpoints" / "last.pt"
    for crops in (2, 5):
        with pytest.raises(ValueError, match=f"num_crops={crops}: use 1"):
            load_predictor(checkpoint, num_clips=1, num_crops=crops)
    described = load_predictor(checkpoint, num_clips=1, num_crops=1,
                               sampling_mode="rounded_segment").describe()
    assert "rounded segments" in described


def test_slowfast_views_are_packed_with_the_built_models_own_alpha(real_videos_dir):
    from videocls import create_model
    from videocls.engine.predictor import Preprocessing, VideoPredictor

    model = create_model("slowfast_r50", num_classes=3, width=8, stage_blocks=[1, 1, 1, 1], alpha=2)
    views = Preprocessing.from_model_config(model.default_config).override(num_frames=4, short_side=32,
                                                                           crop_size=32)
    predictor = VideoPredictor(model, ["a", "b", "c"], num_clips=1, num_crops=1, preprocessing=views)
    slow, fast = _model_inputs(predictor, real_videos_dir / "g1.avi")
    assert model.default_config.extra["alpha"] == 4  # the registry's: not what packs the pathways
    assert (slow.shape[2], fast.shape[2]) == (2, 4)
    assert torch.equal(slow, fast[:, :, torch.linspace(0, 3, 2).long()])
