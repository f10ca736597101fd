"""The layers are the bottom of videocls.models: they import nothing above them, and the shared
``StateDict`` type has one home there."""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "videocls" / "models"


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_layers_import_nothing_from_the_models_above_them():
    files = sorted((MODELS / "layers").glob("*.py"))
    assert len(files) >= 4  # __init__, attention, heads, resnet_blocks, types
    upward = {f"{f.name}: {m}" for f in files for m in _imported_modules(f)
              if m.startswith("videocls.") and not m.startswith("videocls.models.layers")}
    assert upward == set()


def test_state_dict_is_defined_once_and_imported_everywhere_else():
    definitions = [str(p.relative_to(MODELS)) for p in MODELS.rglob("*.py")
                   for node in ast.parse(p.read_text()).body if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", None) == "StateDict" for t in node.targets)]
    assert definitions == ["layers/types.py"]

    from videocls.models import checkpoints, inception_i3d, registry, resnet3d, slowfast, timesformer
    from videocls.models.layers import resnet_blocks, types

    for module in (checkpoints, inception_i3d, registry, resnet3d, slowfast, timesformer, resnet_blocks):
        assert module.StateDict is types.StateDict, module.__name__
