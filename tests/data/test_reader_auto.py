"""``backend="auto"`` serves all-intra files with PyAV (decord pays for every seek), other
files that decord reads exactly with decord; the choice comes from the probe's keyframe count,
also when it is read back from the probe cache."""

import json

import av
import numpy as np
import pytest

from videocls.data.io import probe_cache
from videocls.data.io.probe import load_decord
from videocls.data.io.reader import fallback_counts, open_video
from videocls.data.prepare import FORMATS, EncodeSettings, prepare_video


@pytest.fixture(scope="module")
def prepared(real_videos_dir, tmp_path_factory):
    """g1.avi (400 x 300, 16 frames) as ``--format fast`` (all-intra) and as GOP 16, at short side 64."""
    root = tmp_path_factory.mktemp("auto")
    fast = EncodeSettings(**{**FORMATS["fast"].__dict__, "short_side": 64})
    long_gop = EncodeSettings(short_side=64, gop=16)
    for name, settings in (("fast", fast), ("gop16", long_gop)):
        prepare_video(real_videos_dir / "g1.avi", root / f"{name}.mp4", settings)
    return root


def _sequential(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.skipif(load_decord() is None, reason="the choice is between decord and PyAV")
def test_auto_serves_all_intra_with_pyav_and_long_gops_with_decord(prepared):
    before = dict(fallback_counts())
    fast, gop16 = open_video(prepared / "fast.mp4"), open_video(prepared / "gop16.mp4")
    assert fast._probe.num_keyframes == len(fast) == 19 and fast._probe.decord_failure is None
    assert gop16._probe.num_keyframes == 2 and gop16._probe.decord_failure is None  # frames 0 and 16
    assert (fast.backend, gop16.backend) == ("pyav", "decord")
    assert open_video(prepared / "fast.mp4", backend="decord").backend == "decord"  # asked for, served
    assert fallback_counts() == before  # a choice, not a fallback
    for reader, name in ((fast, "fast.mp4"), (gop16, "gop16.mp4")):
        indices = [18, 0, 7, 8, 9, 3, 8]
        assert np.array_equal(reader.get_frames(indices).numpy(), _sequential(prepared / name)[indices])


def test_probes_cached_before_keyframes_were_counted_are_served_and_keep_decord(prepared, tmp_path,
                                                                                 monkeypatch):
    """A version-3 record (no num_keyframes) is still a valid verdict: no re-probe of a big
    dataset's cache; not knowing the keyframes, auto keeps decord. A record whose keyframe count
    is not a count of its frames is not trusted."""
    path = str(prepared / "fast.mp4")
    key = probe_cache.file_key(path)
    record = json.loads(probe_cache._record_line(key, open_video(path)._probe))
    assert record["v"] == 4 and record["num_keyframes"] == 19
    old = {k: v for k, v in record.items() if k != "num_keyframes"} | {"v": 3, "fps": 12.5}
    bad = record | {"num_keyframes": 20, "fps": 7.0}
    for i, (line, fps, keyframes) in enumerate(((old, 12.5, None), (bad, 30.0, 19))):
        monkeypatch.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path / str(i)))  # a cache file never read yet
        monkeypatch.setattr(probe_cache, "_probes", {})
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "decord_probe.jsonl").write_text(json.dumps(line) + "\n")
        reader = open_video(path)
        assert (reader.fps, reader._probe.num_keyframes) == (fps, keyframes)
        if keyframes is None and load_decord() is not None:
            assert reader.backend == "decord"
