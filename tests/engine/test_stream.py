"""Streaming prediction on a real file: the stride arithmetic, the model's own test views of the
frames the decision names, latency fields, and a bounded queue under a model slower than the source.

carphone_distorted.mp4 (MANIFEST.tsv): 120 frames at 30000/1001 fps (t_i = i / 29.97 s).
A 4 x 2 clip spans 8 frames; PySlowFast's linspace puts its frames 7/3 source frames apart,
so the stream keeps the frames nearest 0, 7/3, 14/3, 7, ...: 0, 2, 5, 7 first.
"""

from __future__ import annotations

import functools
import http.server
import math
import socketserver
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from videocls.data.io.reader import open_video
from videocls.data.sampling import ClipSampler
from videocls.data.transforms import ClipTransform
from videocls.engine.predictor import Preprocessing, VideoPredictor
from videocls.engine.stream import FrameQueue, StreamClassifier, plan_stream
from videocls.models import create_model

FPS = 30000 / 1001
CLASSES = ["a", "b", "c", "d", "e"]


@pytest.fixture
def one_thread():
    """One intra-op thread: two OpenMP threads on a loaded 2-core machine stall for seconds at
    their barriers, which would be measured as the model's latency."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_predictor(model: nn.Module | None = None) -> VideoPredictor:
    torch.manual_seed(0)
    model = model or create_model("i3d_r50", num_classes=5, width=4, stage_blocks=[1, 1, 1, 1],
                                  stem_pool=False)
    transform = ClipTransform(crop_size=32, min_short_side=36, max_short_side=36, mean=(0.45, 0.4, 0.35),
                              std=(0.225, 0.2, 0.25), train=False)
    return VideoPredictor(model, CLASSES, num_clips=1, num_crops=1,
                          preprocessing=Preprocessing(ClipSampler(4, 2), transform, "test"))


class SlowModel(nn.Module):
    """A real tiny classifier whose forward first sleeps: slower than the source."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner, self.seconds = inner, seconds
        self.default_config, self.classifier_prefix = inner.default_config, f"inner.{inner.classifier_prefix}"

    def forward(self, x):
        time.sleep(self.seconds)
        return self.inner(x)


def test_plan_follows_the_clip_spacing_and_needs_a_window_for_segments():
    predictor = _tiny_predictor()
    plan = plan_stream(predictor, 30.0, window=None, stride=None)
    # 4 x 2 at 30 fps: frames (8 - 1) / 3 source frames apart; the window is one clip.
    assert plan.interval == pytest.approx(7 / 3 / 30) and plan.capacity == 4 and plan.num_clips == 1
    assert plan.stride == pytest.approx(4 * 7 / 90)
    wide = plan_stream(predictor, 30.0, window=12 * 7 / 90, stride=0.5)
    assert (wide.capacity, wide.num_clips, wide.clip_starts()) == (12, 3, [0, 4, 8])
    transform = predictor.preprocessing.transform
    predictor.preprocessing = Preprocessing(ClipSampler(8, mode="segment"), transform, "segments")
    with pytest.raises(ValueError, match="pass --window SECONDS"):
        plan_stream(predictor, 30.0, window=None, stride=None)
    segments = plan_stream(predictor, 30.0, window=2.0, stride=1.0)
    assert (segments.capacity, segments.interval) == (8, 0.25)


def test_full_queue_drops_its_oldest_and_counts():
    queue = FrameQueue(3)
    for i in range(7):
        queue.put(i)
    assert (queue.take_all(), queue.dropped, queue.max_len) == ([4, 5, 6], 4, 3)
    queue.put(7)
    queue.close()
    assert queue.take_all() == [7] and queue.take_all() is None


def test_stream_over_a_real_video_decides_on_the_stride_grid(real_videos_dir, one_thread):
    video = real_videos_dir / "carphone_distorted.mp4"
    predictor = _tiny_predictor()
    classifier = StreamClassifier(predictor, stride=0.5, speed=4.0, topk=3)
    decisions = list(classifier.run(str(video)))
    stats = classifier.stats.summary()
    # The ring is full at the 4th kept frame (frame 7, t = 7/fps); then one decision per 0.5 s of
    # source time up to the last kept frame (119, nearest 51 x 7/3), each due at the kept frame
    # nearest its time: 1 + floor((119 - 7) / fps / 0.5 + half a kept frame) = 8.
    expected = 1 + math.floor(((119 - 7) / FPS + 7 / 3 / FPS / 2) / 0.5)
    assert expected == 8
    assert stats["decisions"] == len(decisions)
    assert stats["decisions"] + stats["skipped_decisions"] == expected
    grid = [i * 7 / 3 for i in range(52)]
    kept = [int(math.floor(g + 0.5)) for g in grid]  # the frame nearest each point: 0, 2, 5, 7, ...
    # Each decision is on 4 consecutive kept frames, its time the newest one's (the first is on
    # 0, 2, 5, 7 unless the loop woke after frame 9 had come too: then it decides on the newest).
    for d in decisions:
        assert d["time"] == pytest.approx(d["frames"][-1] / FPS, abs=1e-3)
        assert d["frames"] == kept[kept.index(d["frames"][0]):][:4]
        assert d["latency_ms"] >= d["model_ms"] > 0 and [t["label"] for t in d["topk"]][0] in CLASSES
    assert stats["frames_decoded"] == 120 and stats["frames_kept"] == 52
    assert stats["frames_kept"] == stats["frames_used"] + stats["frames_dropped"]
    latencies = sorted(d["latency_ms"] for d in decisions)
    assert stats["latency_p50_ms"] == pytest.approx(float(np.percentile(latencies, 50)), abs=0.02)
    assert stats["latency_p95_ms"] == pytest.approx(float(np.percentile(latencies, 95)), abs=0.02)
    assert stats["latency_p50_ms"] <= stats["latency_p95_ms"] <= latencies[-1] + 0.01

    # The views are the model's test transform of exactly those frames, read from the file.
    with open_video(video, backend="pyav") as reader:
        frames = reader.get_frames(decisions[0]["frames"])
    view = predictor.preprocessing.transform(frames, rng=np.random.default_rng(0))
    offline = predictor.score_views(view[None], topk=3)["topk"]
    assert [t["label"] for t in offline] == [t["label"] for t in decisions[0]["topk"]]
    assert [t["prob"] for t in offline] == pytest.approx([t["prob"] for t in decisions[0]["topk"]], abs=1e-5)


def test_a_model_slower_than_the_source_drops_frames_and_stays_bounded(real_videos_dir, one_thread):
    sleep = 0.25
    predictor = _tiny_predictor()
    predictor.model = SlowModel(predictor.model, sleep)
    classifier = StreamClassifier(predictor, stride=0.2, speed=4.0, topk=1)
    started = time.perf_counter()
    decisions = list(classifier.run(str(real_videos_dir / "carphone_distorted.mp4")))
    wall = time.perf_counter() - started
    stats = classifier.stats.summary()
    # 52 kept frames arrive over 1 s of wall time; each 0.25 s decision lets ~13 arrive into a
    # queue of 4 (one window): the oldest are dropped, never queued.
    assert stats["queue_bound"] == classifier.plan.capacity == 4
    assert stats["queue_max"] <= stats["queue_bound"]
    assert stats["frames_dropped"] > 0
    assert stats["frames_kept"] == stats["frames_used"] + stats["frames_dropped"]
    assert decisions[-1]["dropped"] <= stats["frames_dropped"]
    # Decisions still come, each on the newest frames, and the grid points it missed are counted.
    assert len(decisions) >= 2 and stats["skipped_decisions"] > 0
    expected = 1 + math.floor(((119 - 7) / FPS + 7 / 3 / FPS / 2) / 0.2)
    assert stats["decisions"] + stats["skipped_decisions"] == expected
    assert all(d["model_ms"] >= 1000 * sleep and d["latency_ms"] >= d["model_ms"] for d in decisions)
    assert stats["latency_p50_ms"] >= 1000 * sleep and not stats["keeps_up"]
    # Bounded in time too: the run ends near the end of the paced source, not after a backlog.
    assert wall < 120 / FPS / 4 + 2 * sleep + 3.0


def test_an_http_url_of_a_file_is_played_by_its_timestamps(real_videos_dir, one_thread):
    """PyAV opens the URL (a local server of the real file): the same decisions as the file."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(real_videos_dir))
    handler.log_message = lambda *args: None
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        classifier = StreamClassifier(_tiny_predictor(), stride=0.5, speed=8.0, topk=1)
        url = f"http://127.0.0.1:{server.server_address[1]}/carphone_distorted.mp4"
        decisions = list(classifier.run(url))
        server.shutdown()
    kept = [int(math.floor(i * 7 / 3 + 0.5)) for i in range(52)]
    assert not classifier.live and decisions[0]["frames"] == kept[kept.index(decisions[0]["frames"][0]):][:4]
    assert classifier.stats.decisions + classifier.stats.skipped == 8  # as the file, above
