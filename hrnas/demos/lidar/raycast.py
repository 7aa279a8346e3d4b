"""First-hit ray casting for the KITTI LiDAR simulator: a spinning 64-beam scanner, a sloped ground plane
and rigid shapes made of upright boxes and spheres.

Frames and units: the LiDAR frame of KITTI (x forward, y left, z up), metres and radians.

* :class:`ScannerConfig` describes an HDL-64E-like scanner (the sensor of KITTI): 64 beams from +2° to
  -24.9° (32 upper beams 1/3° apart, 32 lower beams ~1/2° apart), a configurable number of azimuth
  steps per revolution, optionally only a sector centred on +x.
* :class:`Ground` is the plane ``z = -height + slope_x * x + slope_y * y``.
* :class:`Shape` is a rigid thing (a car, a tree, a building) posed by ``(x, y, z, yaw)``; its parts
  are boxes aligned with its own axes and spheres, each with a material id.
* :func:`cast` returns, for every ray, the distance to its first hit, what it hit and the surface
  normal, plus for chosen shapes every ray that would hit them if nothing else were there (needed
  for occlusion levels).

Culling keeps it vectorised and fast: rays are sorted by azimuth once, and each shape is tested only
against the rays inside a conservative azimuth/elevation window around it (a binary search on the
sorted azimuths, then a mask), with all of its parts at once (rays x parts slab tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GROUND",
    "NO_HIT",
    "Ground",
    "Hits",
    "ScannerConfig",
    "Shape",
    "cast",
    "hdl64_elevations",
]

GROUND = -1
"""``Hits.shape`` value of a ray whose first hit is the ground."""
NO_HIT = -2
"""``Hits.shape`` value of a ray that hits nothing within range."""

_EPS = 1e-9


def hdl64_elevations() -> np.ndarray:
    """``(64,)`` beam elevations in radians, top to bottom: 32 beams from +2° to -8.33°, 32 from -8.87° to
    -24.9° (the HDL-64E layout, 26.9° vertical field of view)."""
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.87, -24.9, 32)
    return np.deg2rad(np.concatenate([upper, lower]))


@dataclass(frozen=True)
class ScannerConfig:
    """A spinning multi-beam LiDAR at the origin of the LiDAR frame.

    Attributes:
        num_azimuth: azimuth steps per revolution (2048 gives ~120 k returns per full sweep in the
            simulated streets, like KITTI's 110-127 k; use fewer for a fast demo).
        horizontal_fov_deg: only the sector ``|azimuth| <= fov / 2`` around +x is cast (360 = full
            sweep; the camera sees about ±41°, so 110 keeps every point a KITTI detector uses).
        mount_height: height of the sensor above the ground below it (m).
        max_range: returns farther than this are lost (m).
        min_range: returns nearer than this are dropped (m).
        range_noise: standard deviation of the Gaussian range noise (m).
    """

    num_azimuth: int = 2048
    horizontal_fov_deg: float = 360.0
    mount_height: float = 1.73
    max_range: float = 120.0
    min_range: float = 2.0
    range_noise: float = 0.02

    def __post_init__(self) -> None:
        if self.num_azimuth < 8:
            raise ValueError(f"ScannerConfig.num_azimuth: must be >= 8, got {self.num_azimuth}")
        if not 0.0 < self.horizontal_fov_deg <= 360.0:
            raise ValueError(f"ScannerConfig.horizontal_fov_deg: must be in (0, 360], got {self.horizontal_fov_deg}")
        if not 0.0 <= self.min_range < self.max_range:
            raise ValueError(f"ScannerConfig: need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}")
        if self.range_noise < 0 or self.mount_height <= 0:
            raise ValueError("ScannerConfig: range_noise must be >= 0 and mount_height > 0")

    def directions(self, azimuth_offset: float = 0.0) -> np.ndarray:
        """``(64 * A, 3)`` float64 unit ray directions, beam-major (beam 0 = top), azimuth increasing.

        ``A`` is the number of azimuth steps inside the sector; ``azimuth_offset`` (radians, typically
        drawn in ``[0, step)`` per sweep) shifts where the firing starts.
        """
        step = 2.0 * np.pi / self.num_azimuth
        azimuth = -np.pi + azimuth_offset + step * np.arange(self.num_azimuth)
        azimuth = np.mod(azimuth + np.pi, 2.0 * np.pi) - np.pi
        azimuth = np.sort(azimuth[np.abs(azimuth) <= np.deg2rad(self.horizontal_fov_deg) / 2.0 + 1e-12])
        elevation = hdl64_elevations()
        ce = np.cos(elevation)[:, None]
        dirs = np.stack(
            [
                ce * np.cos(azimuth)[None, :],
                ce * np.sin(azimuth)[None, :],
                np.repeat(np.sin(elevation)[:, None], azimuth.size, 1),
            ],
            axis=-1,
        )
        return dirs.reshape(-1, 3)


@dataclass(frozen=True)
class Ground:
    """The ground plane ``z = -height + slope_x * x + slope_y * y`` (LiDAR frame, metres)."""

    height: float = 1.73
    slope_x: float = 0.0
    slope_y: float = 0.0

    def z(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Ground height at ``(x, y)`` (broadcasting)."""
        return (
            -self.height
            + self.slope_x * np.asarray(x, dtype=np.float64)
            + self.slope_y * np.asarray(y, dtype=np.float64)
        )

    def normal(self) -> np.ndarray:
        """``(3,)`` upward unit normal."""
        n = np.array([-self.slope_x, -self.slope_y, 1.0])
        return n / np.linalg.norm(n)


@dataclass(eq=False)
class Shape:
    """A rigid shape: parts in its own frame, posed at ``(x, y, z)`` with yaw ``yaw`` about +z.

    Attributes:
        boxes: ``(P, 6)`` parts ``[x0, x1, y0, y1, z0, z1]`` in the shape frame (axis-aligned there).
        box_material: ``(P,)`` material id of each box.
        spheres: ``(S, 4)`` parts ``[cx, cy, cz, r]`` in the shape frame.
        sphere_material: ``(S,)`` material id of each sphere.
    """

    x: float
    y: float
    z: float
    yaw: float
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    box_material: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    spheres: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    sphere_material: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 6)
        self.box_material = np.asarray(self.box_material, dtype=np.int64).reshape(self.boxes.shape[0])
        self.spheres = np.asarray(self.spheres, dtype=np.float64).reshape(-1, 4)
        self.sphere_material = np.asarray(self.sphere_material, dtype=np.int64).reshape(self.spheres.shape[0])
        self._local_bounds = self._compute_local_bounds()

    def bounds(self) -> tuple[float, float, float]:
        """``(r, z_min, z_max)``: horizontal radius around ``(x, y)`` and world height range of all parts
        (the parts are fixed at construction; the pose may change)."""
        radius, z_lo, z_hi = self._local_bounds
        return radius, self.z + z_lo, self.z + z_hi

    def _compute_local_bounds(self) -> tuple[float, float, float]:
        radii = [0.0]
        zs = []
        if self.boxes.size:
            corner_x = np.maximum(np.abs(self.boxes[:, 0]), np.abs(self.boxes[:, 1]))
            corner_y = np.maximum(np.abs(self.boxes[:, 2]), np.abs(self.boxes[:, 3]))
            radii.append(float(np.hypot(corner_x, corner_y).max()))
            zs += [self.boxes[:, 4].min(), self.boxes[:, 5].max()]
        if self.spheres.size:
            s = self.spheres
            radii.append(float((np.hypot(s[:, 0], s[:, 1]) + s[:, 3]).max()))
            zs += [(s[:, 2] - s[:, 3]).min(), (s[:, 2] + s[:, 3]).max()]
        if not zs:
            return 0.0, 0.0, 0.0
        return max(radii), float(min(zs)), float(max(zs))

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hit of each ray with this shape.

        Args:
            origin: ``(3,)`` ray origin (LiDAR frame).
            dirs: ``(R, 3)`` unit directions.

        Returns:
            ``t``: ``(R,)`` distance (``inf`` = miss; rays starting inside a part miss it);
            ``material``: ``(R,)`` material id of the part hit (-1 on a miss);
            ``normal``: ``(R, 3)`` outward unit normal at the hit (LiDAR frame).
        """
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # shape -> world
        o = (np.asarray(origin, dtype=np.float64) - np.array([self.x, self.y, self.z])) @ rot
        d = dirs @ rot
        n_rays = d.shape[0]
        best_t = np.full(n_rays, np.inf)
        best_m = np.full(n_rays, -1, dtype=np.int64)
        best_n = np.zeros((n_rays, 3))
        if self.boxes.size:
            t, m, nrm = _boxes_hit(o, d, self.boxes, self.box_material)
            closer = t < best_t
            best_t[closer], best_m[closer], best_n[closer] = t[closer], m[closer], nrm[closer]
        if self.spheres.size:
            t, m, nrm = _spheres_hit(o, d, self.spheres, self.sphere_material)
            closer = t < best_t
            best_t[closer], best_m[closer], best_n[closer] = t[closer], m[closer], nrm[closer]
        return best_t, best_m, best_n @ rot.T


def _boxes_hit(
    o: np.ndarray, d: np.ndarray, boxes: np.ndarray, material: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slab test of ``(R, 3)`` rays from ``o`` against ``(P, 6)`` axis-aligned boxes (all local)."""
    safe = np.where(np.abs(d) < _EPS, np.where(d < 0, -_EPS, _EPS), d)
    inv = 1.0 / safe
    # Per axis (R, P) entry/exit distances; elementwise max/min over the 3 axes is much faster than
    # reducing a trailing axis of length 3.
    near, far = [], []
    for a in range(3):
        t0 = (boxes[:, 2 * a] - o[a])[None, :] * inv[:, a : a + 1]
        t1 = (boxes[:, 2 * a + 1] - o[a])[None, :] * inv[:, a : a + 1]
        near.append(np.minimum(t0, t1))
        far.append(np.maximum(t0, t1))
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    t = np.where((t_near <= t_far) & (t_near > 1e-6), t_near, np.inf)  # (R, P)
    rows = np.arange(t.shape[0])
    if t.shape[1] == 1:
        part = np.zeros(t.shape[0], dtype=np.int64)
        t_best = t[:, 0]
    else:
        part = t.argmin(axis=1)
        t_best = t[rows, part]
    # The entry face is on the axis whose slab is entered last.
    axis = np.where(near[0][rows, part] == t_best, 0, np.where(near[1][rows, part] == t_best, 1, 2))
    normal = np.zeros((t.shape[0], 3))
    normal[rows, axis] = -np.sign(safe[rows, axis])
    mat = np.where(np.isfinite(t_best), material[part], -1)
    return t_best, mat, normal


def _spheres_hit(
    o: np.ndarray, d: np.ndarray, spheres: np.ndarray, material: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest entry of ``(R, 3)`` unit rays from ``o`` into ``(S, 4)`` spheres (all local)."""
    oc = o[None, :] - spheres[:, :3]  # (S, 3)
    b = d @ oc.T  # (R, S)
    cc = (oc**2).sum(axis=1) - spheres[:, 3] ** 2
    disc = b**2 - cc[None, :]
    root = np.sqrt(np.maximum(disc, 0.0))
    t = -b - root
    t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
    part = t.argmin(axis=1)
    rows = np.arange(t.shape[0])
    t_best = t[rows, part]
    finite = np.isfinite(t_best)
    hit = o + d * np.where(finite, t_best, 0.0)[:, None]
    normal = (hit - spheres[part, :3]) / spheres[part, 3:4]
    mat = np.where(finite, material[part], -1)
    return t_best, mat, normal


@dataclass(eq=False)
class Hits:
    """The result of :func:`cast` for ``R`` rays.

    Attributes:
        t: ``(R,)`` distance to the first hit (``inf`` = none within range).
        shape: ``(R,)`` index of the shape hit, :data:`GROUND` or :data:`NO_HIT`.
        material: ``(R,)`` material id of the part hit (-1 for the ground and for no hit).
        normal: ``(R, 3)`` unit normal at the hit (zeros for no hit).
        footprint: for each tracked shape index, ``(rays, t)``: every ray (index into the ``R`` rays)
            that would hit that shape within range if it were alone, and the distance.
    """

    t: np.ndarray
    shape: np.ndarray
    material: np.ndarray
    normal: np.ndarray
    footprint: dict[int, tuple[np.ndarray, np.ndarray]]


def _window(
    shape: Shape, origin: np.ndarray, az_sorted: np.ndarray, order: np.ndarray, elevation: np.ndarray
) -> np.ndarray:
    """Indices of the rays that can possibly hit ``shape``: a conservative azimuth interval (from its
    bounding cylinder) found by binary search in the sorted azimuths, then an elevation interval."""
    radius, z_min, z_max = shape.bounds()
    dx, dy = shape.x - origin[0], shape.y - origin[1]
    dist = float(np.hypot(dx, dy))
    if dist <= radius + 1e-6:
        idx = order
    else:
        centre = float(np.arctan2(dy, dx))
        half = float(np.arcsin(radius / dist)) + 1e-6
        lo, hi = centre - half, centre + half
        spans = [(lo, hi)]
        if lo < -np.pi:
            spans = [(lo + 2 * np.pi, np.pi), (-np.pi, hi)]
        elif hi > np.pi:
            spans = [(lo, np.pi), (-np.pi, hi - 2 * np.pi)]
        pieces = [
            order[np.searchsorted(az_sorted, a, "left") : np.searchsorted(az_sorted, b, "right")] for a, b in spans
        ]
        idx = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    if idx.size == 0:
        return idx
    r_min, r_max = max(dist - radius, 1e-3), dist + radius
    top, bottom = z_max - origin[2], z_min - origin[2]
    e_hi = np.arctan2(top, r_min if top > 0 else r_max)
    e_lo = np.arctan2(bottom, r_min if bottom < 0 else r_max)
    el = elevation[idx]
    return idx[(el >= e_lo - 1e-9) & (el <= e_hi + 1e-9)]


def cast(
    origin: np.ndarray,
    dirs: np.ndarray,
    shapes: list[Shape],
    ground: Ground | None,
    max_range: float,
    track: set[int] | frozenset[int] = frozenset(),
) -> Hits:
    """Cast ``(R, 3)`` unit rays from ``origin`` and return their first hits (see :class:`Hits`).

    Hits farther than ``max_range`` are misses. A ray hitting two surfaces at exactly the same distance
    keeps the earlier one (ground first, then shapes in list order). ``track`` names the shapes whose
    full ray footprint is recorded (for occlusion: a footprint ray whose first hit is another shape is
    blocked by it). Nothing is mutated.
    """
    origin = np.asarray(origin, dtype=np.float64).reshape(3)
    dirs = np.asarray(dirs, dtype=np.float64)
    n_rays = dirs.shape[0]
    t_best = np.full(n_rays, np.inf)
    owner = np.full(n_rays, NO_HIT, dtype=np.int64)
    material = np.full(n_rays, -1, dtype=np.int64)
    normal = np.zeros((n_rays, 3))
    if ground is not None:
        n = ground.normal()
        denom = dirs @ n
        # Plane n . p = n . p0 with p0 = (0, 0, -height).
        num = -ground.height * n[2] - origin @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(denom < -1e-9, num / denom, np.inf)
        t = np.where((t > 1e-6) & (t <= max_range), t, np.inf)
        hit = np.isfinite(t)
        t_best[hit] = t[hit]
        owner[hit] = GROUND
        normal[hit] = n
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    elevation = np.arctan2(dirs[:, 2], np.hypot(dirs[:, 0], dirs[:, 1]))
    order = np.argsort(azimuth, kind="stable")
    az_sorted = azimuth[order]
    footprint: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, shape in enumerate(shapes):
        idx = _window(shape, origin, az_sorted, order, elevation)
        if idx.size == 0:
            if k in track:
                footprint[k] = (idx, np.zeros(0))
            continue
        t, mat, nrm = shape.intersect(origin, dirs[idx])
        t = np.where(t <= max_range, t, np.inf)
        if k in track:
            hit = np.isfinite(t)
            footprint[k] = (idx[hit], t[hit])
        closer = t < t_best[idx]
        sel = idx[closer]
        t_best[sel] = t[closer]
        owner[sel] = k
        material[sel] = mat[closer]
        normal[sel] = nrm[closer]
    return Hits(t=t_best, shape=owner, material=material, normal=normal, footprint=footprint)
