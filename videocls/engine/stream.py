"""Classify a live video stream: a decision every ``stride`` seconds over the last ``window``.

A source is a file played at its own frame rate (paced by its timestamps; ``speed`` plays it
faster, for tests), a camera device (``/dev/video0``, or its number) or a URL that PyAV opens
(``rtsp://``, ``http://``). Two threads share the work:

* the **decode thread** decodes every frame, keeps the model's frames (spaced as the file
  predictor's clips, :func:`plan_stream`, the frame nearest each point of that grid where the
  file's clip truncates, so a frame may be one later; for segment-sampled models one frame per
  ``window / num_frames`` seconds), turns each kept frame into the model's test view at once
  (the predictor's own :class:`~videocls.data.transforms.ClipTransform`: short side, centre
  crop, mean/std) and puts it in a :class:`FrameQueue` of at most a window's frames; when
  the queue is full the oldest frame is dropped and counted, so a slow model never makes
  frames pile up;
* the **decision loop** (the caller's thread) takes every frame waiting, appends them to a
  ring buffer of one window, and when a decision is due (first when the window is full, then
  on a grid of ``stride`` seconds of source time) scores the newest frames: the views are
  ``num_clips`` clips of the model's ``num_frames`` spread over the window, the last one
  ending at the newest frame. A decision is made on the newest frame only: when the model is
  slower than the source, the points of the grid that passed while it ran are counted as
  skipped, not made late one after another.

Latency is measured from the arrival of the newest frame a decision uses (for a file, the
moment its timestamp says it would arrive live) to the decision; :class:`StreamStats` reports
its p50/p95, the dropped frames and skipped decisions, and whether the run kept up with the
source (nothing dropped or skipped).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from videocls.data.io.access import VideoDecodeError
from videocls.data.io.pyav import decoded_frames, rgb_converter
from videocls.data.sampling import clip_span
from videocls.engine.predictor import VideoPredictor


@dataclass(frozen=True)
class StreamPlan:
    """The arithmetic of a stream: which frames the model sees and when it decides (seconds)."""

    interval: float  # between two of the model's frames
    capacity: int  # frames in the ring buffer: one window
    num_frames: int  # per clip
    num_clips: int  # clips per decision, spread over the window
    window: float
    stride: float

    def clip_starts(self) -> list[int]:
        """Ring positions where the clips start; the last clip ends at the newest frame."""
        last = self.capacity - self.num_frames
        if self.num_clips == 1:
            return [last]
        return [round(last * i / (self.num_clips - 1)) for i in range(self.num_clips)]


def plan_stream(predictor: VideoPredictor, source_fps: float | None, *, window: float | None,
                stride: float | None, num_clips: int | None = None) -> StreamPlan:
    """The plan of ``predictor``'s clips on a source of ``source_fps`` frames/s (None: unknown).

    Dense clips (``sampling_mode=clip``) take a frame every ``sampling_rate`` frames of the
    source (of ``target_fps`` when the model has one), spaced as the file's test clips are
    (PySlowFast's ``linspace`` over the clip's span less one frame: 9 source frames apart for
    8x8 clips); the window defaults to one clip and holds at least one. Segment sampling
    spreads ``num_frames`` over the whole window, which must then be given. ``stride``
    defaults to the window; ``num_clips`` to as many clips as cover the window.
    """
    sampler = predictor.preprocessing.sampler
    if sampler.mode == "clip":
        if not source_fps and not sampler.target_fps:
            raise ValueError("the source does not say its frame rate: the model's sampling rate "
                             "counts its frames (give the model a data.target_fps)")
        interval = sampler.sampling_rate / sampler.target_fps if sampler.target_fps else None
        if source_fps and sampler.num_frames > 1:
            # The file's clips (PySlowFast): num_frames points of linspace over span - 1 frames.
            span = clip_span(sampler.num_frames, sampler.sampling_rate, source_fps, sampler.target_fps)
            interval = (span - 1) / (sampler.num_frames - 1) / source_fps
        interval = interval or sampler.sampling_rate / source_fps
        window = window or sampler.num_frames * interval
        capacity = max(sampler.num_frames, round(window / interval))
    else:
        if not window:
            raise ValueError(f"{sampler.mode} sampling spreads {sampler.num_frames} frames over a whole "
                             "video: pass --window SECONDS, the span each decision covers")
        capacity, interval = sampler.num_frames, window / sampler.num_frames
    if stride is not None and stride <= 0 or window <= 0:
        raise ValueError(f"--window {window} and --stride {stride} must be positive seconds")
    clips = num_clips or math.ceil(capacity / sampler.num_frames)
    return StreamPlan(interval=interval, capacity=capacity, num_frames=sampler.num_frames,
                      num_clips=clips, window=window, stride=stride or window)


class FrameQueue:
    """A bounded queue that drops its oldest item when full (and counts it): the newest frames
    are the ones a live decision needs, and the bound is the memory."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize, self.dropped, self.max_len = maxsize, 0, 0
        self._items: deque = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item) -> None:
        with self._ready:
            self._items.append(item)
            if len(self._items) > self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self.max_len = max(self.max_len, len(self._items))
            self._ready.notify()

    def close(self) -> None:
        """No more items: :meth:`take_all` returns what is left, then None."""
        with self._ready:
            self._closed = True
            self._ready.notify()

    def take_all(self) -> list | None:
        """Every waiting item (at least one, waiting for it), or None once closed and empty."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._closed)
            if not self._items:
                return None
            items = list(self._items)
            self._items.clear()
            return items


@dataclass
class _Frame:
    index: int  # position in the source's decode order
    time: float  # source seconds since the first frame
    arrival: float  # perf_counter() when it arrived (would have arrived, for a paced file)
    view: torch.Tensor  # C x 1 x H x W, the model's test view of this frame


@dataclass
class StreamStats:
    decisions: int = 0
    skipped: int = 0  # points of the stride grid that passed while the model was busy
    frames_decoded: int = 0
    frames_kept: int = 0  # the model's frames (sampled), before any drop
    frames_dropped: int = 0  # of those, dropped from the full queue
    frames_used: int = 0  # of those, taken into the ring buffer (kept = used + dropped)
    queue_bound: int = 0
    queue_max: int = 0
    latency_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        def pct(values, q):
            return round(float(np.percentile(values, q)), 2) if values else None

        return {"decisions": self.decisions, "skipped_decisions": self.skipped,
                "frames_decoded": self.frames_decoded, "frames_kept": self.frames_kept,
                "frames_dropped": self.frames_dropped, "frames_used": self.frames_used,
                "queue_bound": self.queue_bound, "queue_max": self.queue_max,
                "latency_p50_ms": pct(self.latency_ms, 50), "latency_p95_ms": pct(self.latency_ms, 95),
                "model_p50_ms": pct(self.model_ms, 50),
                "keeps_up": self.frames_dropped == 0 and self.skipped == 0}


def open_source(source: str, *, timeout: float = 10.0):
    """``(container, video stream, live)``: a file, or a URL of one (HTTP with a duration), is
    played by its timestamps (not live); a camera device (``/dev/...``, or a number for
    ``/dev/videoN``) and a stream URL (RTSP, RTMP, UDP, or HTTP with no duration) are live:
    their frames arrive when they arrive."""
    path = Path(source)
    if path.is_file():
        options, fmt, live = {}, None, False
    elif source.isdigit() or source.startswith("/dev/"):
        source, options, fmt, live = (f"/dev/video{source}" if source.isdigit() else source), {}, "v4l2", True
    elif "://" in source:
        options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
        fmt, live = None, True
    else:
        raise VideoDecodeError(source, "no such file, camera device or URL")
    try:
        container = av.open(source, format=fmt, options=options, timeout=timeout)
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(source, f"cannot open ({error})") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(source, "no video stream")
    if "://" in source:
        live = source.startswith(("rtsp", "rtmp", "udp", "srt")) or container.duration is None
    # PyAV's default threading, as the file reader (data/io/pyav.py): frame threading would
    # hold back a frame per thread, latency a live source cannot afford.
    return container, container.streams.video[0], live


def source_rate(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


class StreamClassifier:
    """Runs ``predictor`` on a source with a :class:`StreamPlan`; :meth:`run` yields decisions."""

    def __init__(self, predictor: VideoPredictor, *, window: float | None = None, stride: float | None = None,
                 num_clips: int | None = None, speed: float = 1.0, topk: int = 5,
                 max_seconds: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed {speed}: a playback speed factor must be positive")
        self.predictor, self.speed, self.topk, self.max_seconds = predictor, speed, topk, max_seconds
        self.window, self.stride, self.num_clips = window, stride, num_clips
        self.plan: StreamPlan | None = None
        self.stats = StreamStats()
        self.live = False

    def run(self, source: str) -> Iterator[dict]:
        """Decisions as they are made: ``{"time", "start", "end"`` (source seconds),
        ``"frames"`` (source frame numbers of the newest clip), ``"topk"``, ``"decision"``
        (with thresholds), ``"latency_ms"``, ``"model_ms"``, ``"dropped"`` (so far)``}``."""
        container, stream, self.live = open_source(source)
        self.plan = plan_stream(self.predictor, source_rate(stream), window=self.window, stride=self.stride,
                                num_clips=self.num_clips)
        self._warm_up()
        queue = FrameQueue(self.plan.capacity)
        self.stats = StreamStats(queue_bound=queue.maxsize)
        stop, failure = threading.Event(), []
        decoder = threading.Thread(target=self._decode, args=(container, stream, queue, stop, failure),
                                   name="videocls-stream-decode", daemon=True)
        decoder.start()
        try:
            yield from self._decide(queue)
        finally:
            stop.set()
            decoder.join(timeout=10)
            container.close()
            self.stats.frames_dropped, self.stats.queue_max = queue.dropped, queue.max_len
        if failure:
            raise failure[0]

    def _warm_up(self) -> None:
        """One decision on blank views before the source starts: the first real one would
        otherwise pay for the model's lazy initialisation in its latency."""
        crop = self.predictor.preprocessing.transform.crop_size
        self.predictor.score_views(torch.zeros(self.plan.num_clips, 3, self.plan.num_frames, crop, crop))

    def _decode(self, container, stream, queue: FrameQueue, stop: threading.Event, failure: list) -> None:
        """The decode thread: pace, sample, transform, enqueue (see the module docstring)."""
        transform, plan = self.predictor.preprocessing.transform, self.plan
        rng = np.random.default_rng(0)  # the test transform draws nothing; its signature asks for one
        rate = source_rate(stream)
        tolerance = 0.5 / rate if rate else 0.0  # the frame nearest each point of the grid
        first_time, next_keep, start = None, 0.0, time.perf_counter()
        to_rgb = rgb_converter()
        try:
            for index, frame in enumerate(decoded_frames(container, stream)):
                if stop.is_set():
                    return
                self.stats.frames_decoded = index + 1
                now = time.perf_counter()
                stamp = frame.time if frame.time is not None else (index / rate if rate else now - start)
                first_time = stamp if first_time is None else first_time
                t = stamp - first_time
                if self.max_seconds is not None and t > self.max_seconds:
                    return
                if t + tolerance < next_keep:
                    continue
                next_keep += plan.interval * (math.floor((t + tolerance - next_keep) / plan.interval) + 1)
                arrival = now
                if not self.live:  # a file arrives when its timestamp says, at `speed` times
                    arrival = start + t / self.speed
                    if arrival > now:
                        time.sleep(arrival - now)
                rgb = torch.from_numpy(to_rgb(frame))
                view = transform(rgb[None], rng=rng, spatial_idx=1)
                self.stats.frames_kept += 1
                queue.put(_Frame(index, t, arrival, view))
        except Exception as error:  # noqa: BLE001 -- handed to the decision loop, which raises it
            failure.append(error)
        finally:
            queue.close()

    def _decide(self, queue: FrameQueue) -> Iterator[dict]:
        plan, stats = self.plan, self.stats
        ring: deque[_Frame] = deque(maxlen=plan.capacity)
        next_due = None
        while (frames := queue.take_all()) is not None:
            ring.extend(frames)
            stats.frames_used += len(frames)
            newest = ring[-1]
            if len(ring) < plan.capacity:
                continue
            slack = plan.interval / 2  # a decision is due at the model frame nearest its time
            next_due = newest.time if next_due is None else next_due
            if newest.time + slack < next_due:
                continue
            passed = math.floor((newest.time + slack - next_due) / plan.stride)
            stats.skipped += passed
            next_due += (passed + 1) * plan.stride
            yield self._decision(list(ring), queue)

    def _decision(self, ring: list[_Frame], queue: FrameQueue) -> dict:
        plan, newest = self.plan, ring[-1]
        views = [torch.cat([f.view for f in ring[s:s + plan.num_frames]], dim=1) for s in plan.clip_starts()]
        began = time.perf_counter()
        scored = self.predictor.score_views(torch.stack(views), topk=self.topk)
        done = time.perf_counter()
        latency, model = 1000 * (done - newest.arrival), 1000 * (done - began)
        self.stats.decisions += 1
        self.stats.latency_ms.append(latency)
        self.stats.model_ms.append(model)
        last_clip = ring[plan.clip_starts()[-1]:]
        return {"time": round(newest.time, 3), "start": round(ring[0].time, 3), "end": round(newest.time, 3),
                "frames": [f.index for f in last_clip], **scored, "latency_ms": round(latency, 2),
                "model_ms": round(model, 2), "dropped": queue.dropped}


def stream_predictions(predictor: VideoPredictor, source: str, *, jsonl: bool = False, out=None,
                       **options) -> StreamStats:
    """Print each decision of :class:`StreamClassifier` ``(predictor, **options)`` on ``source``
    as it is made (a text line, or a JSON object a line with ``jsonl``), then the run's
    :meth:`StreamStats.summary` (a last ``{"summary": ...}`` line); returns the stats."""
    out = out or sys.stdout
    classifier = StreamClassifier(predictor, **options)
    try:
        with closing(classifier.run(source)) as decisions:  # closed: the decode thread stops
            for decision in decisions:
                print(json.dumps(decision) if jsonl else _decision_text(decision), file=out, flush=True)
    except KeyboardInterrupt:  # a live source runs until stopped: the summary still comes
        pass
    summary = {"source": source, **classifier.stats.summary(), "plan": _plan_dict(classifier.plan)}
    print(json.dumps({"summary": summary}) if jsonl else _summary_text(summary), file=out, flush=True)
    return classifier.stats


def _plan_dict(plan: StreamPlan | None) -> dict | None:
    if plan is None:
        return None
    return {"window_s": round(plan.window, 4), "stride_s": round(plan.stride, 4),
            "frame_interval_s": round(plan.interval, 4), "ring_frames": plan.capacity,
            "clips_per_decision": plan.num_clips}


def _decision_text(d: dict) -> str:
    best = d["topk"][0]
    decision = ""
    if "decision" in d:
        decision = f"  decision: {'abstain' if d['decision'] is None else d['decision']}"
    return (f"[{d['start']:8.2f}s - {d['end']:8.2f}s]  {best['prob']:.3f}  {best['label']}{decision}  "
            f"(latency {d['latency_ms']:.1f} ms, dropped {d['dropped']})")


def _summary_text(s: dict) -> str:
    plan = s["plan"] or {}
    return (f"{s['source']}: {s['decisions']} decisions ({s['skipped_decisions']} skipped) every "
            f"{plan.get('stride_s')} s over {plan.get('window_s')} s; latency p50 {s['latency_p50_ms']} ms, "
            f"p95 {s['latency_p95_ms']} ms (model p50 {s['model_p50_ms']} ms); "
            f"frames dropped {s['frames_dropped']} of {s['frames_kept']} sampled (queue bound "
            f"{s['queue_bound']}, max {s['queue_max']}); "
            f"{'keeps up with the source' if s['keeps_up'] else 'does NOT keep up with the source'}")
