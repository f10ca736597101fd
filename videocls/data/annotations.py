"""Annotation files -> ``VideoRecord`` lists. Every parse error names the file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class AnnotationError(ValueError):
    """A missing or malformed annotation file; the message says ``file:line: what``."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: where it is, its label(s), and anything else the format carries."""

    path: str
    label: int | tuple[int, ...]
    meta: dict = field(default_factory=dict, compare=False)


def read_classes(path: str | Path) -> list[str]:
    """One class name per line, in label order."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: class list not found")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise AnnotationError(f"{path}: duplicate class names")
    return names


def _resolve(path: str, root: Path | None) -> str:
    p = Path(path)
    return str(p if p.is_absolute() or root is None else root / p)


def _parse_label(token: str, classes: dict[str, int] | None, where: str) -> int:
    token = token.strip()
    if token.lstrip("-").isdigit():
        label = int(token)
        if label < 0 or (classes is not None and label >= len(classes)):
            raise AnnotationError(f"{where}: label {label} out of range")
        return label
    if classes is None:
        raise AnnotationError(f"{where}: label {token!r} is not an integer and no class list was given")
    if token not in classes:
        raise AnnotationError(f"{where}: unknown class name {token!r}")
    return classes[token]


def read_video_list(
    path: str | Path, root: str | Path | None = None, classes: list[str] | None = None
) -> list[VideoRecord]:
    """Kinetics-style list: ``path label`` (space) or ``path,label`` per line.

    Labels are integers, or class names resolved through ``classes``. Relative paths are
    resolved against ``root``. Blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    index = {name: i for i, name in enumerate(classes)} if classes is not None else None
    root_path = Path(root) if root is not None else None
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        sep = "," if "," in line else None
        parts = line.rsplit(sep, 1) if sep else line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[0].strip():
            raise AnnotationError(f"{where}: expected 'path label' or 'path,label', got {line!r}")
        records.append(VideoRecord(_resolve(parts[0].strip(), root_path), _parse_label(parts[1], index, where)))
    if not records:
        raise AnnotationError(f"{path}: no videos listed")
    return records
