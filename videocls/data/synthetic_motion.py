"""The drawing of the built-in temporal dataset: ten actions that only motion tells apart.

Every video shows one polygon over a static textured background. The ten classes are five
pairs, each pair the time reversal of the other (``move_left``/``move_right``, ...), and a
video of the second class of a pair is *defined* as the reversed video of the first
(:meth:`VideoSpec.reversed`). Shapes, colours, backgrounds and the per-frame distribution of
the object's position, angle, size and opacity are therefore the same for both classes of a
pair: a model that ignores frame order (C2D) can name the pair but not the class, while a
model that sees motion (I3D) can name both.

Every motion runs once, monotonically, over the whole video: the object crosses most of the
frame without leaving it, turns steadily, grows (or fades in) from the first frame to the last.
Any clip of a video therefore shows its class's motion and nothing that looks like the
partner's; a random clip's frames, taken without their order, look the same in both classes.

Everything random in a video comes from one ``numpy.random.Generator`` seeded by
``(seed, split, index)``, so a dataset is the same whatever the order or the number of
threads that generate it. Writing the dataset (encoding, CSV files, label noise) is
:mod:`videocls.data.synthetic`.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["CLASSES", "VideoSpec", "object_coverage", "render_video", "sample_spec"]

#: Class names in label order; labels ``2k`` and ``2k + 1`` are each other's time reversal.
CLASSES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "grow",
    "shrink",
    "appear",
    "disappear",
)

SHAPE_NAMES = ("triangle", "l_shape", "notched_rectangle", "flag", "random_polygon")
BACKGROUNDS = ("noise", "stripes", "checker")
FPS_RANGE = (15, 30)  # integers, inclusive
DURATION_RANGE = (2.0, 6.0)  # seconds
HEIGHTS = tuple(range(64, 113, 2))  # even, as yuv420p needs
# decord 0.6 returns 4-channel frames for 72-pixel-wide videos (dmlc/decord#336); the dataset
# is for training, not for catching reader bugs, so it leaves that width out.
WIDTHS = tuple(w for w in HEIGHTS if w != 72)

# Fixed shapes, none with rotational symmetry so that a rotation is always visible.
_FIXED_SHAPES = {
    "triangle": ((-1.0, -0.6), (1.0, -0.2), (-0.4, 0.9)),
    "l_shape": ((0.0, 0.0), (0.6, 0.0), (0.6, 1.4), (1.4, 1.4), (1.4, 2.0), (0.0, 2.0)),
    "notched_rectangle": (
        (0.0, 0.0), (0.5, 0.0), (0.5, 0.45), (0.9, 0.45), (0.9, 0.0), (2.0, 0.0), (2.0, 1.2), (0.0, 1.2),
    ),
    "flag": ((0.0, 0.0), (1.6, 0.3), (1.1, 1.0), (1.8, 1.6), (0.0, 1.4)),
}


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render one video; :func:`render_video` is a pure function of it.

    Positions are in pixels with y pointing down, angles in degrees (positive turns clockwise
    on screen), rates per second. The object is ``vertices`` (unit polygon, centroid at the
    origin, farthest vertex at distance 1) scaled to a radius of
    ``size * scale_ratio ** frac(scale_phase + t / scale_period)`` pixels.
    """

    label: int
    seed: int  # drives the background texture and the per-frame noise
    height: int
    width: int
    fps: int
    n_frames: int
    shape: str
    vertices: tuple[tuple[float, float], ...]
    colour: tuple[int, int, int]
    shade: float  # brightness ramp across the object's own x axis, so its texture turns with it
    background: str
    bg_colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    bg_scale: float  # noise cell / stripe period / checker cell, pixels
    bg_angle: float  # stripe / checker orientation, degrees
    noise_std: float
    x0: float
    y0: float
    vx: float
    vy: float
    angle0: float
    angular_velocity: float
    size: float
    scale_ratio: float
    scale_period: float
    scale_phase: float
    alpha0: float
    alpha1: float

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]

    def state(self) -> dict[str, np.ndarray]:
        """Per-frame ``x``, ``y``, ``angle``, ``radius`` and ``alpha`` (arrays of length ``n_frames``)."""
        t = np.arange(self.n_frames) / self.fps
        ramp = np.arange(self.n_frames) / max(self.n_frames - 1, 1)
        cycle = np.mod(self.scale_phase + t / self.scale_period, 1.0)
        return {
            "x": np.mod(self.x0 + self.vx * t, self.width),
            "y": np.mod(self.y0 + self.vy * t, self.height),
            "angle": self.angle0 + self.angular_velocity * t,
            "radius": self.size * self.scale_ratio**cycle,
            "alpha": self.alpha0 + (self.alpha1 - self.alpha0) * ramp,
        }

    def reversed(self) -> VideoSpec:
        """The spec whose video is this one played backwards: the partner class of the pair."""
        end = (self.n_frames - 1) / self.fps
        return dataclasses.replace(
            self,
            label=self.label ^ 1,
            x0=float(np.mod(self.x0 + self.vx * end, self.width)),
            y0=float(np.mod(self.y0 + self.vy * end, self.height)),
            vx=-self.vx,
            vy=-self.vy,
            angle0=self.angle0 + self.angular_velocity * end,
            angular_velocity=-self.angular_velocity,
            size=self.size * self.scale_ratio,
            scale_ratio=1.0 / self.scale_ratio,
            scale_phase=float(np.mod(-(self.scale_phase + end / self.scale_period), 1.0)),
            alpha0=self.alpha1,
            alpha1=self.alpha0,
        )


def _normalise_polygon(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Centre a simple polygon on its area centroid and scale its farthest vertex to radius 1."""
    x, y = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    centroid = np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6 * area)
    points = points - centroid
    points = points / np.linalg.norm(points, axis=1).max()
    return tuple((float(px), float(py)) for px, py in points)


def _random_polygon(rng: np.random.Generator) -> np.ndarray:
    """A star-shaped polygon with jittered angles and radii: asymmetric almost surely."""
    n = int(rng.integers(5, 9))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n
    radii = rng.uniform(0.45, 1.0, n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _luma(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


def _object_colour(rng: np.random.Generator, backgrounds: tuple[np.ndarray, ...]) -> np.ndarray:
    """Any colour that differs from every background colour in brightness, not only in hue.

    The codec keeps brightness at full resolution and colour at half, so an object that
    stands out by brightness keeps sharp edges after encoding. About 40% of draws qualify.
    """
    while True:
        colour = rng.integers(0, 256, 3)
        if all(abs(_luma(colour) - _luma(b)) >= 45 for b in backgrounds):
            return colour


def _seed_sequence(seed: int, split: str, index: int) -> np.random.SeedSequence:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.SeedSequence([seed, zlib.crc32(split.encode()), index])


def sample_spec(seed: int, split: str, index: int, label: int) -> VideoSpec:
    """Draw video ``index`` of ``split``; the first class of each pair is drawn, the second reversed.

    The draws do not depend on ``label``: the same ``(seed, split, index)`` gives the same
    object, background and rates for every class, only the motion applied differs.
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label {label} outside [0, {len(CLASSES)})")
    rng = np.random.default_rng(_seed_sequence(seed, split, index))
    height, width = int(rng.choice(HEIGHTS)), int(rng.choice(WIDTHS))
    fps = int(rng.integers(FPS_RANGE[0], FPS_RANGE[1] + 1))
    n_frames = int(round(rng.uniform(*DURATION_RANGE) * fps))
    shortest = min(height, width)

    shape = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
    polygon = _random_polygon(rng) if shape == "random_polygon" else np.array(_FIXED_SHAPES[shape])
    if rng.random() < 0.5:  # mirror half of them: more variety, still no rotational symmetry
        polygon = polygon * np.array([-1.0, 1.0])
    vertices = _normalise_polygon(polygon)

    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg_a = rng.integers(30, 226, 3)
    # The texture varies mostly in brightness: yuv420p halves colour resolution, so sharp
    # colour-only stripes would be what the codec loses most.
    tint = rng.normal(0.0, 8.0, 3)
    bg_b = np.clip(bg_a + rng.choice([-1, 1]) * rng.uniform(30, 60) + tint, 0, 255).astype(int)
    colour = _object_colour(rng, (bg_a, bg_b))
    bg_scale = float(rng.uniform(8.0, 20.0))
    bg_angle = float(rng.uniform(0.0, 180.0))

    # Rates and extents of every kind of motion; only the pair's own kind is applied below.
    travel = rng.uniform(0.6, 0.95)  # fraction of the free room the object crosses over the video
    angle0 = float(rng.uniform(0.0, 360.0))
    # One turn of 150-270 degrees over the whole video: an 8-frame clip spread over the video
    # then turns 20-40 degrees between frames, never near the 90-180 degrees at which the
    # direction of a turn becomes ambiguous.
    total_turn = float(rng.uniform(150.0, 270.0))
    static_size = float(rng.uniform(0.22, 0.30) * shortest)
    grow_size = float(rng.uniform(0.13, 0.17) * shortest)
    grow_ratio = float(rng.uniform(2.0, 2.6))
    duration = (n_frames - 1) / fps
    angular_speed = total_turn / duration
    # One growth cycle spans the video with a small margin at both ends, so it never snaps back.
    grow_phase = 0.02
    grow_period = duration / (1.0 - 2 * grow_phase)
    alpha_low, alpha_high = float(rng.uniform(0.0, 0.1)), float(rng.uniform(0.9, 1.0))
    u_x, u_y = rng.uniform(0.0, 1.0, 2)
    render_seed = int(rng.integers(2**63))

    pair = label // 2
    size = grow_size if pair == 3 else static_size
    max_radius = size * (grow_ratio if pair == 3 else 1.0)
    # Coordinates keep the whole object in frame for the whole video.
    x0 = max_radius + 1 + u_x * (width - 2 * max_radius - 2)
    y0 = max_radius + 1 + u_y * (height - 2 * max_radius - 2)
    motion = dict(
        x0=x0, y0=y0, vx=0.0, vy=0.0, angle0=angle0, angular_velocity=0.0, size=size,
        scale_ratio=1.0, scale_period=1.0, scale_phase=0.0, alpha0=1.0, alpha1=1.0,
    )
    if pair == 0:  # move_left: from the right part of the frame to the left part
        room = width - 2 * max_radius - 2
        start = max_radius + 1 + room * (travel + (1 - travel) * u_x)
        motion.update(x0=start, vx=-travel * room / duration)
    elif pair == 1:  # move_up
        room = height - 2 * max_radius - 2
        start = max_radius + 1 + room * (travel + (1 - travel) * u_y)
        motion.update(y0=start, vy=-travel * room / duration)
    elif pair == 2:
        motion.update(angular_velocity=angular_speed)
    elif pair == 3:
        motion.update(scale_ratio=grow_ratio, scale_period=grow_period, scale_phase=grow_phase)
    else:
        motion.update(alpha0=alpha_low, alpha1=alpha_high)

    spec = VideoSpec(
        label=label - label % 2,
        seed=render_seed,
        height=height,
        width=width,
        fps=fps,
        n_frames=n_frames,
        shape=shape,
        vertices=vertices,
        colour=tuple(int(c) for c in colour),
        shade=float(rng.uniform(0.15, 0.3)),
        background=background,
        bg_colours=(tuple(int(c) for c in bg_a), tuple(int(c) for c in bg_b)),
        bg_scale=bg_scale,
        bg_angle=bg_angle,
        noise_std=float(rng.uniform(1.0, 3.0)),
        **{k: float(v) for k, v in motion.items()},
    )
    return spec.reversed() if label % 2 else spec


def _background(spec: VideoSpec, rng: np.random.Generator) -> np.ndarray:
    """A static H x W x 3 float texture blending the spec's two background colours."""
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float64) + 0.5
    theta = np.deg2rad(spec.bg_angle)
    u = xs * np.cos(theta) + ys * np.sin(theta)
    v = -xs * np.sin(theta) + ys * np.cos(theta)
    if spec.background == "noise":
        # Random values on a coarse grid, spread by Gaussian bumps: smooth blobs of ~bg_scale px.
        def bumps(n: int) -> np.ndarray:
            centres = (np.arange(int(np.ceil(n / spec.bg_scale)) + 2) - 0.5) * spec.bg_scale
            w = np.exp(-(((np.arange(n)[:, None] + 0.5 - centres) / (0.6 * spec.bg_scale)) ** 2))
            return w / w.sum(axis=1, keepdims=True)

        wy, wx = bumps(spec.height), bumps(spec.width)
        field = wy @ rng.uniform(0.0, 1.0, (wy.shape[1], wx.shape[1])) @ wx.T
        field = (field - field.min()) / max(field.max() - field.min(), 1e-6)
    elif spec.background == "stripes":
        field = 0.5 + 0.5 * np.sin(2 * np.pi * u / spec.bg_scale)
    elif spec.background == "checker":
        cells = np.sin(np.pi * u / spec.bg_scale) * np.sin(np.pi * v / spec.bg_scale)
        field = np.clip(0.5 + 2.0 * cells, 0.0, 1.0)
    else:
        raise ValueError(f"unknown background {spec.background!r}; expected one of {BACKGROUNDS}")
    a, b = (np.asarray(c, dtype=np.float64) for c in spec.bg_colours)
    return a + field[..., None] * (b - a)


@dataclass
class _ObjectLayer:
    """The object drawn in a square window that follows it: frame ``t`` covers rows ``rows[t]``
    and columns ``cols[t]`` (wrapped around the frame), everything outside is background."""

    rows: np.ndarray  # T x K
    cols: np.ndarray  # T x K
    coverage: np.ndarray  # T x K x K, anti-aliased, in [0, 1]
    ramp: np.ndarray  # T x K x K, position along the object's own x axis, in [-1, 1]

    def scatter(self, values: np.ndarray, out: np.ndarray) -> None:
        """Write window ``values`` (T x K x K [x C]) into full frames ``out`` (T x H x W [x C])."""
        t = np.arange(len(self.rows))[:, None, None]
        out[t, self.rows[:, :, None], self.cols[:, None, :]] = values

    def gather(self, image: np.ndarray) -> np.ndarray:
        """The windows of a static H x W [x C] image: T x K x K [x C]."""
        return image[self.rows[:, :, None], self.cols[:, None, :]]


def _object_layer(spec: VideoSpec) -> _ObjectLayer:
    """Rasterise the polygon in every frame, only inside a window of the largest radius.

    Coverage is ``clip(0.5 - signed distance to the polygon, 0, 1)``: a one-pixel ramp at the
    edge, cheap to compute for all pixels at once and smooth under sub-pixel motion. Pixel
    offsets are taken on the torus, so an object crossing an edge shows on the other side.
    """
    state = spec.state()
    half = int(np.ceil(state["radius"].max())) + 1
    if 2 * half + 1 > min(spec.height, spec.width):
        largest = state["radius"].max()
        raise ValueError(f"object radius {largest:.1f} px too large for a {spec.height}x{spec.width} frame")
    steps = np.arange(-half, half + 1)
    rows = np.floor(state["y"]).astype(np.int64)[:, None] + steps
    cols = np.floor(state["x"]).astype(np.int64)[:, None] + steps
    dy = (rows + 0.5 - state["y"][:, None]).astype(np.float32)[:, :, None, None]  # T x K x 1 x 1
    dx = (cols + 0.5 - state["x"][:, None]).astype(np.float32)[:, None, :, None]  # T x 1 x K x 1

    theta = np.deg2rad(state["angle"])[:, None]
    cos, sin = np.cos(theta), np.sin(theta)
    radius = state["radius"][:, None]
    local = np.asarray(spec.vertices)
    # Polygon vertices in pixels around the centre: T x 1 x 1 x E.
    ax = (radius * (cos * local[:, 0] - sin * local[:, 1])).astype(np.float32)[:, None, None, :]
    ay = (radius * (sin * local[:, 0] + cos * local[:, 1])).astype(np.float32)[:, None, None, :]
    bx, by = np.roll(ax, -1, axis=-1), np.roll(ay, -1, axis=-1)
    ex, ey = bx - ax, by - ay
    t = np.clip(((dx - ax) * ex + (dy - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    distance = np.sqrt(((dx - ax - t * ex) ** 2 + (dy - ay - t * ey) ** 2).min(axis=-1))
    crosses = ((ay > dy) != (by > dy)) & (dx < ax + (dy - ay) * ex / np.where(ey == 0, 1.0, ey))
    inside = np.logical_xor.reduce(crosses, axis=-1)
    coverage = np.clip(0.5 - np.where(inside, -distance, distance), 0.0, 1.0)

    ramp = (dx[..., 0] * cos[:, :, None] + dy[..., 0] * sin[:, :, None]) / radius[:, :, None]
    return _ObjectLayer(
        rows=np.mod(rows, spec.height),
        cols=np.mod(cols, spec.width),
        coverage=coverage,
        ramp=np.clip(ramp, -1.0, 1.0).astype(np.float32),
    )


def object_coverage(spec: VideoSpec) -> np.ndarray:
    """The object's anti-aliased coverage, float32 T x H x W in [0, 1] (before opacity)."""
    layer = _object_layer(spec)
    out = np.zeros((spec.n_frames, spec.height, spec.width), dtype=np.float32)
    layer.scatter(layer.coverage, out)
    return out


def render_video(spec: VideoSpec) -> np.ndarray:
    """The frames to encode: uint8 T x H x W x 3 RGB."""
    rng = np.random.default_rng(spec.seed)
    background = _background(spec, rng).astype(np.float32)
    layer = _object_layer(spec)
    weight = layer.coverage * spec.state()["alpha"].astype(np.float32)[:, None, None]
    fill = np.asarray(spec.colour, dtype=np.float32) * (1.0 + spec.shade * layer.ramp[..., None])
    under = layer.gather(background)
    image = np.broadcast_to(background, (spec.n_frames, *background.shape)).copy()
    layer.scatter(under + weight[..., None] * (fill - under), image)
    # Sensor-like noise on brightness, fresh every frame (one draw per pixel, shared by RGB).
    noise = rng.standard_normal(image.shape[:-1], dtype=np.float32) * np.float32(spec.noise_std)
    image += noise[..., None] + np.float32(0.5)  # + 0.5: the cast below then rounds
    return np.clip(image, 0, 255).astype(np.uint8)
