"""TimeSformer against Hugging Face's implementation, the official checkpoint layout, timm's 2D ViT
and its own invariants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videocls.models.registry import create_model, get_model_config
from videocls.models.timesformer import (
    TimeSformer,
    checkpoint_filter,
    init_from_vit,
    resize_pos_embed,
    timesformer_base,
)

TINY = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=64, depth=2, num_heads=4)
NUM_CLASSES = 7


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Add noise to every parameter: zero-initialised temporal_fc / time_embed become non-zero, and
    LayerNorms stay near identity so the outputs depend clearly on the input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return module


def _clip(frames: int = 4, size: int = 32, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _hf_model(attention: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.TimesformerConfig(
        image_size=TINY["img_size"],
        patch_size=TINY["patch_size"],
        num_frames=TINY["num_frames"],
        hidden_size=TINY["embed_dim"],
        num_hidden_layers=TINY["depth"],
        num_attention_heads=TINY["num_heads"],
        intermediate_size=4 * TINY["embed_dim"],
        num_labels=NUM_CLASSES,
        attention_type=attention,
    )
    return _randomise(transformers.TimesformerForVideoClassification(config)).eval()


def _hf_logits(hf: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(pixel_values=clip.transpose(1, 2)).logits  # HF takes B x T x C x H x W


# HF name -> name in facebookresearch/TimeSformer vit.py, written out independently of the model's filter.
_OFFICIAL_FROM_HF_BLOCK = {
    "layernorm_before": "norm1",
    "attention.attention.qkv": "attn.qkv",
    "attention.output.dense": "attn.proj",
    "temporal_layernorm": "temporal_norm1",
    "temporal_attention.attention.qkv": "temporal_attn.qkv",
    "temporal_attention.output.dense": "temporal_attn.proj",
    "temporal_dense": "temporal_fc",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_OFFICIAL_FROM_HF = {
    "timesformer.embeddings.cls_token": "cls_token",
    "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
    "timesformer.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "timesformer.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "timesformer.layernorm.weight": "norm.weight",
    "timesformer.layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def _official_name(hf_key: str) -> str:
    if hf_key in _OFFICIAL_FROM_HF:
        return "model." + _OFFICIAL_FROM_HF[hf_key]
    layer, rest = hf_key.removeprefix("timesformer.encoder.layer.").split(".", 1)
    module, param = rest.rsplit(".", 1)
    return f"model.blocks.{layer}.{_OFFICIAL_FROM_HF_BLOCK[module]}.{param}"


@pytest.mark.parametrize("attention", ["divided_space_time", "joint_space_time"])
def test_hugging_face_checkpoint_gives_hugging_face_logits(tmp_path, attention):
    hf = _hf_model(attention)
    path = tmp_path / "hf_timesformer.bin"
    torch.save(hf.state_dict(), path)
    model = create_model(
        "timesformer_base", pretrained=path, num_classes=NUM_CLASSES, attention=attention, **TINY
    ).eval()
    clip = _clip()
    with torch.no_grad():
        logits = model(clip)
    torch.testing.assert_close(logits, _hf_logits(hf, clip), atol=1e-4, rtol=0)


def test_official_checkpoint_gives_hugging_face_logits(tmp_path):
    hf = _hf_model("divided_space_time")
    official = {_official_name(key): value for key, value in hf.state_dict().items()}
    path = tmp_path / "TimeSformer_divST_tiny.pyth"
    # PySlowFast-style file: the weights sit under model_state next to training metadata.
    torch.save({"epoch": 15, "model_state": official, "cfg": "TIMESFORMER: {}"}, path)
    model = create_model("timesformer_base", pretrained=path, num_classes=NUM_CLASSES, **TINY).eval()
    clip = _clip()
    with torch.no_grad():
        logits = model(clip)
    torch.testing.assert_close(logits, _hf_logits(hf, clip), atol=1e-4, rtol=0)


def test_checkpoint_filter_round_trips_official_names():
    model = _randomise(TimeSformer(num_classes=NUM_CLASSES, **TINY))
    own = model.state_dict()
    filtered = checkpoint_filter({f"model.{key}": value for key, value in own.items()}, model)
    assert filtered.keys() == own.keys()
    assert all(torch.equal(filtered[key], own[key]) for key in own)


def test_checkpoint_at_other_length_and_size_is_resampled_on_load(tmp_path):
    """A 4-frame 32px checkpoint loaded into an 8-frame 48px model: embeddings resampled like the forward."""
    source = _randomise(TimeSformer(num_classes=NUM_CLASSES, **TINY)).eval()
    path = tmp_path / "tiny.pt"
    torch.save({"model": source.state_dict()}, path)
    longer_and_larger = {**TINY, "num_frames": 8, "img_size": 48}
    target = create_model("timesformer_base", pretrained=path, num_classes=NUM_CLASSES, **longer_and_larger)
    target.eval()
    clip = _clip(frames=8, size=48)
    with torch.no_grad():
        torch.testing.assert_close(target(clip), source(clip), atol=1e-5, rtol=0)


def test_param_count_matches_reference():
    with torch.device("meta"):
        model = timesformer_base()
    count = sum(p.numel() for p in model.parameters())
    config = get_model_config("timesformer_base")
    assert abs(count / (config.reference_params_m * 1e6) - 1) < 0.005
    assert count == 121_566_352  # TimesformerForVideoClassification(TimesformerConfig(num_labels=400))
    assert (config.num_frames, config.sampling_rate, config.crop_size) == (8, 32, 224)
    assert config.mean == (0.45, 0.45, 0.45) and config.std == (0.225, 0.225, 0.225)


@pytest.mark.parametrize("attention", ["divided_space_time", "joint_space_time", "space_only"])
def test_attention_modes_train_and_encode_frame_order_only_through_time_embed(attention):
    model = _randomise(TimeSformer(num_classes=NUM_CLASSES, attention=attention, drop_path_rate=0.1, **TINY))
    clip = _clip()

    logits = model.train()(clip)
    assert logits.shape == (2, NUM_CLASSES)
    logits.square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name

    model.eval()
    reversed_clip = clip.flip(2)
    with torch.no_grad():
        if attention == "space_only":
            torch.testing.assert_close(model(reversed_clip), model(clip), atol=1e-5, rtol=0)
        else:
            assert (model(reversed_clip) - model(clip)).abs().max() > 0.05
            model.time_embed.zero_()  # attention itself is blind to order: only time_embed tells frames apart
            torch.testing.assert_close(model(reversed_clip), model(clip), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["divided_space_time", "space_only"])
def test_longer_clip_of_repeated_frames_gives_same_logits(attention):
    """8 frames, each of 4 repeated twice: nearest-resampled time_embed lines up with the repeats, so
    temporal attention sees every key twice (same softmax weights) and the frame average is unchanged."""
    model = _randomise(TimeSformer(num_classes=NUM_CLASSES, attention=attention, **TINY)).eval()
    clip = _clip()
    with torch.no_grad():
        torch.testing.assert_close(model(clip.repeat_interleave(2, dim=2)), model(clip), atol=1e-5, rtol=0)


def test_pos_embed_resize_is_nearest_on_the_grid():
    pos_embed = torch.randn(1, 1 + 4 * 4, 5)
    resized = resize_pos_embed(pos_embed, (6, 6))
    grid = pos_embed[0, 1:].reshape(4, 4, 5)
    source = torch.tensor([0, 0, 1, 2, 2, 3])  # floor(i * 4 / 6)
    expected = grid[source][:, source].reshape(36, 5)
    assert torch.equal(resized[0, 0], pos_embed[0, 0])
    assert torch.equal(resized[0, 1:], expected)
    model = _randomise(TimeSformer(num_classes=NUM_CLASSES, **TINY)).eval()
    assert model(_clip(size=48)).shape == (2, NUM_CLASSES)


def _timm_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        img_size=TINY["img_size"],
        patch_size=TINY["patch_size"],
        embed_dim=TINY["embed_dim"],
        depth=TINY["depth"],
        num_heads=TINY["num_heads"],
        num_classes=1000,
    )
    return _randomise(vit).eval()


@pytest.mark.parametrize("attention", ["divided_space_time", "space_only"])
def test_init_from_vit_reproduces_image_features_on_a_static_clip(attention):
    vit = _timm_vit()
    model = TimeSformer(num_classes=NUM_CLASSES, attention=attention, **TINY).eval()
    init_from_vit(model, vit.state_dict())

    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    static_clip = image[:, :, None].expand(-1, -1, TINY["num_frames"], -1, -1)
    with torch.no_grad():
        expected = vit.forward_features(image)[:, 0]
        torch.testing.assert_close(model.forward_features(static_clip), expected, atol=1e-5, rtol=0)
    if attention == "divided_space_time":
        block = model.blocks[1]
        assert torch.equal(block.temporal_attn.qkv.weight, block.attn.qkv.weight)
        assert torch.equal(block.temporal_norm1.weight, block.norm1.weight)
        assert not block.temporal_fc.weight.any() and not model.time_embed.any()


def test_space_only_is_the_image_model_per_frame_averaged_before_the_final_norm():
    vit = _timm_vit()
    model = TimeSformer(num_classes=NUM_CLASSES, attention="space_only", **TINY).eval()
    init_from_vit(model, vit.state_dict())
    clip = _clip()
    final_norm, vit.norm = vit.norm, nn.Identity()
    with torch.no_grad():
        frames = clip.transpose(1, 2).flatten(0, 1)  # (B T) x C x H x W
        cls_per_frame = vit.forward_features(frames)[:, 0].reshape(2, TINY["num_frames"], -1)
        expected = final_norm(cls_per_frame.mean(dim=1))
        torch.testing.assert_close(model.forward_features(clip), expected, atol=1e-5, rtol=0)


def test_init_from_vit_rejects_a_vit_of_another_width():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    with pytest.raises(ValueError, match="shape mismatches"):
        init_from_vit(TimeSformer(num_classes=NUM_CLASSES, **TINY), vit.state_dict())


def test_bad_arguments_and_inputs_raise():
    with pytest.raises(ValueError, match="attention must be one of"):
        TimeSformer(attention="axial", **TINY)
    with pytest.raises(ValueError, match="B x C x T x H x W"):
        TimeSformer(**TINY)(torch.randn(2, 3, 32, 32))


def test_compiled_graph_equals_eager():
    """Whole forward captured as one graph (no breaks); aot_eager keeps it fast on CPU."""
    model = _randomise(TimeSformer(num_classes=NUM_CLASSES, **TINY)).eval()
    clip = _clip()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(clip), model(clip), atol=1e-4, rtol=0)
