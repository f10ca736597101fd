# Over ~400 lines on purpose: one job (every annotation format -> VideoRecords, and back in
# filter_annotations), whose formats share the error, label and path rules defined once here.
"""Annotation files -> ``VideoRecord`` lists. Every parse error names the file and line.

:func:`read_annotations` reads every format the datamodule accepts (``data.format``):

``list``
    Kinetics-style list, one video a line: ``path label`` (the last whitespace separates
    them) or ``path,label``. Labels are integers or class names (with a class list).
``kinetics_csv``
    The official Kinetics CSV: a header naming at least ``label,youtube_id,time_start,
    time_end,split``, then one clip a row. Paths come from ``file_template``, by default
    ``{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``, the layout the
    usual download scripts write. Label names become ids through the class list when one is
    given, else through the sorted unique names of this file: give the class list whenever a
    split may lack a class, or its ids shift.
``ssv2``
    Something-Something v2: a JSON list of ``{"id", "label", "template", "placeholders"}``;
    the template without its brackets (``"Putting [something] on [something]"`` ->
    ``"Putting something on something"``) is looked up in the class list, which is
    ``labels.json`` (``{name: "id"}``, read by :func:`read_classes`). Videos are
    ``{id}.webm``.
``multilabel``
    One video, several labels (Charades-style): ``path 3,17,42``, labels separated by
    commas without spaces and the path by the last whitespace; ``VideoRecord.label`` is the
    sorted tuple of distinct ids. :func:`multi_hot` turns it into a target vector.

Relative paths are resolved against ``root``. Given ``num_classes``, :func:`read_annotations`
checks every label id against it, naming the file and line of the first one outside
``0..num_classes-1`` (a class count larger than the labels used is fine). Every record
keeps the line it came from in
``meta["line"]`` (SSv2 entries also their position in the list, ``meta["index"]``), which
:func:`filter_annotations` uses to write a subset of a file in its own format.
"""

from __future__ import annotations

import csv
import json
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "FORMATS",
    "KINETICS_TEMPLATE",
    "SSV2_TEMPLATE",
    "AnnotationError",
    "VideoRecord",
    "check_labels",
    "filter_annotations",
    "multi_hot",
    "read_annotations",
    "read_classes",
    "read_kinetics_csv",
    "read_multilabel",
    "read_ssv2",
    "read_video_list",
]

KINETICS_TEMPLATE = "{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
SSV2_TEMPLATE = "{id}.webm"


class AnnotationError(ValueError):
    """A missing or malformed annotation file; the message says ``file:line: what``."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: where it is, its label(s), and anything else the format carries."""

    path: str
    label: int | tuple[int, ...]
    meta: dict = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- helpers


def _read_text(path: Path, what: str = "annotation file") -> str:
    """The file's text; a UTF-8 byte-order mark (spreadsheet exports) is dropped."""
    if not path.is_file():
        raise AnnotationError(f"{path}: {what} not found")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise AnnotationError(f"{path}:{line}: not UTF-8 text") from error


def _lines(path: Path) -> list[str]:
    """Lines split at ``\\n`` only, so line numbers agree with :func:`filter_annotations`."""
    return [line.rstrip("\r") for line in _read_text(path).split("\n")]


def _resolve(path: str, root: Path | None) -> str:
    p = Path(path)
    return str(p if p.is_absolute() or root is None else root / p)


def _class_index(classes: Sequence[str] | None) -> dict[str, int] | None:
    return {name: i for i, name in enumerate(classes)} if classes is not None else None


def _parse_label(token: str, classes: dict[str, int] | None, where: str) -> int:
    token = token.strip()
    if token.lstrip("-").isdigit():
        label = int(token)
        if label < 0:
            raise AnnotationError(f"{where}: label {label} is negative; labels are 0, 1, ...")
        if classes is not None and label >= len(classes):
            raise AnnotationError(
                f"{where}: label {label} out of range: the class list has {len(classes)} names"
            )
        return label
    if classes is None:
        raise AnnotationError(f"{where}: label {token!r} is not an integer and no class list was given")
    if token not in classes:
        raise AnnotationError(f"{where}: unknown class name {token!r}")
    return classes[token]


def _check_template(template: str, fields: Sequence[str], example: dict) -> None:
    """Fail before reading a single line when ``template`` cannot be filled."""
    used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = sorted(used - set(fields))
    if unknown:
        raise ValueError(f"file template {template!r}: unknown field(s) {unknown}; available: {list(fields)}")
    try:
        template.format(**example)
    except (ValueError, IndexError) as error:
        raise ValueError(f"file template {template!r}: {error}") from error


def _require_records(records: list[VideoRecord], path: Path) -> list[VideoRecord]:
    if not records:
        raise AnnotationError(f"{path}: no videos listed")
    return records


# --------------------------------------------------------------------------- class lists


def read_classes(path: str | Path) -> list[str]:
    """Class names in label order: a text file with one name a line, or a JSON file holding
    either a list of names or a ``{name: id}`` object (SSv2's ``labels.json``, ids as
    strings or integers, which must be 0..n-1)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(_read_text(path, "class list"))
        except json.JSONDecodeError as error:
            raise AnnotationError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from error
        if isinstance(data, dict):
            try:
                by_id = {int(i): name for name, i in data.items()}
            except (TypeError, ValueError) as error:
                raise AnnotationError(f"{path}: class ids must be integers ({error})") from error
            if sorted(by_id) != list(range(len(data))):
                raise AnnotationError(f"{path}: class ids must be 0..{len(data) - 1}, each once")
            names = [by_id[i] for i in range(len(data))]
        elif isinstance(data, list) and all(isinstance(n, str) for n in data):
            names = data
        else:
            raise AnnotationError(f"{path}: expected a list of class names or a {{name: id}} object")
    else:
        names = [line.strip() for line in _lines(path)]
        names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise AnnotationError(f"{path}: duplicate class names")
    return names


# --------------------------------------------------------------------------- line formats


def _split_path_label(line: str, where: str, allow_comma: bool) -> tuple[str, str]:
    sep = "," if allow_comma and "," in line else None
    parts = line.rsplit(sep, 1) if sep else line.rsplit(maxsplit=1)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        expected = "'path label' or 'path,label'" if allow_comma else "'path label1,label2,...'"
        raise AnnotationError(f"{where}: expected {expected}, got {line!r}")
    return parts[0].strip(), parts[1].strip()


def _read_lines(
    path: str | Path, root: str | Path | None, parse: Callable[[str, str], tuple[str, int | tuple[int, ...]]]
) -> list[VideoRecord]:
    """Records of a one-video-a-line file; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    root_path = Path(root) if root is not None else None
    records = []
    for lineno, line in enumerate(_lines(path), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        video, label = parse(line, f"{path}:{lineno}")
        records.append(VideoRecord(_resolve(video, root_path), label, {"line": lineno}))
    return _require_records(records, path)


def read_video_list(
    path: str | Path, root: str | Path | None = None, classes: Sequence[str] | None = None
) -> list[VideoRecord]:
    """Kinetics-style list: ``path label`` (space) or ``path,label`` per line.

    Labels are integers, or class names resolved through ``classes``. Relative paths are
    resolved against ``root``. Blank lines and lines starting with ``#`` are skipped.
    """
    index = _class_index(classes)

    def parse(line: str, where: str) -> tuple[str, int]:
        video, label = _split_path_label(line, where, allow_comma=True)
        return video, _parse_label(label, index, where)

    return _read_lines(path, root, parse)


def read_multilabel(
    path: str | Path, root: str | Path | None = None, classes: Sequence[str] | None = None
) -> list[VideoRecord]:
    """Multi-label list: ``path 3,17,42`` per line (at least one label; names need
    ``classes``). ``VideoRecord.label`` is the sorted tuple of distinct label ids."""
    index = _class_index(classes)

    def parse(line: str, where: str) -> tuple[str, tuple[int, ...]]:
        video, labels = _split_path_label(line, where, allow_comma=False)
        tokens = labels.split(",")
        if not all(tokens):
            raise AnnotationError(f"{where}: empty label in {labels!r}")
        return video, tuple(sorted({_parse_label(t, index, where) for t in tokens}))

    return _read_lines(path, root, parse)


def multi_hot(labels: int | Sequence[int], num_classes: int) -> torch.Tensor:
    """float32 ``num_classes`` vector with ones at ``labels`` (the target of a sigmoid loss)."""
    ids = torch.as_tensor([labels] if isinstance(labels, int) else list(labels), dtype=torch.long)
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"labels {ids.tolist()} outside [0, {num_classes})")
    target = torch.zeros(num_classes, dtype=torch.float32)
    target[ids] = 1.0
    return target


# --------------------------------------------------------------------------- Kinetics CSV


def read_kinetics_csv(
    path: str | Path,
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    file_template: str = KINETICS_TEMPLATE,
) -> list[VideoRecord]:
    """The official Kinetics CSV (see the module docstring; blank lines and ``#`` comments
    are skipped, as in the list formats). ``file_template`` is a
    ``str.format`` template over ``label, youtube_id, time_start, time_end, split`` (the
    times as integers) giving each clip's path relative to ``root``."""
    path = Path(path)
    _check_template(
        file_template,
        KINETICS_COLUMNS,
        {"label": "a", "youtube_id": "b", "time_start": 0, "time_end": 10, "split": "train"},
    )
    header = None
    clips = []
    for lineno, line in enumerate(_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line]))
        where = f"{path}:{lineno}"
        if header is None:
            header = [cell.strip() for cell in row]
            missing = [c for c in KINETICS_COLUMNS if c not in header]
            if missing:
                raise AnnotationError(f"{where}: header lacks column(s) {missing}, got {header}")
            columns = {c: header.index(c) for c in KINETICS_COLUMNS}
            continue
        if len(row) != len(header):
            raise AnnotationError(f"{where}: {len(row)} fields, the header has {len(header)}")
        clip = {c: row[i].strip() for c, i in columns.items()}
        for key in ("time_start", "time_end"):
            if not clip[key].isdigit():
                raise AnnotationError(f"{where}: {key} must be a whole number of seconds, got {clip[key]!r}")
            clip[key] = int(clip[key])
        clips.append((lineno, clip))
    if header is None:
        raise AnnotationError(f"{path}: empty file, expected a header {','.join(KINETICS_COLUMNS)}")
    names = classes if classes is not None else sorted({clip["label"] for _, clip in clips})
    index = _class_index(names)
    root_path = Path(root) if root is not None else None
    records = []
    for lineno, clip in clips:
        if clip["label"] not in index:
            raise AnnotationError(f"{path}:{lineno}: unknown class name {clip['label']!r}")
        video = _resolve(file_template.format(**clip), root_path)
        records.append(VideoRecord(video, index[clip["label"]], {"line": lineno, **clip}))
    return _require_records(records, path)


# --------------------------------------------------------------------------- SSv2

_JSON_SPACE = re.compile(r"[ \t\n\r]*")
NEWLINE = "\n"


def _json_list(path: Path) -> list[tuple[int, object]]:
    """The items of a JSON list with the line each starts on."""
    text = _read_text(path)
    decoder = json.JSONDecoder()

    def skip(pos: int) -> int:
        return _JSON_SPACE.match(text, pos).end()

    def error_at(pos: int, what: str) -> AnnotationError:
        return AnnotationError(f"{path}:{text.count(NEWLINE, 0, pos) + 1}: {what}")

    pos = skip(0)
    if not text.startswith("[", pos):
        raise error_at(pos, "expected a JSON list of videos")
    pos, line, counted = skip(pos + 1), 1, 0
    items = []
    while not text.startswith("]", pos):
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            raise AnnotationError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from error
        line += text.count(NEWLINE, counted, pos)  # counted on from the last item: linear time
        counted = pos
        items.append((line, item))
        pos = skip(end)
        if text.startswith(",", pos):
            pos = skip(pos + 1)
        elif not text.startswith("]", pos):
            raise error_at(pos, "expected ',' or ']' after a list item")
    if skip(pos + 1) != len(text):
        raise error_at(skip(pos + 1), "text after the JSON list")
    return items


def read_ssv2(
    path: str | Path,
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    file_template: str = SSV2_TEMPLATE,
) -> list[VideoRecord]:
    """Something-Something v2 ``train.json`` / ``validation.json`` (see the module docstring).
    ``classes`` is required: ``read_classes("labels.json")``. ``file_template`` formats ``id``."""
    path = Path(path)
    if classes is None:
        raise AnnotationError(f"{path}: SSv2 annotations need the class list (labels.json)")
    _check_template(file_template, ("id",), {"id": "1"})
    index = _class_index(classes)
    root_path = Path(root) if root is not None else None
    records = []
    for position, (lineno, entry) in enumerate(_json_list(path)):
        where = f"{path}:{lineno}: entry {position}"
        if not isinstance(entry, dict) or "id" not in entry:
            raise AnnotationError(f"{where}: expected an object with 'id' and 'template'")
        if "template" not in entry:
            raise AnnotationError(f"{where}: no 'template' (the test split carries no labels)")
        name = str(entry["template"]).replace("[", "").replace("]", "")
        if name not in index:
            raise AnnotationError(f"{where}: template {name!r} is not in the class list")
        meta = {"line": lineno, "index": position, **entry}
        records.append(
            VideoRecord(_resolve(file_template.format(id=entry["id"]), root_path), index[name], meta)
        )
    return _require_records(records, path)


# --------------------------------------------------------------------------- dispatch

_READERS = {
    "list": read_video_list,
    "kinetics_csv": read_kinetics_csv,
    "ssv2": read_ssv2,
    "multilabel": read_multilabel,
}
FORMATS = tuple(_READERS)


def read_annotations(
    path: str | Path,
    format: str = "list",
    root: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    num_classes: int | None = None,
    **kwargs,
) -> list[VideoRecord]:
    """Read an annotation file of ``format`` (one of :data:`FORMATS`, see the module
    docstring). ``classes`` is a list of names or a file for :func:`read_classes`;
    ``num_classes``, when given, is the class count every label id must be below;
    ``kwargs`` go to the format's reader (``file_template`` for ``kinetics_csv``/``ssv2``)."""
    if format not in _READERS:
        raise ValueError(f"unknown annotation format {format!r}; expected one of {FORMATS}")
    if isinstance(classes, (str, Path)):
        classes = read_classes(classes)
    records = _READERS[format](path, root=root, classes=classes, **kwargs)
    if num_classes is not None:
        check_labels(records, num_classes, path)
    return records


def check_labels(records: Iterable[VideoRecord], num_classes: int, path: str | Path) -> None:
    """Raise :class:`AnnotationError` naming ``path`` and the line of the first record whose
    label id is not in ``0..num_classes-1``: found here, not as an ``IndexError`` (or a
    device-side assert) at the first training step or in the final test."""
    for record in records:
        labels = (record.label,) if isinstance(record.label, int) else record.label
        bad = [label for label in labels if not 0 <= label < num_classes]
        if bad:
            where = f"{path}:{record.meta.get('line', '?')}"
            if "index" in record.meta:
                where += f": entry {record.meta['index']}"
            raise AnnotationError(
                f"{where}: label {bad[0]} is outside 0..{num_classes - 1} "
                f"for num_classes={num_classes}; fix the label or the class count (data.num_classes)"
            )


def filter_annotations(path: str | Path, format: str, drop: Iterable[VideoRecord], out: str | Path) -> None:
    """Write the annotation file ``path`` to ``out`` without the entries of ``drop`` (records
    :func:`read_annotations` read from it). Line formats keep every other line byte for byte
    (header, comments, line endings); SSv2 writes the remaining entries as a JSON list."""
    if format not in _READERS:
        raise ValueError(f"unknown annotation format {format!r}; expected one of {FORMATS}")
    path, out = Path(path), Path(out)
    if format == "ssv2":
        dropped = {record.meta["index"] for record in drop}
        entries = [entry for i, (_, entry) in enumerate(_json_list(path)) if i not in dropped]
        out.write_text(json.dumps(entries, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    dropped = {record.meta["line"] for record in drop}
    lines = re.findall(rb"[^\n]*\n|[^\n]+$", path.read_bytes())  # each with its own line ending
    out.write_bytes(b"".join(line for lineno, line in enumerate(lines, start=1) if lineno not in dropped))
