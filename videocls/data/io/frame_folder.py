"""Videos stored as a folder of image frames, read through the same interface as a video file.

Datasets are often shipped or cached as extracted frames (``img_00001.jpg`` ...). A
:class:`FrameFolderReader` serves them exactly like :class:`~videocls.data.io.reader.VideoReader`
serves a file, so sampling, transforms and the dataset need not know the difference.

Frame ``i`` is the ``i``-th image of the folder in natural order: names are compared by the
numbers in them (``img_2.jpg`` before ``img_10.jpg``). All frames must follow one name
pattern: a folder mixing RGB frames with optical flow (``img_#.jpg``, ``x_#.jpg``) raises
unless ``pattern`` picks one. Folders carry no frame rate, so it is given (``fps``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from videocls.data.io.access import VideoDecodeError, check_frame_indices

__all__ = ["IMAGE_EXTENSIONS", "FrameFolderReader", "list_frames"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_NUMBER = re.compile(r"\d+")


def list_frames(folder: str | os.PathLike, pattern: str = "*") -> list[str]:
    """Names of the image files in ``folder`` matching the glob ``pattern``, in natural order."""
    folder = os.fspath(folder)
    try:
        names = [
            entry.name
            for entry in os.scandir(folder)
            if entry.is_file()
            and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            and fnmatch.fnmatchcase(entry.name, pattern)
        ]
    except OSError as error:
        raise VideoDecodeError(folder, f"cannot list frames ({error.strerror})") from error
    if not names:
        raise VideoDecodeError(folder, f"no image frames matching {pattern!r}")
    shapes = sorted({_NUMBER.sub("#", name) for name in names})
    if len(shapes) > 1:
        raise VideoDecodeError(
            folder,
            f"frames follow {len(shapes)} name patterns ({', '.join(shapes[:4])}); pass pattern= to pick one",
        )
    return sorted(names, key=lambda name: ([int(n) for n in _NUMBER.findall(name)], name))


class FrameFolderReader:
    """Random access to a folder of frames with :class:`~videocls.data.io.reader.VideoReader`'s
    interface: ``len``, ``fps``, ``duration``, ``get_frames``, ``get_timestamps``, ``close``.

    Frames are decoded with Pillow on demand and nothing stays open between calls, so the
    reader pickles into DataLoader workers as it is and ``close`` has nothing to release.
    """

    backend = "frames"

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, pattern: str = "*") -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise VideoDecodeError(self.path, "not a folder of frames")
        self.frames = list_frames(self.path, pattern)
        self.fps = float(fps)
        self.duration = len(self.frames) / self.fps

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"FrameFolderReader({self.path!r}, frames={len(self)}, fps={self.fps:.4g})"

    def _positions(self, indices: Sequence[int]) -> np.ndarray:
        return check_frame_indices(self.path, indices, len(self))

    def _load(self, position: int) -> np.ndarray:
        name = self.frames[position]
        try:
            with Image.open(os.path.join(self.path, name)) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as error:  # includes Pillow's UnidentifiedImageError
            raise VideoDecodeError(self.path, f"frame {name} cannot be decoded ({error})") from error

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 ``T x H x W x 3`` RGB frames at ``indices`` (any order, repeats allowed)."""
        positions = self._positions(indices)
        if positions.size == 0:
            height, width, _ = self._load(0).shape
            return torch.empty((0, height, width, 3), dtype=torch.uint8)
        unique, inverse = np.unique(positions, return_inverse=True)
        images = [self._load(p) for p in unique.tolist()]
        for p, image in zip(unique.tolist(), images):
            if image.shape != images[0].shape:
                raise VideoDecodeError(
                    self.path,
                    f"frame {self.frames[p]} is {image.shape[1]}x{image.shape[0]}, "
                    f"frame {self.frames[unique[0]]} {images[0].shape[1]}x{images[0].shape[0]}",
                )
        return torch.from_numpy(np.stack(images))[torch.from_numpy(inverse.reshape(-1))]

    def get_timestamps(self, indices: Sequence[int]) -> torch.Tensor:
        """Seconds (float64) of the frames at ``indices``: ``index / fps``."""
        return torch.from_numpy(self._positions(indices) / self.fps)

    def close(self) -> None:
        """Nothing to release (kept for the reader interface)."""

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
