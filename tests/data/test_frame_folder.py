"""FrameFolderReader serves a folder of images exactly as the images decode, in natural order."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from videocls.data.io.access import VideoDecodeError
from videocls.data.io.frame_folder import FrameFolderReader, list_frames


def write_frames(folder, count=12, size=(40, 24), name="img_{}.png"):
    """Random RGB frames; unpadded numbers so that plain string order would be wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (count, size[1], size[0], 3), dtype=np.uint8)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / name.format(i))
    return frames


def test_get_frames_equals_written_pngs(tmp_path):
    frames = write_frames(tmp_path / "v")
    (tmp_path / "v" / "notes.txt").write_text("not a frame")
    reader = FrameFolderReader(tmp_path / "v")
    assert len(reader) == 12 and reader.backend == "frames"
    assert reader.frames[:3] == ["img_1.png", "img_2.png", "img_3.png"] and reader.frames[-1] == "img_12.png"
    indices = [11, 0, 9, 9, 1]
    got = reader.get_frames(indices)
    assert got.dtype == torch.uint8 and got.shape == (5, 24, 40, 3)
    assert np.array_equal(got.numpy(), frames[indices])
    assert reader.get_frames([]).shape == (0, 24, 40, 3)


def test_fps_duration_timestamps_and_pickle(tmp_path):
    frames = write_frames(tmp_path / "v", count=6)
    reader = FrameFolderReader(tmp_path / "v", fps=12.0)
    assert reader.fps == 12.0 and reader.duration == pytest.approx(0.5)
    assert FrameFolderReader(tmp_path / "v").fps == 30.0
    assert reader.get_timestamps([0, 3, 5]).tolist() == [0.0, 0.25, 5 / 12]
    assert reader.get_timestamps([1]).dtype == torch.float64
    clone = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(clone.get_frames([5, 2]).numpy(), frames[[5, 2]])
    with clone:
        pass  # context manager and close() are part of the interface


def test_jpeg_and_grayscale_decode_like_pillow(tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 20), dtype=np.uint8), mode="L").save(
            folder / f"frame_{i:05d}.jpg"
        )
    reader = FrameFolderReader(folder)
    reference = np.asarray(Image.open(folder / "frame_00002.jpg").convert("RGB"))
    got = reader.get_frames([2])[0].numpy()
    assert got.shape == (16, 20, 3) and np.array_equal(got, reference)


def test_mixed_patterns_need_a_pattern(tmp_path):
    frames = write_frames(tmp_path / "v", count=3, name="img_{:05d}.jpg")
    write_frames(tmp_path / "v", count=3, name="x_{:05d}.jpg")
    with pytest.raises(VideoDecodeError, match="2 name patterns"):
        FrameFolderReader(tmp_path / "v")
    assert list_frames(tmp_path / "v", pattern="img_*") == [f"img_{i:05d}.jpg" for i in (1, 2, 3)]
    assert len(FrameFolderReader(tmp_path / "v", pattern="img_*")) == len(frames)


def test_bad_folders_and_indices(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match="no image frames"):
        FrameFolderReader(tmp_path / "empty")
    with pytest.raises(VideoDecodeError, match="not a folder"):
        FrameFolderReader(tmp_path / "missing")
    write_frames(tmp_path / "v", count=3)
    Image.new("RGB", (8, 8)).save(tmp_path / "v" / "img_4.png")
    (tmp_path / "v" / "img_5.png").write_bytes(b"truncated")
    reader = FrameFolderReader(tmp_path / "v")
    with pytest.raises(IndexError, match="outside"):
        reader.get_frames([5])
    with pytest.raises(VideoDecodeError, match="img_4.png is 8x8"):
        reader.get_frames([0, 3])
    with pytest.raises(VideoDecodeError, match="img_5.png cannot be decoded"):
        reader.get_frames([4])


def test_open_video_reads_a_directory_as_a_frame_folder(tmp_path):
    from PIL import Image

    from videocls.data import open_video

    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 10, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i + 1:05d}.png")
    reader = open_video(tmp_path)
    assert reader.backend == "frames" and len(reader) == 3
    assert np.array_equal(reader.get_frames([2, 0]).numpy(), frames[[2, 0]])
