"""tools/export.py: ONNX / torch.export artefacts checked against PyTorch, INT8, the spec as data."""

import json
import pickle
import shutil
import zipfile

import numpy as np
import onnx
import pytest
import torch
import yaml
from helpers import TINY_WIDTH, compose_config
from omegaconf import OmegaConf
from onnx import numpy_helper
from torch import nn

from videocls.data.datamodule import VideoData
from videocls.data.io.reader import open_video
from videocls.data.sampling import ClipSampler, pack_pathways
from videocls.data.transforms import ClipTransform
from videocls.engine.calibrate import save_calibration
from videocls.engine.export import ExportMismatch, export_model, export_run, input_spec, verify
from videocls.engine.export_clips import batch_of, validation_clips
from videocls.engine.exported import ExportedModel, check_pt2_archive, read_spec
from videocls.engine.quantize import format_quantization
from videocls.engine.run_loading import load_run, model_from_config, num_outputs
from videocls.engine.thresholds import save_thresholds
from videocls.models import list_models
from videocls.models.registry import builder_kwargs


def _families() -> list[str]:
    """One registered model per family (models whose builders take the same keywords are one
    family's sizes: c2d/i3d/slow, the SlowFasts, the X3Ds...): the dynamo exporter costs ~4
    CPU-seconds a model, so every size of every family would not fit the suite's budget."""
    first: dict[frozenset, str] = {}
    for name in list_models():
        first.setdefault(frozenset(builder_kwargs(name)), name)
    return sorted(first.values())


def _tiny_model(name: str) -> nn.Module:
    """The model at its demo size (configs/model_size/demo/), 4 frames of 32 px, shrunk further
    by the TINY_WIDTH override where the family has that key."""
    cfg = compose_config(["experiment=demo", f"model={name}", "data.root=unused", "data.num_frames=4",
                          "data.train_crop=32", "data.test_crop=32"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    key, value = next(v for prefix, v in TINY_WIDTH.items() if name.startswith(prefix)).split("=")
    if key.removeprefix("model.") in model_cfg:
        model_cfg[key.removeprefix("model.")] = yaml.safe_load(value)
    torch.manual_seed(0)
    return model_from_config(model_cfg, source=name).eval()


@pytest.fixture(scope="module")
def real_frames(real_videos_dir):
    """The first 16 decoded frames of a real video (T H W C uint8)."""
    reader = open_video(real_videos_dir / "carphone_distorted.mp4")
    try:
        return reader.get_frames(list(range(16)))
    finally:
        reader.close()


def _real_clips(frames: torch.Tensor, model: nn.Module, num_frames: int, count: int) -> list:
    cfg = model.default_config
    transform = ClipTransform(crop_size=32, min_short_side=32, max_short_side=32, mean=cfg.mean, std=cfg.std,
                              train=False)
    sampler = ClipSampler(num_frames, 1)
    alpha = getattr(model, "alpha", None)
    clips = []
    for i in range(count):  # different frames, different crops: different clips
        clip = transform(frames[sampler(len(frames), 25.0, train=False, clip_idx=i, num_clips=count)],
                         rng=np.random.default_rng(0), spatial_idx=i % 3)
        clips.append(pack_pathways(clip, alpha) if alpha else clip)
    return clips


@pytest.mark.parametrize("name", _families())
def test_every_family_exports_and_matches_pytorch(name, real_frames, tmp_path):
    """ONNX through onnxruntime equals PyTorch (<= 1e-4) on real clips at batch 1 and 3, from one file."""
    model = _tiny_model(name)
    num_frames = max(4, getattr(model, "alpha", None) or 1)  # SlowFast 4x16: one slow frame of eight
    clips = _real_clips(real_frames, model, num_frames, 3)
    data = VideoData(train_list="-", val_list="-", num_classes=num_outputs(model), num_frames=num_frames,
                     sampling_rate=1, test_short_side=32, test_crop=32)
    spec = input_spec(model, batch_of(clips[:2]), name=name, data=data, fmt="onnx")
    export_model(model, clips, tmp_path / "export", spec=spec, source="carphone_distorted.mp4")
    exported = ExportedModel.load(tmp_path / "export")
    with torch.no_grad():
        for size in (1, 3):
            expected = model(batch_of(clips[:size]))
            got = exported(batch_of(clips[:size]))
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() <= 1e-4
    names = [i["name"] for i in exported.spec["inputs"]]
    assert names == (["slow", "fast"] if getattr(model, "alpha", None) else ["video"])


# ------------------------------------------------------------------------------ a trained run
@pytest.fixture(scope="module")
def run_checkpoint(tiny_run, tmp_path_factory):
    """A copy of the tiny run's checkpoint with a temperature and abstention thresholds beside it."""
    checkpoint = tmp_path_factory.mktemp("export-run") / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run / "checkpoints" / "last.pt", checkpoint)
    save_calibration(checkpoint, {"temperature": 1.7})
    save_thresholds(checkpoint, {"kind": "abstain", "threshold": 0.4})
    return checkpoint


@pytest.fixture(scope="module")
def int8_export(run_checkpoint, tmp_path_factory):
    run = load_run(run_checkpoint)
    out = tmp_path_factory.mktemp("exports") / "int8"
    spec = export_run(run, out, quantize="int8", calibration_clips=4, latency_repeats=3)
    return run, out, spec


def test_spec_describes_the_run(int8_export, tiny_run):
    run, out, spec = int8_export
    stored = read_spec(out)
    assert stored == json.loads((out / "spec.json").read_text()) == spec
    data = OmegaConf.to_container(run.config.data)
    assert (stored["model"], stored["num_frames"], stored["sampling_rate"], stored["sampling_mode"]) == (
        "i3d_r50", 4, 2, data["sampling_mode"])
    assert (stored["short_side"], stored["crop_size"]) == (32, 32)
    assert stored["mean"] == pytest.approx([0.45] * 3) and stored["std"] == pytest.approx([0.225] * 3)
    assert stored["inputs"] == [{"name": "video", "shape": ["batch", 3, 4, 32, 32]}]
    assert stored["class_names"] == run.data.class_names() and len(stored["class_names"]) == 10
    assert stored["temperature"] == 1.7
    assert (stored["thresholds"]["kind"], stored["thresholds"]["threshold"]) == ("abstain", 0.4)
    assert stored["graphs"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert stored["precision"] == "int8" and stored["format"] == "onnx"
    assert stored["verification"]["batch_sizes"] == [1, 2]
    assert stored["verification"]["max_abs_diff"] <= 1e-4


def test_dynamic_batch_equals_pytorch(int8_export):
    run, out, _ = int8_export
    clips = validation_clips(run, 3)
    exported = ExportedModel.load(out, precision="fp32")
    with torch.no_grad():
        for size in (1, 3):
            expected = run.model(batch_of(clips[:size]))
            assert (exported(batch_of(clips[:size])) - expected).abs().max().item() <= 1e-4


def test_int8_measures_accuracy_and_latency(int8_export, tiny_run):
    run, out, spec = int8_export
    report = spec["quantization"]
    fp32_top1 = json.loads((tiny_run / "results.json").read_text())["video"]["top1"]
    assert report["accuracy"]["fp32"]["video_top1"] == pytest.approx(fp32_top1, abs=1e-6)  # = PyTorch's test
    change = report["accuracy"]["int8"]["video_top1"] - report["accuracy"]["fp32"]["video_top1"]
    assert report["accuracy"]["video_top1_change"] == pytest.approx(change)
    graph = onnx.load(out / "model.int8.onnx")
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) >= 10
    assert any(numpy_helper.to_array(t).dtype == np.int8 for t in graph.graph.initializer)
    # INT8 agrees with fp32 on most validation clips (independently of the report).
    clips = validation_clips(run, 10)
    fp32, int8 = ExportedModel.load(out, precision="fp32"), ExportedModel.load(out)
    assert int8.precision == "int8"
    agree = (fp32(batch_of(clips)).argmax(1) == int8(batch_of(clips)).argmax(1)).float().mean().item()
    assert agree >= 0.7
    latency = report["latency"]
    assert latency["repeats"] == 3 and latency["batch"] == 1
    low, high = latency["speedup_p5_p95"]
    assert low <= report["speedup"] <= high and latency["fp32"]["p50_ms"] > 0
    assert "not measured" in format_quantization({**report, "speedup": None, "latency": None})


def test_tampered_graph_is_refused(int8_export, tmp_path):
    run, out, _ = int8_export
    shutil.copytree(out, tmp_path / "copy")
    clips = validation_clips(run, 2)
    verify(ExportedModel.load(tmp_path / "copy", precision="fp32"), run.model, clips)  # as written: passes
    graph = onnx.load(tmp_path / "copy" / "model.onnx")
    bias = next(t for t in graph.graph.initializer if list(t.dims) == [10])  # the classifier's bias
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1e-3, bias.name))
    onnx.save(graph, tmp_path / "copy" / "model.onnx")
    with pytest.raises(ExportMismatch, match="differ from PyTorch's by 0.001"):
        verify(ExportedModel.load(tmp_path / "copy", precision="fp32"), run.model, clips)


class _Noisy(nn.Module):
    """A model whose output is not a function of its input: PyTorch and any export disagree."""

    def __init__(self, like: nn.Module) -> None:
        super().__init__()
        self.default_config, self.fc = like.default_config, nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3, 4))) + torch.rand(x.shape[0], 10)


def test_mismatch_is_refused_and_nothing_is_left(int8_export, tmp_path):
    run, _, _ = int8_export
    clips = validation_clips(run, 2)
    model = _Noisy(run.model)
    spec = input_spec(model, batch_of(clips), name="noisy", data=run.data, fmt="onnx")
    with pytest.raises(ExportMismatch, match="the export was not written"):
        export_model(model, clips, tmp_path / "out", spec=spec)
    assert list(tmp_path.iterdir()) == []  # neither --out nor the staging directory
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="never overwritten"):
        export_run(run, tmp_path / "taken")


def test_torch_export_format(run_checkpoint, tmp_path):
    run = load_run(run_checkpoint)
    spec = export_run(run, tmp_path / "pt2", fmt="torch_export")
    exported = ExportedModel.load(tmp_path / "pt2")
    assert spec["format"] == exported.spec["format"] == "torch_export"
    clips = validation_clips(run, 3)
    with torch.no_grad():
        for size in (1, 3):
            assert (exported(batch_of(clips[:size])) - run.model(batch_of(clips[:size]))).abs().max() <= 1e-4
    # An archive that would make torch.export.load unpickle an object is refused before loading.
    archive = tmp_path / "pt2" / "model.pt2"
    root = zipfile.ZipFile(archive).namelist()[0].split("/")[0]
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr(f"{root}/data/constants/opaque_obj_0", pickle.dumps(ValueError("not a tensor")))
    with pytest.raises(ValueError, match="opaque_obj_0 is not part of a plain torch.export program"):
        ExportedModel.load(tmp_path / "pt2")
    with pytest.raises(ValueError, match="not plain tensors"):
        check_pt2_archive(_with_member(archive, tmp_path / "b.pt2", "data/sample_inputs/model.pt",
                                       pickle.dumps(ValueError("x"))))


def _with_member(src, dst, name: str, data: bytes):
    """A copy of zip ``src`` with member ``<root>/name`` replaced by ``data``."""
    with zipfile.ZipFile(src) as z_in, zipfile.ZipFile(dst, "w") as z_out:
        root = z_in.namelist()[0].split("/")[0]
        for item in z_in.namelist():
            if item != f"{root}/{name}" and not item.endswith("opaque_obj_0"):
                z_out.writestr(item, z_in.read(item))
        z_out.writestr(f"{root}/{name}", data)
    return dst


@pytest.mark.parametrize(("edit", "message"), [
    ({"graphs": {"fp32": "../model.onnx"}}, "graphs.fp32"),
    ({"format": "pickle"}, "key 'format'"),
    ({"class_names": "os.system"}, "key 'class_names'"),
    ({"temperature": "__import__('os')"}, "key 'temperature'"),
    ({"mean": [0.45, 0.45]}, "key 'mean'"),
])
def test_spec_json_is_data_only(int8_export, tmp_path, edit, message):
    _, out, spec = int8_export
    shutil.copytree(out, tmp_path / "copy")
    (tmp_path / "copy" / "spec.json").write_text(json.dumps({**spec, **edit}))
    with pytest.raises(ValueError, match=message) as error:
        ExportedModel.load(tmp_path / "copy")
    assert "spec.json" in str(error.value)


def test_spec_json_refuses_nan(int8_export, tmp_path):
    _, out, spec = int8_export
    shutil.copytree(out, tmp_path / "copy")
    (tmp_path / "copy" / "spec.json").write_text(json.dumps({**spec, "temperature": float("nan")}))
    with pytest.raises(ValueError, match="spec.json: not valid JSON"):
        ExportedModel.load(tmp_path / "copy")
