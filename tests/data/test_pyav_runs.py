"""The PyAV seek path: runs that decode the fewest frames, and exactly the frames of a sequential decode."""

from pathlib import Path

import av
import numpy as np
import pytest

from videocls.data.io.demux import demux_index
from videocls.data.io.pyav import PyAVDecoder, SeekFailed, frames_to_decode, plan_runs

REAL_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "real-videos"


def test_a_run_ends_where_a_seek_decodes_fewer_frames():
    keys = [0, 16, 32, 48]
    # 8 frames 8 apart: two per GOP; decoding on from 11 to 19 costs 8 frames, seeking 4.
    runs = plan_runs([3, 11, 19, 27, 35, 43], keys)
    assert runs == [(0, [3, 11]), (1, [19, 27]), (2, [35, 43])]
    assert frames_to_decode(runs, keys) == 3 * 12  # the window 0..43 would be 44
    # The keyframe right after the last wanted frame: both ways decode 2 frames, no seek.
    assert plan_runs([15, 17], keys) == [(0, [15, 17])]
    # One frame earlier, decoding on costs 3 (15, 16, 17), the seek 2 (16, 17).
    assert plan_runs([14, 17], keys) == [(0, [14]), (1, [17])]
    # All-intra: a seek per frame, 8 frames decoded instead of the window's 57.
    intra = list(range(64))
    runs = plan_runs(list(range(0, 64, 8)), intra)
    assert len(runs) == 8 and frames_to_decode(runs, intra) == 8
    # Long GOP: one run, the window.
    assert frames_to_decode(plan_runs([100, 108, 116], [0, 90, 250]), [0, 90, 250]) == 27
    with pytest.raises(SeekFailed):
        plan_runs([2], [5])


def sequential(path: Path, wanted) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        frames = enumerate(container.decode(container.streams.video[0]))
        return {i: frame.to_ndarray(format="rgb24") for i, frame in frames if i in set(wanted)}


def test_bikes_clip_decodes_the_planned_frames_and_no_gop_more():
    """bikes.mp4 (H.264 with B-frames: every keyframe's dts is before its pts) seeks to its
    keyframes by pts; seeking by the dts landed one GOP early and decoded that GOP for nothing."""
    path = REAL_VIDEOS / "bikes.mp4"
    index = demux_index(str(path))
    assert index.key_positions[:3] == [0, 30, 76]
    assert all(seek < pts for seek, pts in zip(index.key_seek_ts, index.key_pts))
    clip = list(range(40, 104, 8))  # 8 frames 8 apart: 40..72 from keyframe 30, 80..96 from 76
    decoder = PyAVDecoder(str(path), index)
    frames = decoder.seek_get(clip)
    reference = sequential(path, clip)
    assert all(np.array_equal(frame, reference[i]) for frame, i in zip(frames, clip, strict=True))
    # (72 - 30 + 1) + (96 - 76 + 1) frames, against 67 for the window 30..96 decoded on.
    assert decoder.frames_decoded == 43 + 21 == frames_to_decode(plan_runs(clip, index.key_positions),
                                                                  index.key_positions)
    assert decoder.seek_by_pts
    decoder.close()


@pytest.mark.parametrize("name", ["cockatoo.mp4", "balle-jbart.mp4", "balle1-vp9.avi", "retroMars2018.avi"])
def test_seek_runs_serve_sequential_frames_at_the_planned_cost(name):
    path = REAL_VIDEOS / name
    index = demux_index(str(path))
    n = index.num_packets
    wanted = sorted({index.key_positions[1] - 2, index.key_positions[1] + 1, n // 2, n - 2, n - 1})
    decoder = PyAVDecoder(str(path), index)
    frames = decoder.seek_get(wanted)
    reference = sequential(path, wanted)
    assert all(np.array_equal(frame, reference[i]) for frame, i in zip(frames, wanted, strict=True))
    keys = index.key_positions
    assert decoder.frames_decoded == frames_to_decode(plan_runs(wanted, keys), keys)
    decoder.close()
