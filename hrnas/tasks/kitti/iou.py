"""Exact IoUs for KITTI boxes: image boxes, rotated bird's-eye-view rectangles, 3D boxes.

The rotated intersection is computed by Sutherland-Hodgman clipping of one rectangle by the other in
float64, vectorised over box pairs with numpy, and its area by the shoelace formula. Box pairs whose
axis-aligned bounds do not overlap are skipped. Unlike the float32 port used by the public KITTI
evaluation, coincident boxes give an IoU of exactly 1, and nested, edge-sharing and touching boxes are
exact up to float64 rounding.

Box conventions:

* **Rotated rectangle** ``[cx, cy, length, width, angle]``: corner = centre + R(angle) (+-l/2, +-w/2) with
  the standard counter-clockwise ``R = [[cos, -sin], [sin, cos]]``.
* **Camera box** ``[x, y, z, l, h, w, ry]`` (rectified camera, y down, bottom centre), as in the
  official evaluation: the BEV is the ``(x, z)`` plane with corners
  ``x' = cos(ry) dx + sin(ry) dz``, ``z' = -sin(ry) dx + cos(ry) dz`` (= the rectangle
  ``[x, z, l, w, -ry]``), the box spans ``[y - h, y]`` vertically.
* **LiDAR box** ``[x, y, z, dx, dy, dz, heading]`` (geometric centre): BEV rectangle
  ``[x, y, dx, dy, heading]``, vertical span ``[z - dz/2, z + dz/2]``.
* **Image box** ``[x1, y1, x2, y2]`` in pixels, area ``(x2 - x1)(y2 - y1)`` (no ``+1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "bev_iou_camera",
    "bev_iou_camera_pairs",
    "bev_iou_lidar",
    "box_iou_2d",
    "box_iou_2d_pairs",
    "iou3d_camera",
    "iou3d_camera_pairs",
    "iou3d_lidar",
    "rect_corners",
    "rotated_intersection_pairs",
    "rotated_iou",
    "rotated_iou_pairs",
]

Criterion = Literal["union", "a", "b", "none"]
"""Denominator of an overlap: ``union`` = IoU, ``a``/``b`` = intersection over the area (volume) of
the first/second box, ``none`` = the raw intersection."""

_CHUNK = 1 << 16  # box pairs clipped at once (bounds the temporary arrays to a few tens of MB)


def _as_boxes(boxes: np.ndarray, cols: int, what: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.shape[0] == 0:
        b = b.reshape(0, cols)
    if b.ndim != 2 or b.shape[1] != cols:
        raise ValueError(f"{what} must be (N, {cols}), got shape {b.shape}")
    return b


def _check_sizes(sizes: np.ndarray, what: str) -> None:
    if sizes.size and not (np.all(np.isfinite(sizes)) and np.all(sizes >= 0)):
        raise ValueError(f"{what}: box sizes must be finite and >= 0")


def _rect_xy(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corner coordinates ``x, y`` (each ``(N, 4)``, counter-clockwise) of rectangles ``(N, 5)``."""
    half_l = r[:, 2:3] / 2.0
    half_w = r[:, 3:4] / 2.0
    lx = np.concatenate([half_l, -half_l, -half_l, half_l], axis=1)
    ly = np.concatenate([half_w, half_w, -half_w, -half_w], axis=1)
    c = np.cos(r[:, 4:5])
    s = np.sin(r[:, 4:5])
    return c * lx - s * ly + r[:, 0:1], s * lx + c * ly + r[:, 1:2]


def rect_corners(rects: np.ndarray) -> np.ndarray:
    """``(N, 4, 2)`` counter-clockwise corners of rotated rectangles ``(N, 5)``
    ``[cx, cy, length, width, angle]``."""
    x, y = _rect_xy(_as_boxes(rects, 5, "rects"))
    return np.stack([x, y], axis=2)


def _clip_area(sx: np.ndarray, sy: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Areas ``(P,)`` of ``subject ∩ clip`` for counter-clockwise convex quads given by corner
    coordinates ``sx, sy`` (subject) and ``cx, cy`` (clip), each ``(P, 4)``.

    Sutherland-Hodgman: the subject polygon is clipped by the four half-planes of the clip polygon.
    Polygons are fixed-width rows with a vertex count; the width grows only as far as needed.
    """
    p = sx.shape[0]
    rows = np.arange(p)[:, None]
    px, py = sx, sy
    count = np.full(p, 4, dtype=np.int64)
    for k in range(4):
        ax, ay = cx[:, k : k + 1], cy[:, k : k + 1]
        ex = cx[:, (k + 1) % 4, None] - ax
        ey = cy[:, (k + 1) % 4, None] - ay
        width = px.shape[1]
        slot = np.arange(width)[None, :]
        valid = slot < count[:, None]
        # side >= 0: on or left of the directed edge = inside for a counter-clockwise clip polygon.
        side = ex * (py - ay) - ey * (px - ax)
        prev_idx = np.where(slot == 0, np.maximum(count[:, None] - 1, 0), slot - 1)
        prev_x = px[rows, prev_idx]
        prev_y = py[rows, prev_idx]
        side_prev = side[rows, prev_idx]
        inside = side >= 0.0
        crossing = valid & (inside != (side_prev >= 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(crossing, side_prev / (side_prev - side), 0.0)
        # Each vertex emits the crossing of its incoming edge (if any), then itself (if inside).
        keep = np.stack([crossing, valid & inside], axis=2).reshape(p, 2 * width)
        cand_x = np.stack([prev_x + t * (px - prev_x), px], axis=2).reshape(p, 2 * width)
        cand_y = np.stack([prev_y + t * (py - prev_y), py], axis=2).reshape(p, 2 * width)
        count = keep.sum(axis=1)
        new_width = max(int(count.max(initial=0)), 1)
        # Stable compaction of the kept candidates to the front of each row.
        order = np.argsort(~keep, axis=1, kind="stable")[:, :new_width]
        px = np.take_along_axis(cand_x, order, axis=1)
        py = np.take_along_axis(cand_y, order, axis=1)
    width = px.shape[1]
    slot = np.arange(width)[None, :]
    nxt = np.where(slot + 1 >= count[:, None], 0, slot + 1)
    cross = px * py[rows, nxt] - py * px[rows, nxt]
    area = 0.5 * np.where(slot < count[:, None], cross, 0.0).sum(axis=1)
    return np.where(count >= 3, np.maximum(area, 0.0), 0.0)


def _intersection_of_corners(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Intersection areas ``(P,)`` of quads given by ``(P, 4)`` corner coordinates, in chunks, with
    coordinates taken relative to the first quad's centre for precision."""
    out = np.empty(ax.shape[0])
    for start in range(0, ax.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        ox = ax[sl].mean(axis=1, keepdims=True)
        oy = ay[sl].mean(axis=1, keepdims=True)
        out[sl] = _clip_area(ax[sl] - ox, ay[sl] - oy, bx[sl] - ox, by[sl] - oy)
    return out


def rotated_intersection_pairs(rects_a: np.ndarray, rects_b: np.ndarray) -> np.ndarray:
    """Intersection areas ``(N,)`` of rectangle pairs ``rects_a[i]``, ``rects_b[i]`` (each ``(N, 5)``
    ``[cx, cy, length, width, angle]``), in squared input units.

    Coincident rectangles give exactly ``length * width``, and the result never exceeds either area.
    """
    a = _as_boxes(rects_a, 5, "rects_a")
    b = _as_boxes(rects_b, 5, "rects_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"pair counts differ: {a.shape[0]} vs {b.shape[0]}")
    _check_sizes(a[:, 2:4], "rects_a")
    _check_sizes(b[:, 2:4], "rects_b")
    area_a = a[:, 2] * a[:, 3]
    area_b = b[:, 2] * b[:, 3]
    inter = np.zeros(a.shape[0])
    ax, ay = _rect_xy(a)
    bx, by = _rect_xy(b)
    overlap = (
        (ax.max(axis=1) > bx.min(axis=1))
        & (bx.max(axis=1) > ax.min(axis=1))
        & (ay.max(axis=1) > by.min(axis=1))
        & (by.max(axis=1) > ay.min(axis=1))
    )
    same = np.all(a == b, axis=1)
    idx = np.flatnonzero(overlap & ~same & (area_a > 0) & (area_b > 0))
    if idx.size:
        inter[idx] = _intersection_of_corners(ax[idx], ay[idx], bx[idx], by[idx])
    inter[same] = area_a[same]
    return np.minimum(inter, np.minimum(area_a, area_b))


def _ratio(inter: np.ndarray, size_a: np.ndarray, size_b: np.ndarray, criterion: Criterion) -> np.ndarray:
    if criterion == "none":
        return inter
    if criterion == "union":
        denom = size_a + size_b - inter
    elif criterion == "a":
        denom = size_a
    elif criterion == "b":
        denom = size_b
    else:
        raise ValueError(f"unknown criterion {criterion!r} (known: union, a, b, none)")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, inter / denom, 0.0)
    return np.clip(out, 0.0, 1.0)


def rotated_iou_pairs(rects_a: np.ndarray, rects_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """Overlap ``(N,)`` of rectangle pairs (see :func:`rotated_intersection_pairs`); 0 where the
    denominator is 0. Coincident non-empty rectangles give exactly 1."""
    a = _as_boxes(rects_a, 5, "rects_a")
    b = _as_boxes(rects_b, 5, "rects_b")
    inter = rotated_intersection_pairs(a, b)
    return _ratio(inter, a[:, 2] * a[:, 3], b[:, 2] * b[:, 3], criterion)


def _candidate_pairs(
    lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs ``(i, j)`` whose axis-aligned bounds ``(N, D)``/``(M, D)`` overlap with positive
    extent, yielded in row blocks to bound memory."""
    n, m = lo_a.shape[0], lo_b.shape[0]
    if n == 0 or m == 0:
        return
    block = max(1, (1 << 22) // m)
    for start in range(0, n, block):
        stop = min(n, start + block)
        ok = np.ones((stop - start, m), dtype=bool)
        for d in range(lo_a.shape[1]):
            ok &= hi_a[start:stop, None, d] > lo_b[None, :, d]
            ok &= hi_b[None, :, d] > lo_a[start:stop, None, d]
        i, j = np.nonzero(ok)
        yield i + start, j


def _rotated_intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _check_sizes(a[:, 2:4], "boxes_a")
    _check_sizes(b[:, 2:4], "boxes_b")
    ax, ay = _rect_xy(a)
    bx, by = _rect_xy(b)
    lo_a = np.stack([ax.min(axis=1), ay.min(axis=1)], axis=1)
    hi_a = np.stack([ax.max(axis=1), ay.max(axis=1)], axis=1)
    lo_b = np.stack([bx.min(axis=1), by.min(axis=1)], axis=1)
    hi_b = np.stack([bx.max(axis=1), by.max(axis=1)], axis=1)
    inter = np.zeros((a.shape[0], b.shape[0]))
    for i, j in _candidate_pairs(lo_a, hi_a, lo_b, hi_b):
        if i.size:
            inter[i, j] = rotated_intersection_pairs(a[i], b[j])
    return inter


def rotated_iou(rects_a: np.ndarray, rects_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """Overlap matrix ``(N, M)`` of rotated rectangles ``(N, 5)`` x ``(M, 5)``
    ``[cx, cy, length, width, angle]``."""
    a = _as_boxes(rects_a, 5, "rects_a")
    b = _as_boxes(rects_b, 5, "rects_b")
    inter = _rotated_intersection_matrix(a, b)
    return _ratio(inter, (a[:, 2] * a[:, 3])[:, None], (b[:, 2] * b[:, 3])[None, :], criterion)


# --------------------------------------------------------------------------------------------------
# Camera (official evaluation) and LiDAR conventions
# --------------------------------------------------------------------------------------------------


def _camera_bev(boxes: np.ndarray) -> np.ndarray:
    # [x, z, l, w, -ry]: the official corner formula is a counter-clockwise rotation by -ry in (x, z).
    return np.stack([boxes[:, 0], boxes[:, 2], boxes[:, 3], boxes[:, 5], -boxes[:, 6]], axis=1)


def _lidar_bev(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, [0, 1, 3, 4, 6]]


class _Solids(NamedTuple):
    """3D boxes of either frame as what their overlap needs: BEV rectangles ``(N, 5)``, the vertical span
    ``[low, high]`` and the volume ``(N,)``, and the boxes themselves (coincident boxes give exactly 1)."""

    bev: np.ndarray
    low: np.ndarray
    high: np.ndarray
    volume: np.ndarray
    boxes: np.ndarray


def _camera_solids(boxes: np.ndarray, what: str) -> _Solids:
    """Camera boxes ``[x, y, z, l, h, w, ry]`` (bottom centre, y down): span ``[y - h, y]``."""
    b = _as_boxes(boxes, 7, what)
    _check_sizes(b[:, 3:6], what)
    return _Solids(_camera_bev(b), b[:, 1] - b[:, 4], b[:, 1], b[:, 3] * b[:, 4] * b[:, 5], b)


def _lidar_solids(boxes: np.ndarray, what: str) -> _Solids:
    """LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` (geometric centre, z up): span ``z ± dz/2``."""
    b = _as_boxes(boxes, 7, what)
    _check_sizes(b[:, 3:6], what)
    return _Solids(_lidar_bev(b), b[:, 2] - b[:, 5] / 2, b[:, 2] + b[:, 5] / 2, b[:, 3] * b[:, 4] * b[:, 5], b)


def bev_iou_camera(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """BEV overlap matrix ``(N, M)`` of camera boxes ``[x, y, z, l, h, w, ry]`` (official KITTI BEV:
    rectangles ``(x, z, l, w, ry)`` in the camera x-z plane)."""
    a = _as_boxes(boxes_a, 7, "boxes_a")
    b = _as_boxes(boxes_b, 7, "boxes_b")
    return rotated_iou(_camera_bev(a), _camera_bev(b), criterion)


def bev_iou_camera_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """BEV overlap ``(N,)`` of camera box pairs ``boxes_a[i]``, ``boxes_b[i]`` (see :func:`bev_iou_camera`)."""
    a = _as_boxes(boxes_a, 7, "boxes_a")
    b = _as_boxes(boxes_b, 7, "boxes_b")
    return rotated_iou_pairs(_camera_bev(a), _camera_bev(b), criterion)


def bev_iou_lidar(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """BEV overlap matrix ``(N, M)`` of LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` (rectangles
    ``(x, y, dx, dy, heading)``, heading counter-clockwise about +z)."""
    a = _as_boxes(boxes_a, 7, "boxes_a")
    b = _as_boxes(boxes_b, 7, "boxes_b")
    return rotated_iou(_lidar_bev(a), _lidar_bev(b), criterion)


def _volume_ratio(
    bev_inter: np.ndarray,
    lo_a: np.ndarray,
    hi_a: np.ndarray,
    lo_b: np.ndarray,
    hi_b: np.ndarray,
    vol_a: np.ndarray,
    vol_b: np.ndarray,
    criterion: Criterion,
) -> np.ndarray:
    overlap = np.maximum(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0.0)
    inter = bev_inter * overlap
    inter = np.minimum(inter, np.minimum(vol_a, vol_b))
    return _ratio(inter, vol_a, vol_b, criterion)


def _iou3d_pairs(a: _Solids, b: _Solids, criterion: Criterion) -> np.ndarray:
    """3D overlap ``(N,)`` of solid pairs: BEV intersection x vertical overlap."""
    bev = rotated_intersection_pairs(a.bev, b.bev)
    out = _volume_ratio(bev, a.low, a.high, b.low, b.high, a.volume, b.volume, criterion)
    if criterion == "union":
        out[np.all(a.boxes == b.boxes, axis=1) & (a.volume > 0)] = 1.0
    return out


def _iou3d(a: _Solids, b: _Solids, criterion: Criterion) -> np.ndarray:
    """3D overlap matrix ``(N, M)`` of solids: BEV intersection x vertical overlap."""
    bev = _rotated_intersection_matrix(a.bev, b.bev)
    vol_a, vol_b = a.volume[:, None], b.volume[None, :]
    out = _volume_ratio(bev, a.low[:, None], a.high[:, None], b.low[None, :], b.high[None, :], vol_a, vol_b, criterion)
    if criterion == "union":
        same = np.all(a.boxes[:, None, :] == b.boxes[None, :, :], axis=2) & (vol_a > 0)
        out[same] = 1.0
    return out


def iou3d_camera_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """3D overlap ``(N,)`` of camera box pairs ``[x, y, z, l, h, w, ry]`` (bottom centre, y down).

    As in the official evaluation: BEV intersection x height overlap, the height overlap being
    ``min(y_a, y_b) - max(y_a - h_a, y_b - h_b)`` (0 if negative), over ``V_a + V_b - inter`` with
    ``V = l h w``. Coincident non-empty boxes give exactly 1.
    """
    return _iou3d_pairs(_camera_solids(boxes_a, "boxes_a"), _camera_solids(boxes_b, "boxes_b"), criterion)


def iou3d_camera(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """3D overlap matrix ``(N, M)`` of camera boxes (see :func:`iou3d_camera_pairs`)."""
    return _iou3d(_camera_solids(boxes_a, "boxes_a"), _camera_solids(boxes_b, "boxes_b"), criterion)


def iou3d_lidar(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """3D overlap matrix ``(N, M)`` of LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` (geometric centre,
    z up): BEV intersection x overlap of ``[z - dz/2, z + dz/2]``."""
    return _iou3d(_lidar_solids(boxes_a, "boxes_a"), _lidar_solids(boxes_b, "boxes_b"), criterion)


# --------------------------------------------------------------------------------------------------
# Image boxes
# --------------------------------------------------------------------------------------------------


def box_iou_2d_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """Overlap ``(N,)`` of image-box pairs ``[x1, y1, x2, y2]`` (area without ``+1``, as the Python
    KITTI evaluation); 0 unless both the width and the height of the intersection are positive."""
    a = _as_boxes(boxes_a, 4, "boxes_a")
    b = _as_boxes(boxes_b, 4, "boxes_b")
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.where(inter > 0, _ratio(inter, area_a, area_b, criterion), 0.0)


def box_iou_2d(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: Criterion = "union") -> np.ndarray:
    """Overlap matrix ``(N, M)`` of image boxes (see :func:`box_iou_2d_pairs`)."""
    a = _as_boxes(boxes_a, 4, "boxes_a")
    b = _as_boxes(boxes_b, 4, "boxes_b")
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return np.where(inter > 0, _ratio(inter, area_a, area_b, criterion), 0.0)
