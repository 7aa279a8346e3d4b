"""Random street scenes for the KITTI LiDAR simulator: road layout, vehicles, people and clutter.

A scene is a straight street along the LiDAR x axis (the ego car drives in one of its lanes), with
optional parking strips, raised sidewalks, building blocks with gaps, an optional cross street, and
clutter (street lights, signs, trees, hedges, fences, bins). Cars, vans, pedestrians and cyclists are
placed without overlap where they belong (lanes and parking strips, sidewalks and crossings, the road
edge), mostly ahead of the car in the camera field of view; headings follow the road with some
noise, plus cross traffic and perpendicular parking.

Sizes follow the KITTI training-set statistics (mean ± std of h, w, l in metres): Car 1.53±0.14,
1.63±0.10, 3.88±0.43; Van 2.21±0.32, 1.90±0.13, 5.08±0.48; Pedestrian 1.76±0.11, 0.66±0.14,
0.84±0.23; Cyclist 1.74±0.09, 0.60±0.12, 1.76±0.18 (clipped to plausible ranges).

Every labelled object is one :class:`~hrnas.demos.lidar.raycast.Shape` made of parts (body,
cabin, wheels; legs, torso, head; bicycle and rider) that lie inside its label box, so the label box
is the tight-ish box of what the scanner can hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hrnas.demos.lidar.raycast import Ground, Shape

__all__ = ["LABEL_SIZES", "Materials", "Scene", "SceneConfig", "SceneObject", "sample_scene", "scene_from_boxes"]

LABEL_SIZES: dict[
    str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[tuple[float, float], ...]]
] = {
    # name: ((mean h, w, l), (std h, w, l), ((min, max) h, w, l))
    "Car": ((1.53, 1.63, 3.88), (0.14, 0.10, 0.43), ((1.30, 1.95), (1.40, 1.95), (3.00, 5.00))),
    "Van": ((2.21, 1.90, 5.08), (0.32, 0.13, 0.48), ((1.80, 2.90), (1.65, 2.20), (4.20, 6.20))),
    "Pedestrian": ((1.76, 0.66, 0.84), (0.11, 0.14, 0.23), ((1.45, 2.00), (0.45, 0.95), (0.45, 1.30))),
    "Cyclist": ((1.74, 0.60, 1.76), (0.09, 0.12, 0.18), ((1.50, 1.95), (0.45, 0.90), (1.45, 2.10))),
}


class Materials:
    """A growing table of materials: ``(M, 5)`` rows ``[reflectance, r, g, b, dropout]``.

    ``reflectance`` in [0, 1] is the LiDAR return strength at normal incidence; ``r, g, b`` in [0, 1]
    the camera colour; ``dropout`` the probability that a return from it is lost (glass, foliage).
    """

    def __init__(self) -> None:
        self._rows: list[tuple[float, float, float, float, float]] = []

    def add(self, reflectance: float, rgb: tuple[float, float, float] | np.ndarray, dropout: float = 0.0) -> int:
        """Append a material and return its id."""
        r, g, b = (float(v) for v in rgb)
        self._rows.append((float(reflectance), r, g, b, float(dropout)))
        return len(self._rows) - 1

    def table(self) -> np.ndarray:
        """``(M, 5)`` float64."""
        return np.asarray(self._rows, dtype=np.float64).reshape(-1, 5)


@dataclass(frozen=True)
class SceneConfig:
    """How many things a scene holds (inclusive ``(min, max)`` ranges, drawn uniformly per frame).

    Attributes:
        vehicles: cars and vans tried per frame (some are rejected when no free spot is found).
        van_fraction: probability that a vehicle is a van.
        pedestrians: pedestrians tried per frame.
        cyclists: cyclists tried per frame.
        ahead_fraction: probability that an object is placed ahead (x in [2, 72] m) rather than anywhere
            along the street (x in [-30, 90] m).
        max_slope: largest ground slope along x and y (rise per metre).
    """

    vehicles: tuple[int, int] = (9, 16)
    van_fraction: float = 0.12
    pedestrians: tuple[int, int] = (2, 7)
    cyclists: tuple[int, int] = (1, 3)
    ahead_fraction: float = 0.85
    max_slope: tuple[float, float] = (0.012, 0.006)

    def __post_init__(self) -> None:
        for key in ("vehicles", "pedestrians", "cyclists"):
            lo, hi = getattr(self, key)
            if not 0 <= lo <= hi:
                raise ValueError(f"SceneConfig.{key}: need 0 <= min <= max, got {(lo, hi)}")
        if not 0.0 <= self.van_fraction <= 1.0 or not 0.0 <= self.ahead_fraction <= 1.0:
            raise ValueError("SceneConfig: van_fraction and ahead_fraction must be in [0, 1]")


@dataclass(eq=False)
class SceneObject:
    """A labelled object: KITTI type, LiDAR box ``[x, y, z_centre, l, w, h, heading]`` and its shape."""

    name: str
    box: np.ndarray
    shape: int


@dataclass(eq=False)
class Scene:
    """Everything the scanner and the camera can see in one frame (LiDAR frame).

    Attributes:
        ground: the ground plane.
        shapes: every rigid shape (objects and clutter).
        objects: the labelled objects (cars, vans, pedestrians, cyclists), each pointing at its shape.
        materials: ``(M, 5)`` material table (see :class:`Materials`).
        road: ``(y_right, y_left)`` edges of the asphalt (parking strips included).
        lane_lines: y of the dashed lane separators.
        cross: ``(x_centre, width)`` of the cross street, or ``None``.
        ground_materials: ids of ``(asphalt, marking, terrain)``.
    """

    ground: Ground
    shapes: list[Shape]
    objects: list[SceneObject]
    materials: np.ndarray
    road: tuple[float, float]
    lane_lines: tuple[float, ...]
    cross: tuple[float, float] | None
    ground_materials: tuple[int, int, int]

    def ground_material(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(N,)`` material id of the ground at ``(x, y)``: asphalt on the road and the cross street,
        white dashed lane lines and solid edge lines, terrain elsewhere."""
        asphalt, marking, terrain = self.ground_materials
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        on_road = (y >= self.road[0]) & (y <= self.road[1])
        if self.cross is not None:
            on_cross = np.abs(x - self.cross[0]) <= self.cross[1] / 2.0
            on_road |= on_cross
        else:
            on_cross = np.zeros_like(on_road)
        out = np.where(on_road, asphalt, terrain)
        line = np.zeros_like(on_road)
        dashed = np.mod(x, 9.0) < 3.0
        for y_line in self.lane_lines:
            line |= (np.abs(y - y_line) < 0.07) & dashed
        for y_edge in (self.road[0] + 0.25, self.road[1] - 0.25):
            line |= np.abs(y - y_edge) < 0.08
        line &= ~on_cross
        return np.where(on_road & line, marking, out)


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> list[float]:
    return [x0, x1, y0, y1, z0, z1]


def _rect_corners(cx: float, cy: float, half_l: float, half_w: float, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[half_l, half_w], [half_l, -half_w], [-half_l, -half_w], [-half_l, half_w]])
    return local @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


def _rects_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quads ``(4, 2)``."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        axes = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pa = a @ axes.T
        pb = b @ axes.T
        if np.any((pa.max(axis=0) < pb.min(axis=0)) | (pb.max(axis=0) < pa.min(axis=0))):
            return False
    return True


class _Footprints:
    """Occupied ground rectangles; a new one is accepted only if it overlaps none (with a margin)."""

    def __init__(self) -> None:
        self._quads: list[np.ndarray] = []
        self._centres: list[tuple[float, float, float]] = []

    def free(self, cx: float, cy: float, length: float, width: float, yaw: float, margin: float) -> bool:
        quad = _rect_corners(cx, cy, length / 2 + margin, width / 2 + margin, yaw)
        reach = np.hypot(length, width) / 2 + margin
        for (qx, qy, qr), other in zip(self._centres, self._quads, strict=True):
            if np.hypot(cx - qx, cy - qy) > reach + qr:
                continue
            if _rects_overlap(quad, other):
                return False
        return True

    def add(self, cx: float, cy: float, length: float, width: float, yaw: float) -> None:
        self._quads.append(_rect_corners(cx, cy, length / 2, width / 2, yaw))
        self._centres.append((cx, cy, float(np.hypot(length, width) / 2)))


def _sample_size(rng: np.random.Generator, name: str) -> tuple[float, float, float]:
    mean, std, limits = LABEL_SIZES[name]
    values = [float(np.clip(rng.normal(m, s), lo, hi)) for m, s, (lo, hi) in zip(mean, std, limits, strict=True)]
    return values[0], values[1], values[2]


# --------------------------------------------------------------------------------------------------
# Object models (parts inside [-l/2, l/2] x [-w/2, w/2] x [0, h] of the object frame)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Palette:
    """Material ids shared by all objects of a scene."""

    glass: int
    tire: int
    skin: int
    metal: int
    paints: list[int] = field(default_factory=list)
    clothes: list[int] = field(default_factory=list)


def _car_parts(h: float, w: float, l: float, paint: int, pal: _Palette) -> tuple[list, list]:
    wheel_r = min(0.34, 0.22 * h)
    wheel_w = 0.22
    boxes, mats = [], []
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx = sx * (0.5 * l - 0.19 * l)
            cy = sy * (0.5 * w - wheel_w / 2)
            boxes.append(_box(cx - wheel_r, cx + wheel_r, cy - wheel_w / 2, cy + wheel_w / 2, 0.0, 2 * wheel_r))
            mats.append(pal.tire)
    body_top = 0.58 * h
    boxes.append(_box(-l / 2, l / 2, -w / 2, w / 2, 0.55 * wheel_r, body_top))
    mats.append(paint)
    roof = 0.94 * h
    boxes.append(_box(-0.33 * l, 0.2 * l, -0.45 * w, 0.45 * w, body_top, roof))
    mats.append(pal.glass)
    boxes.append(_box(-0.3 * l, 0.14 * l, -0.43 * w, 0.43 * w, roof, h))
    mats.append(paint)
    return boxes, mats


def _van_parts(h: float, w: float, l: float, paint: int, pal: _Palette) -> tuple[list, list]:
    wheel_r = 0.36
    boxes, mats = [], []
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx = sx * (0.5 * l - 0.17 * l)
            cy = sy * (0.5 * w - 0.12)
            boxes.append(_box(cx - wheel_r, cx + wheel_r, cy - 0.12, cy + 0.12, 0.0, 2 * wheel_r))
            mats.append(pal.tire)
    front = 0.5 * l - 0.16 * l
    boxes.append(_box(-l / 2, front, -w / 2, w / 2, 0.5 * wheel_r, 0.72 * h))
    mats.append(paint)
    boxes.append(_box(-l / 2, front - 0.35, -w / 2, w / 2, 0.72 * h, h))
    mats.append(paint)
    boxes.append(_box(front - 0.35, front, -0.47 * w, 0.47 * w, 0.72 * h, 0.96 * h))
    mats.append(pal.glass)
    boxes.append(_box(front, l / 2, -0.48 * w, 0.48 * w, 0.5 * wheel_r, 0.5 * h))
    mats.append(paint)
    return boxes, mats


def _pedestrian_parts(
    rng: np.random.Generator, h: float, w: float, l: float, top: int, bottom: int, pal: _Palette
) -> tuple[list, list, list, list]:
    head_r = 0.11
    leg = 0.15
    stride = rng.uniform(0.0, max(l / 2 - leg / 2 - 0.02, 0.0))
    hip = 0.5 * h
    boxes, mats = [], []
    for sign, sy in ((1, 0.09), (-1, -0.09)):
        cx = sign * stride
        boxes.append(_box(cx - leg / 2, cx + leg / 2, sy - leg / 2, sy + leg / 2, 0.0, hip))
        mats.append(bottom)
    torso_d = min(0.3, l - 0.02)
    shoulder = min(0.42, w - 0.12)
    boxes.append(_box(-torso_d / 2, torso_d / 2, -shoulder / 2, shoulder / 2, hip, 0.82 * h))
    mats.append(top)
    swing = rng.uniform(0.0, max(l / 2 - 0.06, 0.0))
    for sign, side in ((1, 1), (-1, -1)):
        cy = side * (w / 2 - 0.05)
        cx = -sign * swing * 0.8
        boxes.append(_box(cx - 0.05, cx + 0.05, cy - 0.05, cy + 0.05, 0.47 * h, 0.8 * h))
        mats.append(top)
    spheres = [[0.0, 0.0, h - head_r, head_r]]
    return boxes, mats, spheres, [pal.skin]


def _cyclist_parts(
    h: float, w: float, l: float, top: int, bottom: int, frame: int, pal: _Palette
) -> tuple[list, list, list, list]:
    wheel_r = min(0.34, l / 4)
    boxes, mats = [], []
    for cx in (-(l / 2 - wheel_r), l / 2 - wheel_r):
        boxes.append(_box(cx - wheel_r, cx + wheel_r, -0.03, 0.03, 0.0, 2 * wheel_r))
        mats.append(pal.tire)
    boxes.append(_box(-0.35 * l / 1.76, 0.35 * l / 1.76, -0.04, 0.04, 0.45, 0.78))
    mats.append(frame)
    bar = min(0.3, w / 2)
    boxes.append(_box(0.3 * l / 1.76, 0.38 * l / 1.76, -bar, bar, 0.95, 1.0))
    mats.append(frame)
    for sy in (-0.12, 0.12):
        boxes.append(_box(-0.12, 0.02, sy - 0.06, sy + 0.06, 0.3, 0.92))
        mats.append(bottom)
    boxes.append(_box(-0.2, 0.12, -0.19, 0.19, 0.92, h - 0.24))
    mats.append(top)
    spheres = [[0.05, 0.0, h - 0.12, 0.12]]
    return boxes, mats, spheres, [pal.skin]


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    lane_width: float
    lanes_y: list[float]  # lane centres
    lanes_heading: list[float]
    road: tuple[float, float]  # asphalt edges (parking included)
    parking: list[tuple[float, float, bool]]  # (y_centre, strip width, perpendicular)
    sidewalks: list[tuple[float, float]]  # (y_inner, y_outer) per side
    curb: float
    building_line: tuple[float, float]  # y of the right / left facades
    cross: tuple[float, float] | None


def _sample_layout(rng: np.random.Generator) -> _Layout:
    lane_w = rng.uniform(3.0, 3.6)
    n_lanes = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.5, 0.2, 0.15]))
    forward = max(1, (n_lanes + 1) // 2)
    ego = int(rng.integers(forward))
    right_edge = -(ego + 0.5) * lane_w + rng.uniform(-0.3, 0.3)
    lanes_y = [right_edge + (i + 0.5) * lane_w for i in range(n_lanes)]
    heading = [0.0 if i < forward else np.pi for i in range(n_lanes)]
    road = [right_edge, right_edge + n_lanes * lane_w]
    parking = []
    for side in (0, 1):
        if rng.random() < 0.6:
            perpendicular = rng.random() < 0.25
            width = 5.2 if perpendicular else 2.3
            if side == 0:
                parking.append((road[0] - width / 2, width, perpendicular))
                road[0] -= width
            else:
                parking.append((road[1] + width / 2, width, perpendicular))
                road[1] += width
    sidewalks = []
    facades = []
    for side, edge in ((0, road[0]), (1, road[1])):
        width = rng.uniform(1.8, 4.0)
        sign = -1.0 if side == 0 else 1.0
        sidewalks.append((edge, edge + sign * width))
        facades.append(edge + sign * (width + rng.uniform(0.0, 5.0)))
    cross = (float(rng.uniform(14, 55)), float(rng.uniform(8, 14))) if rng.random() < 0.35 else None
    return _Layout(
        lane_width=lane_w,
        lanes_y=lanes_y,
        lanes_heading=heading,
        road=(road[0], road[1]),
        parking=parking,
        sidewalks=sidewalks,
        curb=float(rng.uniform(0.10, 0.16)),
        building_line=(facades[0], facades[1]),
        cross=cross,
    )


def _in_cross(layout: _Layout, x: float, margin: float = 0.0) -> bool:
    return layout.cross is not None and abs(x - layout.cross[0]) <= layout.cross[1] / 2 + margin


class _Builder:
    """Accumulates shapes, objects and footprints of one scene."""

    def __init__(
        self, rng: np.random.Generator, ground: Ground, layout: _Layout, mats: Materials, palette: _Palette
    ) -> None:
        self.rng = rng
        self.ground = ground
        self.layout = layout
        self.mats = mats
        self.palette = palette
        self.shapes: list[Shape] = []
        self.objects: list[SceneObject] = []
        self.taken = _Footprints()
        self.taken.add(1.0, 0.0, 9.0, 2.4, 0.0)  # the ego car and the space just ahead of it
        self.sidewalk_slabs: list[tuple[float, float, float, float, float]] = []  # x0, x1, y0, y1, top

    def surface(self, x: float, y: float) -> float:
        """Height of what an object standing at (x, y) stands on: a sidewalk slab or the ground."""
        for x0, x1, y0, y1, top in self.sidewalk_slabs:
            if x0 <= x <= x1 and y0 <= y <= y1:
                return top
        return float(self.ground.z(x, y))

    def on_one_surface(self, cx: float, cy: float, length: float, width: float, yaw: float) -> bool:
        """All four footprint corners stand on the same kind of surface (no straddling a curb)."""
        corners = _rect_corners(cx, cy, length / 2, width / 2, yaw)
        kinds = {self._slab_at(x, y) for x, y in corners}
        return len(kinds) == 1

    def _slab_at(self, x: float, y: float) -> int:
        for i, (x0, x1, y0, y1, _) in enumerate(self.sidewalk_slabs):
            if x0 <= x <= x1 and y0 <= y <= y1:
                return i
        return -1

    def add_clutter(self, shape: Shape, length: float, width: float) -> None:
        """Add a static shape and reserve its ``length x width`` footprint."""
        self.shapes.append(shape)
        self.taken.add(shape.x, shape.y, length, width, shape.yaw)

    def try_object(
        self, name: str, cx: float, cy: float, yaw: float, size: tuple[float, float, float], margin: float
    ) -> bool:
        h, w, l = size
        if not self.taken.free(cx, cy, l, w, yaw, margin) or not self.on_one_surface(cx, cy, l, w, yaw):
            return False
        base = self.surface(cx, cy)
        shape = _object_shape(self.rng, name, (cx, cy, base, yaw), size, self.palette)
        self.shapes.append(shape)
        box = np.array([cx, cy, base + h / 2, l, w, h, yaw], dtype=np.float64)
        self.objects.append(SceneObject(name=name, box=box, shape=len(self.shapes) - 1))
        self.taken.add(cx, cy, l, w, yaw)
        return True


def _object_shape(
    rng: np.random.Generator,
    name: str,
    pose: tuple[float, float, float, float],
    size: tuple[float, float, float],
    pal: _Palette,
) -> Shape:
    """The shape of a labelled object of type ``name`` with bottom-centre pose ``(x, y, z, yaw)`` and
    ``size = (h, w, l)``; colours are drawn from the palette."""
    h, w, l = size

    def pick(ids: list[int]) -> int:
        return ids[int(rng.integers(len(ids)))]

    spheres: list = []
    sphere_mats: list = []
    if name == "Car":
        boxes, mats = _car_parts(h, w, l, pick(pal.paints), pal)
    elif name == "Van":
        boxes, mats = _van_parts(h, w, l, pick(pal.paints), pal)
    elif name == "Pedestrian":
        boxes, mats, spheres, sphere_mats = _pedestrian_parts(rng, h, w, l, pick(pal.clothes), pick(pal.clothes), pal)
    elif name == "Cyclist":
        boxes, mats, spheres, sphere_mats = _cyclist_parts(
            h, w, l, pick(pal.clothes), pick(pal.clothes), pick(pal.paints), pal
        )
    else:
        raise ValueError(f"object type {name!r} is not simulated (known: {', '.join(LABEL_SIZES)})")
    return Shape(*pose, boxes, mats, spheres, sphere_mats)


def _make_palette(rng: np.random.Generator, m: Materials) -> _Palette:
    glass = m.add(0.06, (0.15, 0.18, 0.22), dropout=0.35)
    tire = m.add(0.04, (0.06, 0.06, 0.06), dropout=0.05)
    skin = m.add(0.35, (0.85, 0.68, 0.55))
    metal = m.add(0.55, (0.6, 0.6, 0.62))
    paints = []
    for _ in range(8):
        rgb = rng.uniform(0.05, 0.95, 3) if rng.random() < 0.6 else np.full(3, rng.uniform(0.05, 0.95))
        paints.append(m.add(rng.uniform(0.08, 0.6), rgb))
    clothes = [m.add(rng.uniform(0.08, 0.5), rng.uniform(0.05, 0.9, 3)) for _ in range(6)]
    return _Palette(glass=glass, tire=tire, skin=skin, metal=metal, paints=paints, clothes=clothes)


def _along_x(rng: np.random.Generator, cfg: SceneConfig) -> float:
    if rng.random() < cfg.ahead_fraction:
        return float(rng.uniform(2.0, 72.0))
    return float(rng.uniform(-30.0, 90.0))


@dataclass
class _StaticMaterials:
    concrete: int
    facades: list[int]
    facade_glass: int
    bark: int
    foliage: int
    sign_face: int
    fence: int
    bin: int

    @classmethod
    def make(cls, rng: np.random.Generator, m: Materials) -> _StaticMaterials:
        return cls(
            concrete=m.add(0.3, (0.62, 0.6, 0.57)),
            facades=[m.add(rng.uniform(0.2, 0.55), rng.uniform(0.35, 0.85, 3)) for _ in range(4)],
            facade_glass=m.add(0.08, (0.2, 0.25, 0.3), dropout=0.3),
            bark=m.add(0.3, (0.35, 0.25, 0.15)),
            foliage=m.add(0.42, (0.2, 0.45, 0.15), dropout=0.2),
            sign_face=m.add(0.95, (0.9, 0.9, 0.95)),
            fence=m.add(0.35, (0.45, 0.4, 0.35), dropout=0.25),
            bin=m.add(0.25, (0.2, 0.35, 0.25)),
        )


_X_LO, _X_HI = -40.0, 100.0
"""Extent of the static street along x (m)."""


def _overlaps_cross(lay: _Layout, x0: float, x1: float, margin: float) -> bool:
    return (
        lay.cross is not None
        and x1 > lay.cross[0] - lay.cross[1] / 2 - margin
        and x0 < lay.cross[0] + lay.cross[1] / 2 + margin
    )


def _add_sidewalk(b: _Builder, mat: _StaticMaterials, y_in: float, y_out: float) -> None:
    """Raised slabs in 8 m pieces (each levelled on the ground below its centre), cut by the cross street."""
    lay = b.layout
    y0, y1 = min(y_in, y_out), max(y_in, y_out)
    depth = 0.4  # buried below the ground so the slab never floats on the slope
    for x0 in np.arange(_X_LO, _X_HI, 8.0):
        pieces = [(float(x0), float(x0) + 8.0)]
        if lay.cross is not None:
            c0, c1 = lay.cross[0] - lay.cross[1] / 2, lay.cross[0] + lay.cross[1] / 2
            pieces = [(a, min(e, c0)) for a, e in pieces if a < c0] + [(max(a, c1), e) for a, e in pieces if e > c1]
        for a, e in pieces:
            if e - a < 0.2:
                continue
            cx, cy = (a + e) / 2, (y0 + y1) / 2
            top = float(b.ground.z(cx, cy)) + lay.curb
            part = _box(-(e - a) / 2, (e - a) / 2, -(y1 - y0) / 2, (y1 - y0) / 2, 0.0, lay.curb + depth)
            b.shapes.append(Shape(cx, cy, top - lay.curb - depth, 0.0, [part], [mat.concrete]))
            b.sidewalk_slabs.append((a, e, y0, y1, top))


def _add_buildings(b: _Builder, mat: _StaticMaterials, sign: float, facade: float) -> None:
    """Blocks of random length, depth and height behind the facade line, with gaps and empty lots."""
    rng = b.rng
    x = _X_LO + rng.uniform(0, 10)
    while x < _X_HI:
        length = rng.uniform(6.0, 28.0)
        gap = rng.uniform(0.0, 10.0) if rng.random() < 0.5 else 0.0
        x0, x1 = x, x + length
        x = x1 + gap
        if _overlaps_cross(b.layout, x0, x1, 1.0) or rng.random() < 0.12:
            continue
        depth = rng.uniform(6.0, 14.0)
        height = rng.uniform(3.5, 18.0)
        cy = facade + sign * (rng.uniform(0.0, 1.5) + depth / 2)
        cx = (x0 + x1) / 2
        base = float(min(b.ground.z(x0, cy), b.ground.z(x1, cy))) - 0.5
        boxes = [_box(-length / 2, length / 2, -depth / 2, depth / 2, 0.0, height + 0.5)]
        mats = [mat.facades[int(rng.integers(len(mat.facades)))]]
        if rng.random() < 0.5:
            # A band of shop windows standing slightly proud of the facade.
            face = -sign * depth / 2
            y_lo, y_hi = sorted((face, face - sign * 0.05))
            boxes.append(_box(-length / 2 + 0.5, length / 2 - 0.5, y_lo, y_hi, 1.3, 3.0))
            mats.append(mat.facade_glass)
        b.add_clutter(Shape(cx, cy, base, 0.0, boxes, mats), length, depth)


def _add_street_furniture(b: _Builder, mat: _StaticMaterials, sign: float, curb_y: float) -> None:
    """Street lights every 18-35 m with an arm over the road, and up to two signs, near the curb."""
    rng, metal = b.rng, b.palette.metal
    x = _X_LO + rng.uniform(0, 20)
    while x < _X_HI:
        if not _in_cross(b.layout, x, 1.0):
            height = rng.uniform(5.0, 8.0)
            arm = rng.uniform(1.0, 2.0)
            arm_y = (-arm, 0.0) if sign > 0 else (0.0, arm)  # towards the road
            boxes = [_box(-0.1, 0.1, -0.1, 0.1, 0.0, height), _box(-0.06, 0.06, *arm_y, height - 0.15, height)]
            b.add_clutter(Shape(x, curb_y, b.surface(x, curb_y), 0.0, boxes, [metal, metal]), 0.3, 0.3)
        x += rng.uniform(18.0, 35.0)
    for _ in range(int(rng.integers(0, 3))):
        x = float(rng.uniform(0, 70))
        size = rng.uniform(0.5, 0.8)
        yaw = 0.0 if rng.random() < 0.7 else np.pi / 2
        if _in_cross(b.layout, x, 1.0) or not b.taken.free(x, curb_y, 0.2, 0.2, 0.0, 0.2):
            continue
        boxes = [_box(-0.04, 0.04, -0.04, 0.04, 0.0, 2.4), _box(-0.03, 0.03, -size / 2, size / 2, 2.0, 2.0 + size)]
        b.add_clutter(Shape(x, curb_y, b.surface(x, curb_y), yaw, boxes, [metal, mat.sign_face]), 0.2, 0.2)


def _add_trees(b: _Builder, mat: _StaticMaterials, tree_y: float) -> None:
    """A row of trees every 6-14 m: a trunk and one or two spherical crowns, all foliage above 3 m."""
    rng = b.rng
    x = _X_LO + rng.uniform(0, 10)
    while x < _X_HI:
        if not _in_cross(b.layout, x, 2.0) and b.taken.free(x, tree_y, 0.4, 0.4, 0.0, 0.3):
            trunk = rng.uniform(2.6, 4.0)
            r = rng.uniform(1.2, 2.4)
            cz = max(trunk + 0.6 * r, 3.0 + r)
            spheres = [[0.0, 0.0, cz, r]]
            if rng.random() < 0.5:
                spheres.append([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), cz + 0.7 * r, 0.75 * r])
            trunk_box = [_box(-0.15, 0.15, -0.15, 0.15, 0.0, cz)]
            shape = Shape(
                x, tree_y, b.surface(x, tree_y), 0.0, trunk_box, [mat.bark], spheres, [mat.foliage] * len(spheres)
            )
            b.add_clutter(shape, 0.4, 0.4)
        x += rng.uniform(6.0, 14.0)


def _add_yard_edge(b: _Builder, mat: _StaticMaterials, y_c: float) -> None:
    """Hedges or fences in pieces of 3-15 m along the front yards."""
    rng = b.rng
    fence = rng.random() < 0.4
    x = _X_LO + rng.uniform(0, 5)
    while x < _X_HI:
        length = rng.uniform(3.0, 15.0)
        if not _overlaps_cross(b.layout, x, x + length, 1.0):
            cx = x + length / 2
            z0 = float(min(b.ground.z(x, y_c), b.ground.z(x + length, y_c))) - 0.2
            width = 0.1 if fence else rng.uniform(0.5, 1.0)
            height = rng.uniform(1.2, 2.0) if fence else rng.uniform(0.9, 1.6)
            thickness = 0.06 if fence else width
            part = _box(-length / 2, length / 2, -thickness / 2, thickness / 2, 0.0, height + 0.2)
            if b.taken.free(cx, y_c, length, width, 0.0, 0.05):
                b.add_clutter(Shape(cx, y_c, z0, 0.0, [part], [mat.fence if fence else mat.foliage]), length, width)
        x += length + rng.uniform(1.0, 8.0)


def _add_bins(b: _Builder, mat: _StaticMaterials, y_in: float, y_out: float) -> None:
    """Up to two bins on the sidewalk (pedestrian-sized distractors)."""
    rng = b.rng
    for _ in range(int(rng.integers(0, 3))):
        x = float(rng.uniform(0, 60))
        y = float(rng.uniform(min(y_in, y_out), max(y_in, y_out)))
        height = rng.uniform(0.9, 1.2)
        if b.taken.free(x, y, 0.6, 0.6, 0.0, 0.2) and b.on_one_surface(x, y, 0.6, 0.6, 0.0):
            part = _box(-0.3, 0.3, -0.3, 0.3, 0.0, height)
            b.add_clutter(Shape(x, y, b.surface(x, y), 0.0, [part], [mat.bin]), 0.6, 0.6)


def _add_static(b: _Builder) -> None:
    """Sidewalks, buildings, street furniture and vegetation on both sides of the street."""
    rng, lay = b.rng, b.layout
    mat = _StaticMaterials.make(rng, b.mats)
    for side, (y_in, y_out) in enumerate(lay.sidewalks):
        sign = -1.0 if side == 0 else 1.0  # away from the road
        _add_sidewalk(b, mat, y_in, y_out)
        _add_buildings(b, mat, sign, lay.building_line[side])
        _add_street_furniture(b, mat, sign, y_in + sign * 0.5)
        if rng.random() < 0.55:
            _add_trees(b, mat, (y_in + y_out) / 2 if abs(y_out - y_in) > 2.5 else y_out - sign * 0.6)
        if abs(lay.building_line[side] - y_out) > 1.2 and rng.random() < 0.6:
            _add_yard_edge(b, mat, y_out + sign * 0.6)
        _add_bins(b, mat, y_in, y_out)


def _place_vehicles(b: _Builder, cfg: SceneConfig) -> None:
    rng, lay = b.rng, b.layout
    target = int(rng.integers(cfg.vehicles[0], cfg.vehicles[1] + 1))
    slots = ["lane", "parked"] + (["cross"] if lay.cross is not None else [])
    weights = np.array([0.45, 0.45, 0.15][: len(slots)])
    weights = weights / weights.sum()
    for _ in range(target):
        name = "Van" if rng.random() < cfg.van_fraction else "Car"
        size = _sample_size(rng, name)
        for _attempt in range(25):
            slot = slots[int(rng.choice(len(slots), p=weights))]
            if slot == "parked" and not lay.parking:
                slot = "lane"
            if slot == "lane":
                i = int(rng.integers(len(lay.lanes_y)))
                x = _along_x(rng, cfg)
                y = lay.lanes_y[i] + rng.normal(0.0, 0.25)
                yaw = lay.lanes_heading[i] + rng.normal(0.0, 0.04)
            elif slot == "parked":
                y_c, width, perpendicular = lay.parking[int(rng.integers(len(lay.parking)))]
                x = _along_x(rng, cfg)
                if _in_cross(lay, x, 3.0):
                    continue
                if perpendicular:
                    y = y_c + rng.normal(0.0, 0.2)
                    yaw = (np.pi / 2 if rng.random() < 0.5 else -np.pi / 2) + rng.normal(0.0, 0.08)
                else:
                    y = y_c + rng.normal(0.0, 0.12)
                    yaw = (0.0 if rng.random() < 0.8 else np.pi) + rng.normal(0.0, 0.05)
            else:
                assert lay.cross is not None
                x = lay.cross[0] + rng.uniform(-lay.cross[1] / 4, lay.cross[1] / 4)
                y = float(rng.uniform(-40.0, 40.0))
                if lay.road[0] - 1 < y < lay.road[1] + 1 and rng.random() < 0.7:
                    continue  # keep the junction itself mostly clear
                yaw = (np.pi / 2 if rng.random() < 0.5 else -np.pi / 2) + rng.normal(0.0, 0.05)
            if b.try_object(name, x, y, float(yaw), size, margin=0.35):
                break


def _place_people(b: _Builder, cfg: SceneConfig) -> None:
    rng, lay = b.rng, b.layout
    n_ped = int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))
    last: tuple[float, float] | None = None
    for _ in range(n_ped):
        size = _sample_size(rng, "Pedestrian")
        for _attempt in range(25):
            if last is not None and rng.random() < 0.35:
                x = last[0] + rng.uniform(-1.6, 1.6)
                y = last[1] + rng.uniform(-1.2, 1.2)
                yaw = rng.uniform(-np.pi, np.pi)
            elif rng.random() < 0.8:
                y_in, y_out = lay.sidewalks[int(rng.integers(2))]
                x = _along_x(rng, cfg)
                y = rng.uniform(min(y_in, y_out) + 0.4, max(y_in, y_out) - 0.4)
                yaw = (
                    (rng.choice([0.0, np.pi]) + rng.normal(0.0, 0.3))
                    if rng.random() < 0.7
                    else rng.uniform(-np.pi, np.pi)
                )
            else:
                x = lay.cross[0] + rng.uniform(-4, 4) if lay.cross is not None else _along_x(rng, cfg)
                y = rng.uniform(lay.road[0], lay.road[1])
                yaw = rng.choice([np.pi / 2, -np.pi / 2]) + rng.normal(0.0, 0.3)
            if b.try_object("Pedestrian", float(x), float(y), float(yaw), size, margin=0.15):
                last = (float(x), float(y))
                break
    n_cyc = int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))
    for _ in range(n_cyc):
        size = _sample_size(rng, "Cyclist")
        for _attempt in range(25):
            x = _along_x(rng, cfg)
            r = rng.random()
            if r < 0.45:
                y, yaw = lay.road[0] + rng.uniform(0.6, 1.6), 0.0
            elif r < 0.8:
                y, yaw = lay.road[1] - rng.uniform(0.6, 1.6), np.pi
            else:
                y_in, y_out = lay.sidewalks[int(rng.integers(2))]
                y = rng.uniform(min(y_in, y_out) + 0.5, max(y_in, y_out) - 0.5)
                yaw = rng.choice([0.0, np.pi])
            yaw += rng.normal(0.0, 0.12)
            if b.try_object("Cyclist", float(x), float(y), float(yaw), size, margin=0.3):
                break


def sample_scene(rng: np.random.Generator, config: SceneConfig | None = None, mount_height: float = 1.73) -> Scene:
    """Draw one street scene (see the module docstring). Deterministic given the state of ``rng``,
    which it advances."""
    cfg = config or SceneConfig()
    ground = Ground(
        height=mount_height,
        slope_x=float(rng.uniform(-cfg.max_slope[0], cfg.max_slope[0])),
        slope_y=float(rng.uniform(-cfg.max_slope[1], cfg.max_slope[1])),
    )
    layout = _sample_layout(rng)
    mats = Materials()
    ground_ids = _ground_materials(mats)
    b = _Builder(rng, ground, layout, mats, _make_palette(rng, mats))
    _add_static(b)
    _place_vehicles(b, cfg)
    _place_people(b, cfg)
    lane_lines = tuple((layout.lanes_y[i] + layout.lanes_y[i + 1]) / 2 for i in range(len(layout.lanes_y) - 1))
    return Scene(
        ground=ground,
        shapes=b.shapes,
        objects=b.objects,
        materials=b.mats.table(),
        road=layout.road,
        lane_lines=lane_lines,
        cross=layout.cross,
        ground_materials=ground_ids,
    )


def _ground_materials(mats: Materials) -> tuple[int, int, int]:
    return (
        mats.add(0.16, (0.33, 0.33, 0.35)),
        mats.add(0.72, (0.92, 0.92, 0.9)),
        mats.add(0.38, (0.42, 0.48, 0.3)),
    )


def scene_from_boxes(names: Sequence[str], boxes: np.ndarray, ground: Ground | None = None, seed: int = 0) -> Scene:
    """A hand-made scene: objects of KITTI types ``names`` at LiDAR boxes ``(N, 7)``
    ``[x, y, z_centre, l, w, h, heading]`` on ``ground`` (default: flat, 1.73 m below the sensor), with
    no road, buildings or clutter. Each object's parts lie inside its box; ``seed`` only picks colours
    and poses of limbs. For tests and worked examples."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if len(names) != boxes.shape[0]:
        raise ValueError(f"{len(names)} names but {boxes.shape[0]} boxes")
    rng = np.random.default_rng(seed)
    mats = Materials()
    ground_ids = _ground_materials(mats)
    pal = _make_palette(rng, mats)
    shapes, objects = [], []
    for k, (name, box) in enumerate(zip(names, boxes, strict=True)):
        pose = (float(box[0]), float(box[1]), float(box[2] - box[5] / 2), float(box[6]))
        shapes.append(_object_shape(rng, str(name), pose, (float(box[5]), float(box[4]), float(box[3])), pal))
        objects.append(SceneObject(name=str(name), box=box.copy(), shape=k))
    return Scene(
        ground=ground or Ground(),
        shapes=shapes,
        objects=objects,
        materials=mats.table(),
        road=(-1e9, 1e9),
        lane_lines=(),
        cross=None,
        ground_materials=ground_ids,
    )
