"""Annotation formats: every format yields the right paths and labels; bad input names file:line."""

import json
import re

import pytest
import torch

from videocls.data.annotations import (
    AnnotationError,
    VideoRecord,
    filter_annotations,
    multi_hot,
    read_annotations,
    read_classes,
)


def write(path, text: str):
    path.write_bytes(text.encode())
    return path


def raises_at(path, line: int, match: str = ""):
    return pytest.raises(AnnotationError, match=re.escape(f"{path}:{line}:") + ".*" + match)


# --------------------------------------------------------------------------- list


def test_list_space_and_csv_with_class_names(tmp_path):
    ann = write(tmp_path / "train.csv", "# comment\na/x.mp4 1\n\nb y.mp4,dog\n/abs/z.mp4 0\n")
    records = read_annotations(ann, "list", root="/data", classes=["cat", "dog"])
    assert [(r.path, r.label, r.meta["line"]) for r in records] == [
        ("/data/a/x.mp4", 1, 2),
        ("/data/b y.mp4", 1, 4),
        ("/abs/z.mp4", 0, 5),
    ]


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("a.mp4 0\nb.mp4\n", 2, "expected 'path label'"),
        ("a.mp4 0\n\nb.mp4 cat\n", 3, "no class list"),
        ("a.mp4 -1\n", 1, "label -1 is negative"),
    ],
)
def test_list_malformed_line_names_file_and_line(tmp_path, text, line, match):
    ann = write(tmp_path / "bad.txt", text)
    with raises_at(ann, line, match):
        read_annotations(ann, "list")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AnnotationError, match=re.escape(str(tmp_path / "nope.csv"))):
        read_annotations(tmp_path / "nope.csv", "list")
    with pytest.raises(ValueError, match="unknown annotation format"):
        read_annotations(tmp_path / "nope.csv", "avi")


# --------------------------------------------------------------------------- Kinetics CSV

KINETICS = """label,youtube_id,time_start,time_end,split
riding a bike,abc123,5,15,train
"abseiling",--x_yz,0,10,train
riding a bike,q9,102,112,train
"""


def test_kinetics_csv_paths_and_sorted_label_ids(tmp_path):
    ann = write(tmp_path / "train.csv", KINETICS)
    records = read_annotations(ann, "kinetics_csv", root="/k400")
    # No class list: ids are the sorted unique names of the file.
    assert [(r.path, r.label) for r in records] == [
        ("/k400/train/riding a bike/abc123_000005_000015.mp4", 1),
        ("/k400/train/abseiling/--x_yz_000000_000010.mp4", 0),
        ("/k400/train/riding a bike/q9_000102_000112.mp4", 1),
    ]
    assert records[1].meta == {
        "line": 3,
        "label": "abseiling",
        "youtube_id": "--x_yz",
        "time_start": 0,
        "time_end": 10,
        "split": "train",
    }


def test_kinetics_csv_class_list_and_template(tmp_path):
    ann = write(
        tmp_path / "val.csv",
        "youtube_id,label,time_end,time_start,split,is_cc\nid1,riding a bike,20,10,val,0\n",
    )
    classes = write(tmp_path / "classes.txt", "abseiling\nplaying chess\nriding a bike\n")
    (record,) = read_annotations(
        ann,
        "kinetics_csv",
        root=tmp_path,
        classes=classes,
        file_template="{split}/{youtube_id}_{time_start}.mkv",
    )
    assert record == VideoRecord(str(tmp_path / "val/id1_10.mkv"), 2)


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("label,youtube_id,time_start,split\n", 1, "header lacks"),
        ("label,youtube_id,time_start,time_end,split\n\na,b,1.5,3,train\n", 3, "whole number"),
        ("label,youtube_id,time_start,time_end,split\na,b,1,3\n", 2, "4 fields"),
    ],
)
def test_kinetics_csv_malformed(tmp_path, text, line, match):
    ann = write(tmp_path / "k.csv", text)
    with raises_at(ann, line, match):
        read_annotations(ann, "kinetics_csv")


def test_kinetics_csv_unknown_class_and_bad_template(tmp_path):
    ann = write(tmp_path / "k.csv", KINETICS)
    with raises_at(ann, 3, "unknown class name 'abseiling'"):
        read_annotations(ann, "kinetics_csv", classes=["riding a bike"])
    with pytest.raises(ValueError, match="unknown field"):
        read_annotations(ann, "kinetics_csv", file_template="{label}/{video}.mp4")


# --------------------------------------------------------------------------- SSv2

SSV2_LABELS = {
    "Holding something": "0",
    "Putting something on something": "1",
    "Pushing something from left to right": "2",
}


def ssv2_files(tmp_path):
    labels = write(tmp_path / "labels.json", json.dumps(SSV2_LABELS))
    entries = [
        {
            "id": "78687",
            "label": "putting a cup on a table",
            "template": "Putting [something] on [something]",
            "placeholders": ["a cup", "a table"],
        },
        {
            "id": "42326",
            "label": "holding a pen",
            "template": "Holding [something]",
            "placeholders": ["a pen"],
        },
        {
            "id": "100",
            "label": "pushing box from left to right",
            "template": "Pushing [something] from left to right",
            "placeholders": ["box"],
        },
    ]
    train = write(
        tmp_path / "train.json", "[\n" + ",\n".join(json.dumps(e, indent=1) for e in entries) + "\n]\n"
    )
    return labels, train, entries


def test_ssv2_templates_map_to_label_ids(tmp_path):
    labels, train, _ = ssv2_files(tmp_path)
    assert read_classes(labels) == list(SSV2_LABELS)
    records = read_annotations(train, "ssv2", root="/ssv2", classes=labels)
    assert [(r.path, r.label) for r in records] == [
        ("/ssv2/78687.webm", 1),
        ("/ssv2/42326.webm", 0),
        ("/ssv2/100.webm", 2),
    ]
    assert [r.meta["index"] for r in records] == [0, 1, 2]
    assert records[0].meta["placeholders"] == ["a cup", "a table"]
    # Each entry's line: where its object starts in the pretty-printed file.
    text = train.read_text().split("\n")
    assert [r.meta["line"] for r in records] == [i + 1 for i, line in enumerate(text) if line == "{"]


def test_ssv2_errors_name_line(tmp_path):
    labels, train, entries = ssv2_files(tmp_path)
    entries[2]["template"] = "Spinning [something]"
    bad = write(tmp_path / "bad.json", "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]")
    with raises_at(bad, 4, "entry 2: template 'Spinning something' is not in the class list"):
        read_annotations(bad, "ssv2", classes=labels)
    broken = write(
        tmp_path / "broken.json", '[\n{"id": "1", "template": "Holding [something]"},\n{"id": }\n]'
    )
    with raises_at(broken, 3, "invalid JSON"):
        read_annotations(broken, "ssv2", classes=labels)
    with pytest.raises(AnnotationError, match="need the class list"):
        read_annotations(train, "ssv2")


def test_labels_json_ids_must_be_a_permutation(tmp_path):
    with pytest.raises(AnnotationError, match=r"class ids must be 0\.\.1"):
        read_classes(write(tmp_path / "labels.json", '{"a": "0", "b": "2"}'))


# --------------------------------------------------------------------------- multi-label


def test_multilabel_records_and_multi_hot(tmp_path):
    ann = write(tmp_path / "charades.txt", "v/a.mp4 17,3,42\nv/b.mp4\t5\nv/c.mp4 3,3\n")
    records = read_annotations(ann, "multilabel", root="/c")
    assert [(r.path, r.label) for r in records] == [
        ("/c/v/a.mp4", (3, 17, 42)),
        ("/c/v/b.mp4", (5,)),
        ("/c/v/c.mp4", (3,)),
    ]
    target = multi_hot(records[0].label, 50)
    assert target.dtype == torch.float32 and target.shape == (50,)
    assert target.nonzero().flatten().tolist() == [3, 17, 42]
    assert multi_hot(4, 5).tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="outside"):
        multi_hot((1, 5), 5)


def test_multilabel_malformed(tmp_path):
    ann = write(tmp_path / "m.txt", "a.mp4 1,2\nb.mp4 1,,2\n")
    with raises_at(ann, 2, "empty label"):
        read_annotations(ann, "multilabel")
    ann = write(tmp_path / "n.txt", "a.mp4 1,2\nb.mp4 1,7\n")
    with raises_at(ann, 2, "out of range"):
        read_annotations(ann, "multilabel", classes=[str(i) for i in range(5)])


# --------------------------------------------------------------------------- labels vs class count


def test_labels_are_checked_against_num_classes_in_every_format(tmp_path):
    """The first label id >= num_classes fails at read time, naming file, line and count;
    a class count larger than the labels used is accepted."""
    listed = write(tmp_path / "list.txt", "# c\na.mp4 0\nb.mp4 2\nc.mp4 3\n")
    assert [r.label for r in read_annotations(listed, "list", num_classes=4)] == [0, 2, 3]
    assert [r.label for r in read_annotations(listed, "list", num_classes=400)] == [0, 2, 3]
    with raises_at(listed, 4, "label 3 is outside 0..2 for num_classes=3"):
        read_annotations(listed, "list", num_classes=3)

    multi = write(tmp_path / "multi.txt", "a.mp4 0,1\nb.mp4 1,5\n")
    assert read_annotations(multi, "multilabel", num_classes=6)[1].label == (1, 5)
    with raises_at(multi, 2, "label 5 is outside 0..4 for num_classes=5"):
        read_annotations(multi, "multilabel", num_classes=5)

    # Kinetics without a class list numbers the names it finds: 2 names, ids 0 and 1.
    kinetics = write(tmp_path / "k.csv", KINETICS)
    assert len(read_annotations(kinetics, "kinetics_csv", num_classes=2)) == 3
    with raises_at(kinetics, 2, "label 1 is outside 0..0 for num_classes=1"):
        read_annotations(kinetics, "kinetics_csv", num_classes=1)

    labels, train, _ = ssv2_files(tmp_path)  # labels 1, 0, 2
    assert len(read_annotations(train, "ssv2", classes=labels, num_classes=3)) == 3
    lines = [r.meta["line"] for r in read_annotations(train, "ssv2", classes=labels)]
    with raises_at(train, lines[2], "entry 2: label 2 is outside 0..1 for num_classes=2"):
        read_annotations(train, "ssv2", classes=labels, num_classes=2)


# --------------------------------------------------------------------------- subsets


def test_filter_annotations_keeps_other_lines_byte_for_byte(tmp_path):
    text = (
        b"label,youtube_id,time_start,time_end,split\r\na,x,1,2,train\r\nb,y,3,4,train\r\n"
        b"# note\r\na,z,5,6,train"
    )
    ann = tmp_path / "k.csv"
    ann.write_bytes(text)
    records = read_annotations(ann, "kinetics_csv")
    out = tmp_path / "clean.csv"
    filter_annotations(ann, "kinetics_csv", [records[1]], out)
    assert (
        out.read_bytes()
        == b"label,youtube_id,time_start,time_end,split\r\na,x,1,2,train\r\n# note\r\na,z,5,6,train"
    )
    filter_annotations(ann, "kinetics_csv", [records[2]], out)
    assert (
        out.read_bytes()
        == b"label,youtube_id,time_start,time_end,split\r\na,x,1,2,train\r\nb,y,3,4,train\r\n# note\r\n"
    )
    assert [r.path for r in read_annotations(out, "kinetics_csv")] == [r.path for r in records[:2]]


def test_filter_annotations_ssv2(tmp_path):
    labels, train, entries = ssv2_files(tmp_path)
    records = read_annotations(train, "ssv2", classes=labels)
    out = tmp_path / "clean.json"
    filter_annotations(train, "ssv2", [records[0]], out)
    assert json.loads(out.read_text()) == entries[1:]
