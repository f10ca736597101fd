"""Run a model that ``tools/export.py`` wrote: an ONNX graph or a ``torch.export`` program.

An export directory holds the graph with its weights and ``spec.json``, the input spec a
caller needs to make the model's input from a video::

    DIR/spec.json        model, num_frames, sampling_rate, sampling_mode, pad, short_side,
                         crop_size, mean, std, input_layout, inputs, pathway_alpha,
                         class_names, temperature, thresholds, format, precision, graphs, ...
    DIR/model.onnx       (format "onnx": weights inside the graph; "model.int8.onnx" beside it
                         after ``--quantize int8``)
    DIR/model.pt2        (format "torch_export")

:meth:`ExportedModel.load` reads ``spec.json`` as data only: every key is checked for its type,
the graph file must be a plain file name inside the directory, and nothing in the spec is
looked up or called. What runs is the graph, through onnxruntime (whose graphs are operator
lists, with no code of their own) or ``torch.export.load``. The latter deserialises with pickle
in places (pickled weights, example inputs): a ``.pt2`` is opened only when its archive holds
no pickled weights or constants and its example inputs load with ``torch.load(weights_only=True)``,
so torch's pickle fallbacks are never reached (:func:`check_pt2_archive`).

:func:`write_spec` is the one writer of ``spec.json`` (strict JSON: numbers that are not finite
go through :func:`finite_json` first, which makes them null), beside :func:`read_spec`, its reader.

The inputs are what the PyTorch model takes: a ``B C T H W`` float tensor, or ``[slow, fast]``
for a two-pathway model (``spec["inputs"]`` names and shapes them, batch dynamic); calling the
model returns the logits as a float32 ``torch.Tensor`` (``B x num_classes``). The temperature
and thresholds are recorded for the caller to apply to the probabilities, as
:mod:`videocls.engine.predictor` does; the logits are the model's own.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

SPEC = "spec.json"
FORMATS = ("onnx", "torch_export")
PRECISIONS = ("fp32", "int8")
#: The graph file of each format and precision, inside the export directory.
GRAPH_FILES = {("onnx", "fp32"): "model.onnx", ("onnx", "int8"): "model.int8.onnx",
               ("torch_export", "fp32"): "model.pt2"}
_MAX_SPEC_CHARS = 4 << 20
#: The members a plain ``torch.export.save`` archive holds (inside its root folder): the graph
#: (JSON), raw tensors and their configs, pickled example inputs (checked), version records.
#: Custom objects (``custom_obj_*``, ``opaque_obj_*``), compiled kernels and "XL" weights are not.
_PT2_MEMBERS = re.compile(r"^(models/[\w.-]+\.json|data/weights/(weight_\d+|\w+_weights_config\.json)"
                          r"|data/constants/(tensor_\d+|\w+_constants_config\.json)|data/sample_inputs/\w+\.pt"
                          r"|archive_format|archive_version|byteorder|\.data/(version|serialization_id))$")

#: Keys of spec.json and the types their values must have (None where a value may be absent).
_SPEC_TYPES: dict[str, tuple] = {
    "model": (str,), "num_frames": (int,), "sampling_rate": (int,), "sampling_mode": (str,),
    "pad": (str,), "short_side": (int,), "crop_size": (int,), "mean": (list,), "std": (list,),
    "input_layout": (str,), "inputs": (list,), "pathway_alpha": (int, type(None)),
    "class_names": (list,), "temperature": (float, int, type(None)), "thresholds": (dict, type(None)),
    "format": (str,), "precision": (str,), "graphs": (dict,),
}


class ExportedModel:
    """An exported model and its input spec; ``model(inputs)`` returns the logits."""

    def __init__(self, spec: dict, run, path: Path, precision: str) -> None:
        self.spec, self._run, self.path, self.precision = spec, run, path, precision

    @classmethod
    def load(cls, path: str | Path, *, precision: str | None = None, threads: int | None = None
             ) -> ExportedModel:
        """The model of export directory ``path``: its ``spec["precision"]`` graph, or the one
        named (``"fp32"``, ``"int8"``, where the directory has it). ``threads`` sets
        onnxruntime's intra-op threads (default: its own choice, all cores)."""
        path = Path(path)
        spec = read_spec(path)
        precision = precision or spec["precision"]
        if precision not in spec["graphs"]:
            raise ValueError(f"{path / SPEC}: no {precision} graph in this export (it has "
                             f"{', '.join(sorted(spec['graphs']))}); export with --quantize int8 for one")
        graph = path / spec["graphs"][precision]
        if spec["format"] == "onnx":
            run = _onnx_runner(graph, threads)
        else:
            run = _torch_export_runner(graph)
        return cls({**spec, "precision": precision}, run, path, precision)

    @property
    def num_classes(self) -> int:
        return len(self.spec["class_names"])

    def __call__(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (float32, on the CPU) of ``inputs``: a ``B C T H W`` tensor, or ``[slow, fast]``."""
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        expected = self.spec["inputs"]
        if len(tensors) != len(expected):
            names = ", ".join(i["name"] for i in expected)
            raise ValueError(f"{self.path}: the model takes {len(expected)} input(s) ({names}), "
                             f"got {len(tensors)}")
        for tensor, spec in zip(tensors, expected):
            if tensor.dim() != len(spec["shape"]) or any(
                    isinstance(s, int) and s != n for s, n in zip(spec["shape"], tensor.shape)):
                raise ValueError(f"{self.path}: input {spec['name']} must have shape {spec['shape']}, "
                                 f"got {list(tensor.shape)}")
        return self._run([t.detach().to("cpu", torch.float32).contiguous() for t in tensors])

    def __repr__(self) -> str:
        return f"ExportedModel({self.path}, {self.spec['model']}, {self.spec['format']}, {self.precision})"


# ------------------------------------------------------------------------------ spec.json
def read_spec(path: str | Path) -> dict:
    """``path/spec.json`` checked as data: known keys with plain values of the right type, and
    graph names that are plain files inside ``path``. ValueError names the file and the key."""
    path = Path(path)
    file = path / SPEC
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {path} is not an export directory (tools/export.py)")
    text = file.read_text()
    if len(text) > _MAX_SPEC_CHARS:
        raise ValueError(f"{file}: {len(text)} characters; an input spec has a few thousand")
    try:
        spec = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise ValueError(f"{file}: not valid JSON: {error}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{file}: not a JSON object")
    for key, types in _SPEC_TYPES.items():
        if key not in spec:
            raise ValueError(f"{file}: key '{key}' is missing (re-export with tools/export.py)")
        value = spec[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"{file}: key '{key}' is a {type(value).__name__}, expected "
                             f"{' or '.join(t.__name__ for t in types)}")
    if spec["format"] not in FORMATS:
        raise ValueError(f"{file}: key 'format' is {spec['format']!r}, not one of {FORMATS}")
    if spec["precision"] not in PRECISIONS:
        raise ValueError(f"{file}: key 'precision' is {spec['precision']!r}, not one of {PRECISIONS}")
    for key in ("mean", "std"):
        if len(spec[key]) != 3 or not all(_is_number(v) for v in spec[key]):
            raise ValueError(f"{file}: key '{key}' must be three numbers")
    if not spec["class_names"] or not all(isinstance(c, str) for c in spec["class_names"]):
        raise ValueError(f"{file}: key 'class_names' must be a non-empty list of strings")
    if spec["temperature"] is not None and not spec["temperature"] > 0:
        raise ValueError(f"{file}: key 'temperature' must be positive")
    for i, item in enumerate(spec["inputs"]):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("shape"), list)
                and all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in item["shape"])):
            raise ValueError(f"{file}: key 'inputs[{i}]' must be {{'name': str, 'shape': [int or str]}}")
    for precision, name in spec["graphs"].items():
        if precision not in PRECISIONS or GRAPH_FILES.get((spec["format"], precision)) != name:
            names = [v for k, v in GRAPH_FILES.items() if k[0] == spec["format"]]
            raise ValueError(f"{file}: key 'graphs.{precision}' is {name!r}; a {spec['format']} export "
                             f"names its graphs {names}")
        if not (path / name).is_file():
            raise FileNotFoundError(f"{file}: its {precision} graph {path / name} is missing")
    if spec["precision"] not in spec["graphs"]:
        raise ValueError(f"{file}: key 'precision' is {spec['precision']!r} but 'graphs' has no such graph")
    return spec


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------ runners
def _onnx_runner(graph: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        (logits,) = session.run(None, {n: t.numpy() for n, t in zip(names, tensors)})
        return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))

    return run


def _torch_export_runner(graph: Path):
    check_pt2_archive(graph)
    module = torch.export.load(graph).module()

    @torch.no_grad()
    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        return module(*tensors).float()

    return run


def check_pt2_archive(path: Path) -> None:
    """Refuse a ``.pt2`` that would make ``torch.export.load`` unpickle anything but tensors:
    pickled weights or constants, custom objects, or example inputs that ``torch.load`` reads
    only with ``weights_only=False`` (torch falls back to that, so the check is done first)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a torch.export archive (.pt2 zip)") from None
    with archive:
        for member in archive.namelist():
            name = member.split("/", 1)[-1]  # inside the archive's root folder
            if not name or name.endswith("/"):
                continue
            if not _PT2_MEMBERS.match(name):
                raise ValueError(f"{path}: {member} is not part of a plain torch.export program "
                                 "(videocls exports hold a graph, tensors and example inputs only)")
            if name.endswith("_config.json"):
                try:
                    config = json.loads(archive.read(member)).get("config", {})
                except (ValueError, AttributeError):
                    raise ValueError(f"{path}: {member} is not a torch.export weights config") from None
                pickled = [k for k, v in config.items()
                           if not isinstance(v, dict) or v.get("use_pickle", True)]
                if pickled:
                    raise ValueError(f"{path}: {member} stores {pickled[:3]} as pickles, which videocls "
                                     "does not load from an export (re-export with tools/export.py)")
            elif name.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(archive.read(member)), weights_only=True)
                except Exception as error:
                    raise ValueError(f"{path}: its example inputs {member} are not plain tensors "
                                     f"({type(error).__name__}); refusing to load it") from None


def finite_json(node):
    """JSON has no NaN/inf (and ``read_spec`` refuses them): non-finite numbers become null."""
    if isinstance(node, dict):
        return {k: finite_json(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [finite_json(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node


def write_spec(directory: Path, spec: dict) -> None:
    """``directory/spec.json``; ``allow_nan=False``: pass a spec with floats through :func:`finite_json`."""
    (directory / SPEC).write_text(json.dumps(spec, indent=2, allow_nan=False) + "\n")
