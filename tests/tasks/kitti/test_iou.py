"""Exact rotated BEV / 3D / image-box IoUs against shapely polygons."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from shapely.geometry import Polygon

from hrnas.tasks.kitti.boxes import camera_box_corners
from hrnas.tasks.kitti.iou import (
    bev_iou_camera,
    bev_iou_camera_pairs,
    bev_iou_lidar,
    box_iou_2d,
    box_iou_2d_pairs,
    iou3d_camera,
    iou3d_camera_pairs,
    iou3d_lidar,
    rect_corners,
    rotated_intersection_pairs,
    rotated_iou,
    rotated_iou_pairs,
)


def _random_rects(rng: np.random.Generator, n: int, spread: float = 3.0) -> np.ndarray:
    return np.column_stack(
        [
            rng.uniform(-spread, spread, n),
            rng.uniform(-spread, spread, n),
            rng.uniform(0.3, 5.0, n),
            rng.uniform(0.3, 3.0, n),
            rng.uniform(-2 * np.pi, 2 * np.pi, n),
        ]
    )


def _own_axes(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along each rectangle's length and width."""
    c, s = np.cos(r[:, 4]), np.sin(r[:, 4])
    return np.column_stack([c, s]), np.column_stack([-s, c])


def _pair_set(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
    """10 000 rectangle pairs: random, coincident, nested, edge-sharing, corner-touching, aligned."""
    kinds: dict[str, slice] = {}
    parts_a, parts_b = [], []

    def add(name: str, a: np.ndarray, b: np.ndarray) -> None:
        start = sum(len(p) for p in parts_a)
        kinds[name] = slice(start, start + len(a))
        parts_a.append(a)
        parts_b.append(b)

    add("random", _random_rects(rng, 4000), _random_rects(rng, 4000))
    a = _random_rects(rng, 1500, spread=40.0)
    add("coincident", a, a.copy())
    a = _random_rects(rng, 1000)
    b = a.copy()
    b[:, 2:4] *= rng.uniform(0.2, 0.9, (1000, 1))  # same centre and angle, shrunk: nested
    add("nested", a, b)
    a = _random_rects(rng, 500)
    b = a.copy()
    b[:, 2] *= rng.uniform(0.1, 0.3, 500)
    b[:, 3] *= rng.uniform(0.1, 0.3, 500)
    b[:, 4] += rng.uniform(0, np.pi, 500)  # small box rotated anywhere inside the big one
    add("nested_rotated", a, b)
    a = _random_rects(rng, 1000)
    b = a.copy()
    along_l, along_w = _own_axes(a)
    side = rng.integers(0, 2, 1000)[:, None]
    step = np.where(side == 0, along_l * a[:, 2:3], along_w * a[:, 3:4])
    b[:, :2] += step  # shifted by exactly one length or width: the boxes share an edge
    add("edge_sharing", a, b)
    a = _random_rects(rng, 500)
    b = a.copy()
    along_l, along_w = _own_axes(a)
    b[:, :2] += along_l * a[:, 2:3] + along_w * a[:, 3:4]  # diagonal shift: the boxes touch at a corner
    add("corner_touching", a, b)
    a = _random_rects(rng, 1000)
    b = a.copy()
    b[:, :2] += rng.uniform(-1.0, 1.0, (1000, 2)) * a[:, 2:4]  # same angle, partial overlap
    add("aligned", a, b)
    a = _random_rects(rng, 500)
    b = a.copy()
    b[:, 4] += np.pi / 2 * rng.integers(1, 4, 500)  # same centre, rotated by multiples of 90 deg
    add("quarter_turns", a, b)
    return np.concatenate(parts_a), np.concatenate(parts_b), kinds


def _shapely_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ca, cb = rect_corners(a), rect_corners(b)
    out = np.empty(len(a))
    for i in range(len(a)):
        pa, pb = Polygon(ca[i]), Polygon(cb[i])
        inter = pa.intersection(pb).area
        out[i] = inter / (pa.area + pb.area - inter)
    return out


def _exact_iou(ca: np.ndarray, cb: np.ndarray) -> float:
    """IoU of two convex quads ``(4, 2)`` in exact rational arithmetic (the float corners taken as
    exact), by clipping ``ca`` with the half-planes of ``cb``."""

    def area(poly: list[tuple[Fraction, Fraction]]) -> Fraction:
        n = len(poly)
        return abs(sum(poly[i][0] * poly[(i + 1) % n][1] - poly[i][1] * poly[(i + 1) % n][0] for i in range(n))) / 2

    pa = [(Fraction(x), Fraction(y)) for x, y in ca.tolist()]
    pb = [(Fraction(x), Fraction(y)) for x, y in cb.tolist()]
    poly = pa
    for k in range(4):
        (ax, ay), (bx, by) = pb[k], pb[(k + 1) % 4]
        out = []
        for i in range(len(poly)):
            cur, prev = poly[i], poly[i - 1]
            s_cur = (bx - ax) * (cur[1] - ay) - (by - ay) * (cur[0] - ax)
            s_prev = (bx - ax) * (prev[1] - ay) - (by - ay) * (prev[0] - ax)
            if (s_cur >= 0) != (s_prev >= 0):
                t = s_prev / (s_prev - s_cur)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if s_cur >= 0:
                out.append(cur)
        poly = out
        if not poly:
            return 0.0
    inter = area(poly)
    return float(inter / (area(pa) + area(pb) - inter))


def test_rotated_iou_matches_shapely_on_10000_pairs():
    rng = np.random.default_rng(0)
    a, b, kinds = _pair_set(rng)
    assert len(a) == 10_000
    ours = rotated_iou_pairs(a, b)
    ref = _shapely_iou(a, b)
    # GEOS itself is not robust for nearly coincident edges: on a few edge-sharing pairs it returns a whole
    # box as the intersection. Where shapely disagrees, exact rational arithmetic decides.
    ca, cb = rect_corners(a), rect_corners(b)
    disagree = np.flatnonzero(np.abs(ours - ref) > 1e-6)
    assert len(disagree) < 30
    assert all(kinds["edge_sharing"].start <= i < kinds["edge_sharing"].stop for i in disagree)
    for i in disagree:
        assert ours[i] == pytest.approx(_exact_iou(ca[i], cb[i]), abs=1e-9)
        ref[i] = _exact_iou(ca[i], cb[i])
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    # A sample of every kind against exact arithmetic as well.
    for i in range(0, len(a), 50):
        assert ours[i] == pytest.approx(_exact_iou(ca[i], cb[i]), abs=1e-9)
    assert np.all(ours[kinds["coincident"]] == 1.0)  # exactly, not approximately
    nested = kinds["nested"]
    np.testing.assert_allclose(ours[nested], (b[nested, 2] * b[nested, 3]) / (a[nested, 2] * a[nested, 3]), rtol=1e-12)
    assert np.all(ours[kinds["edge_sharing"]] < 1e-9)
    assert np.all(ours[kinds["corner_touching"]] < 1e-9)
    # Symmetric, and in [0, 1].
    np.testing.assert_allclose(rotated_iou_pairs(b, a), ours, atol=1e-12)
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    assert (ours[kinds["random"]] > 0).mean() > 0.2  # the random pairs do overlap often


def test_intersection_area_and_criteria():
    a = np.array([[0.0, 0.0, 4.0, 2.0, 0.0]])
    b = np.array([[1.0, 0.0, 4.0, 2.0, 0.0]])  # 3 x 2 overlap
    assert rotated_intersection_pairs(a, b)[0] == pytest.approx(6.0)
    assert rotated_iou_pairs(a, b)[0] == pytest.approx(6.0 / 10.0)
    assert rotated_iou_pairs(a, b, criterion="a")[0] == pytest.approx(0.75)
    # 45 deg rotated square inside a bigger square: the intersection is the whole small one.
    big = np.array([[0.0, 0.0, 10.0, 10.0, 0.3]])
    small = np.array([[0.5, -0.5, 2.0, 2.0, np.pi / 4]])
    assert rotated_intersection_pairs(big, small)[0] == pytest.approx(4.0, abs=1e-12)
    # Empty rectangles give 0, not NaN.
    zero = np.array([[0.0, 0.0, 0.0, 2.0, 0.0]])
    assert rotated_iou_pairs(zero, zero)[0] == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        rotated_iou_pairs(np.array([[0.0, 0.0, -1.0, 1.0, 0.0]]), a)


def test_matrix_equals_pairs_and_is_fast():
    rng = np.random.default_rng(1)
    # A few thousand boxes spread over a KITTI-sized area, many overlapping.
    n = 3000
    rects = np.column_stack(
        [
            rng.uniform(0, 70, n),
            rng.uniform(-40, 40, n),
            rng.uniform(0.5, 5, n),
            rng.uniform(0.5, 2.5, n),
            rng.uniform(-np.pi, np.pi, n),
        ]
    )
    start = time.perf_counter()
    mat = rotated_iou(rects, rects)
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0, f"{n}x{n} rotated IoU took {elapsed:.1f} s"
    assert np.all(np.diag(mat) == 1.0)
    i, j = np.nonzero(np.ones((n, n), dtype=bool)[:300, :300])
    np.testing.assert_allclose(mat[i, j], rotated_iou_pairs(rects[i], rects[j]), atol=1e-12)
    np.testing.assert_allclose(mat, mat.T, atol=1e-12)
    assert (mat > 0).sum() > 2 * n  # more than the diagonal


def test_camera_bev_uses_the_official_rotation():
    rng = np.random.default_rng(2)
    n = 300
    cam = np.column_stack(
        [
            rng.uniform(-3, 3, n),
            rng.uniform(1, 2, n),
            rng.uniform(10, 16, n),
            rng.uniform(1, 5, n),
            rng.uniform(1, 2, n),
            rng.uniform(0.5, 2, n),
            rng.uniform(-np.pi, np.pi, n),
        ]
    )
    a, b = cam[: n // 2], cam[n // 2 :]
    # BEV footprints from the 3D corners (x, z of the bottom face) as shapely polygons.
    ca, cb = camera_box_corners(a)[:, :4][:, :, [0, 2]], camera_box_corners(b)[:, :4][:, :, [0, 2]]
    ref = np.empty(len(a))
    for k in range(len(a)):
        pa, pb = Polygon(ca[k]), Polygon(cb[k])
        inter = pa.intersection(pb).area
        ref[k] = inter / (pa.area + pb.area - inter)
    np.testing.assert_allclose(bev_iou_camera_pairs(a, b), ref, atol=1e-9)
    np.testing.assert_allclose(np.diag(bev_iou_camera(a, b)), ref, atol=1e-9)
    # A mirrored yaw convention would differ: check the test can tell.
    mirrored = b.copy()
    mirrored[:, 6] *= -1
    assert np.abs(bev_iou_camera_pairs(a, mirrored) - ref).max() > 0.05


def test_iou3d_camera():
    rng = np.random.default_rng(3)
    n = 2000
    a = np.column_stack(
        [
            rng.uniform(-2, 2, n),
            rng.uniform(1, 2.5, n),
            rng.uniform(10, 14, n),
            rng.uniform(1, 5, n),
            rng.uniform(0.5, 2, n),
            rng.uniform(0.5, 2, n),
            rng.uniform(-np.pi, np.pi, n),
        ]
    )
    b = a[rng.permutation(n)]
    ours = iou3d_camera_pairs(a, b)
    # Reference: shapely BEV intersection x height overlap of [y - h, y] (y points down).
    bev_inter = rotated_intersection_pairs(
        a[:, [0, 2, 3, 5, 6]] * [1, 1, 1, 1, -1], b[:, [0, 2, 3, 5, 6]] * [1, 1, 1, 1, -1]
    )
    ca = camera_box_corners(a)[:, :4][:, :, [0, 2]]
    cb = camera_box_corners(b)[:, :4][:, :, [0, 2]]
    shapely_inter = np.array([Polygon(ca[k]).intersection(Polygon(cb[k])).area for k in range(n)])
    np.testing.assert_allclose(bev_inter, shapely_inter, atol=1e-9)
    height = np.maximum(np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 1] - a[:, 4], b[:, 1] - b[:, 4]), 0)
    inter = shapely_inter * height
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    np.testing.assert_allclose(ours, inter / (vol_a + vol_b - inter), atol=1e-9)
    assert (ours > 0).sum() > n // 10
    # Matrix form agrees; coincident boxes give exactly 1.
    mat = iou3d_camera(a[:200], b[:200])
    np.testing.assert_allclose(np.diag(mat), ours[:200], atol=1e-12)
    assert np.all(iou3d_camera_pairs(a, a) == 1.0)
    assert np.all(np.diag(iou3d_camera(a[:300], a[:300])) == 1.0)


def test_iou3d_height_cases():
    car = np.array([[0.0, 1.6, 20.0, 4.0, 1.5, 1.6, 0.3]])
    stacked = car.copy()
    stacked[0, 1] -= 1.5  # directly on top: touches, no overlap
    assert iou3d_camera_pairs(car, stacked)[0] == 0.0
    assert bev_iou_camera_pairs(car, stacked)[0] == 1.0
    half = car.copy()
    half[0, 1] -= 0.75  # half the height overlaps: 1/2 / (1 + 1 - 1/2) = 1/3
    assert iou3d_camera_pairs(car, half)[0] == pytest.approx(1.0 / 3.0, abs=1e-12)
    shifted = car.copy()
    shifted[0, [0, 2]] += [4.0 * np.cos(0.3), -4.0 * np.sin(0.3)]  # one length along its own axis
    assert iou3d_camera_pairs(car, shifted)[0] == pytest.approx(0.0, abs=1e-9)


def test_lidar_ious():
    a = np.array([[10.0, 2.0, -1.0, 4.0, 1.6, 1.5, 0.4]])
    b = a.copy()
    b[0, 2] += 0.75  # half the height
    assert bev_iou_lidar(a, b)[0, 0] == 1.0
    assert iou3d_lidar(a, b)[0, 0] == pytest.approx(1.0 / 3.0, abs=1e-12)
    assert iou3d_lidar(a, a)[0, 0] == 1.0
    rot = a.copy()
    rot[0, 6] += np.pi  # same footprint
    assert bev_iou_lidar(a, rot)[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_image_box_iou():
    a = np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 140.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    m = box_iou_2d(a, b)
    np.testing.assert_allclose(m[0], [50.0 / 150.0, 0.0, 1.0])  # no +1 in the areas; touching = 0
    assert np.all(m[1] == 0)
    np.testing.assert_allclose(box_iou_2d(a, b, criterion="a")[0], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(box_iou_2d_pairs(a[[0, 0]], b[[0, 2]]), [1 / 3, 1.0])
    with pytest.raises(ValueError, match="criterion"):
        box_iou_2d(a, b, criterion="bogus")  # type: ignore[arg-type]
