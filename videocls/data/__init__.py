"""Decoding, clip sampling, transforms and datasets."""

from videocls.data.annotations import AnnotationError, VideoRecord, read_classes, read_video_list
from videocls.data.io.access import VideoDecodeError
from videocls.data.io.reader import VideoReader, open_video

__all__ = [
    "AnnotationError",
    "VideoDecodeError",
    "VideoReader",
    "VideoRecord",
    "open_video",
    "read_classes",
    "read_video_list",
]
