"""Reading frames, exactly: video files (decord or PyAV) and folders of images.

Frame ``i`` of a file is, by definition, the ``i``-th frame a plain sequential PyAV decode
from the start produces (``frame.to_ndarray(format="rgb24")``). Every backend is held to
that definition, checked once per file by the probe.

One job per module, each importing only those above it in this list:

* :mod:`~videocls.data.io.access`: the decode error naming the file, and the index check
  every reader shares.
* :mod:`~videocls.data.io.frame_folder`: folders of image frames.
* :mod:`~videocls.data.io.demux`: opening a file with PyAV and its packet (keyframe) index.
* :mod:`~videocls.data.io.pyav`: PyAV decoding by position (keyframe seeks or from the start).
* :mod:`~videocls.data.io.probe_cache`: the probe's verdict, the file key it is valid for,
  and its on-disk cache.
* :mod:`~videocls.data.io.probe`: the decord accuracy probe and the frame rate rule.
* :mod:`~videocls.data.io.reader`: :func:`~videocls.data.io.reader.open_video` and
  :class:`~videocls.data.io.reader.VideoReader`, which picks the backend.

Import a name from the module that defines it; this file re-exports nothing, so each name
has one home.
"""
