"""Global scene augmentation for LiDAR detection (OpenPCDet ``DataAugmentor`` with the PointPillars
KITTI settings): random flip along x, rotation about z in [-pi/4, pi/4], scaling in [0.95, 1.05],
then point shuffling.

Every transform moves points and boxes together, so a point inside a box stays inside it with the
same box-frame coordinates (up to the scale factor). Randomness comes only from the ``numpy``
generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hrnas.tasks.kitti.boxes import wrap_angle
from hrnas.tasks.kitti.gt_database import GtSamplingConfig

__all__ = [
    "AugmentConfig",
    "augment_scene",
    "flip_scene",
    "rotate_scene",
    "scale_scene",
    "shuffle_points",
]

_FLIP_AXES = ("x", "y")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation, in order (defaults: OpenPCDet ``pointpillar.yaml``).

    Attributes:
        gt_sampling: ground-truth sampling (first).
        flip_axes: random flips, each applied with probability 0.5: ``x`` = mirror across the x axis
            (``y -> -y``, heading -> -heading); ``y`` = mirror across the y axis.
        rotation_range: ``(lo, hi)`` radians of one uniform rotation about +z per frame.
        scaling_range: ``(lo, hi)`` of one uniform scale factor per frame (xyz and box sizes).
        shuffle_points: permute the points after everything else (the pillarizer keeps the first
            points of a pillar, so this decides which are dropped).
    """

    gt_sampling: GtSamplingConfig = field(default_factory=GtSamplingConfig)
    flip_axes: tuple[str, ...] = ("x",)
    rotation_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    scaling_range: tuple[float, float] = (0.95, 1.05)
    shuffle_points: bool = True

    def __post_init__(self) -> None:
        for axis in self.flip_axes:
            if axis not in _FLIP_AXES:
                raise ValueError(f"augment.flip_axes: unknown axis {axis!r} (known: x, y)")
        for key in ("rotation_range", "scaling_range"):
            lo, hi = getattr(self, key)
            if not lo <= hi:
                raise ValueError(f"augment.{key}: expected lo <= hi, got {(lo, hi)!r}")
        if self.scaling_range[0] <= 0:
            raise ValueError(f"augment.scaling_range: expected factors > 0, got {self.scaling_range!r}")


def _copy(points: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.array(points, dtype=np.float64), np.array(boxes, dtype=np.float64).reshape(-1, 7)


def flip_scene(points: np.ndarray, boxes: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a scene. ``axis="x"``: ``y -> -y``, ``heading -> -heading``; ``axis="y"``: ``x -> -x``,
    ``heading -> -(heading + pi)``. Returns float64 copies ``(N, C)``, ``(M, 7)``."""
    p, b = _copy(points, boxes)
    if axis == "x":
        p[:, 1] = -p[:, 1]
        b[:, 1] = -b[:, 1]
        b[:, 6] = -b[:, 6]
    elif axis == "y":
        p[:, 0] = -p[:, 0]
        b[:, 0] = -b[:, 0]
        b[:, 6] = -(b[:, 6] + np.pi)
    else:
        raise ValueError(f"unknown flip axis {axis!r} (known: x, y)")
    return p, b


def rotate_scene(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a scene counter-clockwise by ``angle`` radians about +z: ``x' = x cos - y sin``,
    ``y' = x sin + y cos``, ``heading += angle``. Returns float64 copies."""
    p, b = _copy(points, boxes)
    c, s = math.cos(angle), math.sin(angle)
    for arr in (p, b):
        x, y = arr[:, 0].copy(), arr[:, 1].copy()
        arr[:, 0] = x * c - y * s
        arr[:, 1] = x * s + y * c
    b[:, 6] += angle
    return p, b


def scale_scene(points: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale point xyz, box centres and box sizes by ``factor``. Returns float64 copies."""
    p, b = _copy(points, boxes)
    p[:, :3] *= factor
    b[:, :6] *= factor
    return p, b


def shuffle_points(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The points in a random order (a copy)."""
    return points[rng.permutation(points.shape[0])]


def augment_scene(
    points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the global augmentation of ``config`` (flips, rotation, scaling; not ground-truth sampling
    and not shuffling) with parameters drawn from ``rng`` in that order.

    Args:
        points: ``(N, C)`` LiDAR points, xyz first.
        boxes: ``(M, 7)`` LiDAR boxes ``[x, y, z, dx, dy, dz, heading]``.

    Returns:
        ``points`` ``(N, C)`` in the input dtype and ``boxes`` ``(M, 7)`` float64 with the heading wrapped
        to ``[-pi, pi)``. Inputs are not modified.
    """
    dtype = np.asarray(points).dtype
    p, b = _copy(points, boxes)
    for axis in config.flip_axes:
        if rng.random() < 0.5:
            p, b = flip_scene(p, b, axis)
    lo, hi = config.rotation_range
    p, b = rotate_scene(p, b, float(rng.uniform(lo, hi)))
    lo, hi = config.scaling_range
    p, b = scale_scene(p, b, float(rng.uniform(lo, hi)))
    b[:, 6] = wrap_angle(b[:, 6])
    return p.astype(dtype, copy=False), b
