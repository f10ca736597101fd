"""The built-in synthetic dataset: determinism, codec fidelity, and the time-reversal design."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from videocls.data.synthetic import NOISE_FILE, flip_labels, generate_dataset, long_tailed_counts, write_video
from videocls.data.synthetic_motion import CLASSES, VideoSpec, object_coverage, render_video, sample_spec

PAIRS = [(2 * k, 2 * k + 1) for k in range(len(CLASSES) // 2)]


def decode_pyav(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def read_rows(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        relative, label = line.split(",")
        rows.append((relative, int(label)))
    return rows


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Seed 0 twice, on one thread and on two, one video per class and split."""
    base = tmp_path_factory.mktemp("synthetic")
    return {
        "a": generate_dataset(base / "a", seed=0, train_per_class=1, val_per_class=1, workers=1),
        "b": generate_dataset(base / "b", seed=0, train_per_class=1, val_per_class=1, workers=2),
    }


def test_annotation_files(datasets):
    root = datasets["a"]
    assert tuple(root.joinpath("classes.txt").read_text().splitlines()) == CLASSES
    for split in ("train", "val"):
        rows = read_rows(root / f"{split}.csv")
        assert len(rows) == len(CLASSES)
        assert sorted(label for _, label in rows) == list(range(len(CLASSES)))
        for relative, _ in rows:
            assert relative.startswith(f"videos/{split}/") and relative.endswith(".mp4")
            assert (root / relative).stat().st_size > 0
    meta = json.loads((root / "meta.json").read_text())
    assert (meta["seed"], meta["train_per_class"], meta["val_per_class"]) == (0, 1, 1)
    # The defaults keep the files of datasets made before label noise and imbalance existed.
    assert sorted(meta) == ["classes", "generator_version", "seed", "train_per_class", "val_per_class"]
    assert not (root / NOISE_FILE).exists()


def test_same_seed_same_dataset_whatever_the_workers(datasets):
    a, b = datasets["a"], datasets["b"]
    for name in ("classes.txt", "train.csv", "val.csv", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # The encoder runs single-threaded, so even the files are identical (so are their frames).
    for relative, _ in read_rows(a / "train.csv") + read_rows(a / "val.csv"):
        assert (a / relative).read_bytes() == (b / relative).read_bytes(), relative
    np.testing.assert_array_equal(decode_pyav(a / relative), decode_pyav(b / relative))


def test_reuse_and_regeneration(datasets, tmp_path):
    root = datasets["a"]
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_dataset(root, seed=0, train_per_class=1, val_per_class=1, workers=1) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps

    # A dataset made with other parameters, or never finished, is made again from scratch.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "seed": 1}))
    (copy / "videos/val/00003.mp4").write_bytes(b"truncated")
    (copy / "videos/val/00099.mp4").write_bytes(b"stale")
    generate_dataset(copy, seed=0, train_per_class=1, val_per_class=1, workers=1)
    assert (copy / "meta.json").read_bytes() == (root / "meta.json").read_bytes()
    assert not (copy / "videos/val/00099.mp4").exists()
    reference = decode_pyav(root / "videos/val/00003.mp4")
    np.testing.assert_array_equal(decode_pyav(copy / "videos/val/00003.mp4"), reference)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        generate_dataset(foreign, seed=0, train_per_class=1, val_per_class=1, workers=1)


def test_decoded_frames_match_rendered_frames(datasets):
    """All-intra H.264 at CRF 18 in yuv420p loses the pixel noise and some colour at sharp
    colour edges.

    Over 300 sampled videos: mean abs error 1.8-5.0 (of 255), PSNR 28.8-40 dB per video,
    averages 3.1 and 34 dB.
    """
    root = datasets["a"]
    errors, psnrs = [], []
    for index, (relative, label) in enumerate(read_rows(root / "val.csv")):
        spec = sample_spec(0, "val", index, label)
        rendered = render_video(spec)
        decoded = decode_pyav(root / relative)
        assert decoded.shape == rendered.shape == (spec.n_frames, spec.height, spec.width, 3)
        error = decoded.astype(np.float32) - rendered
        errors.append(np.abs(error).mean())
        psnrs.append(10 * np.log10(255**2 / np.mean(error**2)))
        assert errors[-1] < 5.5 and psnrs[-1] > 28.0, (relative, errors[-1], psnrs[-1])
        with av.open(str(root / relative)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            assert stream.average_rate == spec.fps
    assert np.mean(errors) < 3.6 and np.mean(psnrs) > 32.5, (np.mean(errors), np.mean(psnrs))


def test_decord_and_pyav_decode_the_same_frames(datasets):
    root = datasets["a"]
    for index, (relative, label) in enumerate(read_rows(root / "val.csv")[:4]):
        reader = decord.VideoReader(str(root / relative))
        reference = decode_pyav(root / relative)
        assert len(reader) == len(reference)
        assert reader.get_avg_fps() == pytest.approx(sample_spec(0, "val", index, label).fps)
        np.testing.assert_array_equal(reader.get_batch(list(range(len(reader)))).asnumpy(), reference)
        # Random access (seek to a keyframe, decode forward) gives the same frames.
        picks = [len(reader) - 1, 0, len(reader) // 2, 17]
        np.testing.assert_array_equal(reader.get_batch(picks).asnumpy(), reference[picks])


def test_other_seeds_give_other_videos():
    for split, index in (("train", 0), ("val", 3)):
        base = sample_spec(0, split, index, 1)
        for seed in (1, 2):
            other = sample_spec(seed, split, index, 1)
            assert other != base and other.seed != base.seed
            a, b = render_video(base), render_video(other)
            assert a.shape != b.shape or np.abs(a.astype(int) - b).mean() > 10


def test_write_video_is_deterministic_and_checks_input(tmp_path):
    frames = render_video(sample_spec(3, "train", 0, 4))[:20]
    write_video(frames, tmp_path / "a.mp4", fps=20)
    write_video(frames, tmp_path / "b.mp4", fps=20)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    with pytest.raises(ValueError, match="odd.mp4"):
        write_video(np.zeros((4, 64, 65, 3), np.uint8), tmp_path / "odd.mp4", fps=20)
    with pytest.raises(ValueError, match="float.mp4"):
        write_video(np.zeros((4, 64, 64, 3), np.float32), tmp_path / "float.mp4", fps=20)


def test_spec_ranges():
    specs = [sample_spec(5, "train", i, i % len(CLASSES)) for i in range(300)]
    for spec in specs:
        assert 15 <= spec.fps <= 30 and isinstance(spec.fps, int)
        assert 2.0 - 1 / spec.fps <= spec.n_frames / spec.fps <= 6.0 + 1 / spec.fps
        assert 64 <= spec.height <= 112 and 64 <= spec.width <= 112
        assert spec.height % 2 == 0 and spec.width % 2 == 0
        assert spec.width != 72  # decord 0.6 decodes 72-pixel-wide videos as 4 channels
    assert len({s.shape for s in specs}) == 5 and len({s.background for s in specs}) == 3
    assert len({(s.height, s.width) for s in specs}) > 100 and len({s.fps for s in specs}) == 16
    with pytest.raises(ValueError, match="label"):
        sample_spec(0, "train", 0, len(CLASSES))


@pytest.mark.parametrize("first,second", PAIRS)
def test_second_class_is_the_first_played_backwards(first, second):
    for index in range(3):
        forward = sample_spec(11, "val", index, first)
        backward = sample_spec(11, "val", index, second)
        assert backward == forward.reversed()
        twice = backward.reversed()
        for field in dataclasses.fields(VideoSpec):
            value, expected = getattr(twice, field.name), getattr(forward, field.name)
            if isinstance(value, str):
                assert value == expected
            else:
                np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-9, err_msg=field.name)
        assert (forward.class_name, backward.class_name) == (CLASSES[first], CLASSES[second])
        clean = [render_video(dataclasses.replace(s, noise_std=0.0)) for s in (forward, backward)]
        difference = np.abs(clean[0][::-1].astype(int) - clean[1])
        assert difference.max() <= 1, difference.max()  # float rounding at most


def _centroid(coverage: np.ndarray, axis: int) -> float:
    """Centre of mass of an object mask along ``axis`` (0: y, 1: x), in pixels."""
    profile = coverage.sum(axis=1 - axis)
    return float((profile * np.arange(profile.size)).sum() / profile.sum())


def test_motion_goes_the_way_the_class_says():
    for index in range(4):
        for label, axis, sign in ((0, 1, -1), (1, 1, 1), (2, 0, -1), (3, 0, 1)):
            spec = sample_spec(2, "train", 4 * index + label, label)
            coverage = object_coverage(spec)
            # The whole video: one monotonic crossing of most of the frame, never leaving it.
            total = _centroid(coverage[-1], axis) - _centroid(coverage[0], axis)
            velocity = spec.vy if axis == 0 else spec.vx
            assert sign * total > 0, (CLASSES[label], total)
            assert abs(total) == pytest.approx(abs(velocity) * (spec.n_frames - 1) / spec.fps, abs=1.0)
            room = (spec.height if axis == 0 else spec.width) - 2 * spec.size - 2  # free centre positions
            assert abs(total) >= 0.6 * room - 1
            assert coverage.sum(axis=(1, 2)).min() >= 0.95 * coverage.sum(axis=(1, 2)).max()  # stays in frame
            steps = [_centroid(coverage[t + 8], axis) - _centroid(coverage[t], axis)
                     for t in range(0, spec.n_frames - 8, 8)]
            assert all(sign * step >= 0 for step in steps), (CLASSES[label], steps)

    # Clockwise on screen (y down): the long axis angle, measured from x towards y, increases.
    bar = ((-1.0, -0.25), (1.0, -0.25), (1.0, 0.25), (-1.0, 0.25))
    for label, sign in ((4, 1), (5, -1)):
        spec = dataclasses.replace(sample_spec(2, "train", 40 + label, label), vertices=bar, n_frames=10)
        coverage = object_coverage(spec)
        ys, xs = np.mgrid[0 : spec.height, 0 : spec.width]
        angles = []
        for c in coverage:
            mx, my = (c * xs).sum() / c.sum(), (c * ys).sum() / c.sum()
            mu20, mu02 = (c * (xs - mx) ** 2).sum(), (c * (ys - my) ** 2).sum()
            mu11 = (c * (xs - mx) * (ys - my)).sum()
            angles.append(np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02)))
        steps = (np.diff(angles) + 90) % 180 - 90
        np.testing.assert_allclose(steps, sign * abs(spec.angular_velocity) / spec.fps, atol=1.0)

    grow, shrink = sample_spec(2, "train", 6, 6), sample_spec(2, "train", 7, 7)
    for spec, sign in ((grow, 1), (shrink, -1)):
        area = object_coverage(spec).sum(axis=(1, 2))
        assert np.mean(sign * np.diff(area) > 0) > 0.85  # all but the snap back

    appear = sample_spec(2, "train", 8, 8)
    alpha = appear.state()["alpha"]
    assert np.all(np.diff(alpha) > 0) and alpha[0] <= 0.1 and alpha[-1] >= 0.9
    assert np.all(np.diff(sample_spec(2, "train", 9, 9).state()["alpha"]) < 0)


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def _frame_statistic(spec: VideoSpec, t: int) -> float:
    """What one frame shows of the pair's varying quantity, on a scale shared by all videos."""
    state = {k: v[t] for k, v in spec.state().items()}
    return {
        0: state["x"] / spec.width,
        1: state["y"] / spec.height,
        2: state["angle"] % 360,
        3: state["radius"] / min(spec.height, spec.width),
        4: state["alpha"],
    }[spec.label // 2]


@pytest.mark.parametrize("first,second", PAIRS)
def test_single_frames_do_not_tell_the_pair_apart(first, second):
    """One frame's position/angle/size/opacity has the same distribution in both classes.

    Every motion spans the whole video once, so the classes match for a frame drawn anywhere
    in the video (as a random training clip is); the first frame alone does tell them apart.
    """
    rng = np.random.default_rng(0)
    n = 300
    stats = {first: [], second: []}
    for index in range(n):
        for label in (first, second):
            spec = sample_spec(7, "train", 1000 * label + index, label)
            t = int(rng.integers(spec.n_frames))
            stats[label].append(_frame_statistic(spec, t))
    a, b = np.array(stats[first]), np.array(stats[second])
    assert _ks_statistic(a, b) < 1.95 * np.sqrt(2 / n)  # two-sample KS at alpha = 0.001
    # The check has power: the first frame of the fade does tell its direction.
    if first == 8:
        appear, disappear = (
            np.array([sample_spec(7, "train", i, label).state()["alpha"][0] for i in range(50)])
            for label in (8, 9)
        )
        assert _ks_statistic(appear, disappear) == 1.0


def test_flip_labels_flips_exactly_the_fraction_to_other_classes():
    labels = [i % 10 for i in range(640)]
    given, rows = flip_labels(labels, 0.1, seed=0)
    assert len(rows) == 64 and len(set(rows)) == 64
    assert [i for i in range(640) if given[i] != labels[i]] == rows  # every listed row changed, no other
    assert all(0 <= g < 10 for g in given)
    assert flip_labels(labels, 0.1, seed=0) == (given, rows)  # the seed alone decides
    assert flip_labels(labels, 0.1, seed=1)[1] != rows
    assert flip_labels(labels, 0.0, seed=0) == (labels, [])
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        flip_labels(labels, 1.0, seed=0)


def test_long_tailed_counts_by_hand():
    # 64 * 10 ** (-c / 9): 64, 49.6, 38.4, 29.7, 23.0, 17.8, 13.8, 10.7, 8.3, 6.4
    assert long_tailed_counts(64, 10) == [64, 50, 38, 30, 23, 18, 14, 11, 8, 6]
    assert long_tailed_counts(2, 100) == [2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert long_tailed_counts(5, 1) == [5] * 10
    with pytest.raises(ValueError, match="imbalance"):
        long_tailed_counts(5, 0.5)


def test_label_noise_and_imbalance_dataset(datasets, tmp_path):
    root = generate_dataset(tmp_path / "noisy", seed=0, train_per_class=2, val_per_class=1, workers=2,
                            label_noise=0.2, imbalance=2)
    rows = read_rows(root / "train.csv")
    true = {relative: int(relative[-9:-4]) % 10 for relative, _ in rows}  # video index -> its class
    counts = np.bincount([true[r] for r, _ in rows], minlength=10).tolist()
    assert counts == long_tailed_counts(2, 2) == [2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    noise = (root / NOISE_FILE).read_text().splitlines()
    assert noise[0] == "path,true_label,given_label"
    flipped = {line.split(",")[0]: (int(line.split(",")[1]), int(line.split(",")[2])) for line in noise[1:]}
    assert len(flipped) == round(0.2 * 14) == 3
    for relative, given in rows:
        expected = flipped[relative] if relative in flipped else (true[relative], true[relative])
        assert (true[relative], given) == expected
        assert expected[0] != expected[1] or relative not in flipped
    assert read_rows(root / "val.csv") == read_rows(datasets["a"] / "val.csv")  # validation untouched
    # The videos show their true class: the first ten are those of the clean dataset, byte for byte.
    for relative, _ in read_rows(datasets["a"] / "train.csv"):
        assert (root / relative).read_bytes() == (datasets["a"] / relative).read_bytes()
    meta = json.loads((root / "meta.json").read_text())
    assert (meta["label_noise"], meta["imbalance"]) == (0.2, 2)
