"""The KITTI LiDAR simulator: exact layout, determinism, atomic idempotent writes, and labels that agree
with the simulated points (containment, occlusion, projection, ground height)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hrnas.data.errors import DatasetError
from hrnas.demos.lidar import simulator as sim
from hrnas.demos.lidar.raycast import GROUND, Ground, ScannerConfig, Shape, cast
from hrnas.demos.lidar.scene import LABEL_SIZES, scene_from_boxes
from hrnas.tasks.kitti.boxes import (
    alpha_from_camera_boxes,
    camera_to_lidar_boxes,
    fov_mask,
    lidar_to_rect,
    project_rect_to_image,
)
from hrnas.tasks.kitti.formats import (
    KITTI_TYPES,
    format_label_lines,
    parse_label_lines,
    read_calib,
    read_ids,
    read_image_size,
    read_label,
    read_velodyne,
)

SMALL = ScannerConfig(num_azimuth=512, horizontal_fov_deg=120.0)
"""Reduced resolution for fast tests (about 5 k points per frame)."""


def small_dataset(root: Path, seed: int = 3, **kwargs) -> Path:
    kwargs = {"num_test": 1, "scanner": SMALL, "image_scale": 8, "progress": False, **kwargs}
    return sim.generate(root, 2, 1, seed, **kwargs)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("kitti") / "sim")


@pytest.fixture(scope="module")
def frame() -> sim.SimFrame:
    """One full-resolution frame (a full 360° sweep)."""
    return sim.simulate_frame(sim.frame_rng(0, "training", 1), image_scale=8)


def lidar_boxes_as_written(frame: sim.SimFrame) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR boxes of the labelled (non-DontCare) objects after a round trip through the file format,
    and their scene-object indices."""
    labels = parse_label_lines(format_label_lines(frame.labels))
    keep = labels.name != "DontCare"
    return camera_to_lidar_boxes(labels.camera_boxes()[keep], frame.calib), frame.label_object[keep]


def points_in_box(points: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    d = points[:, :3] - box[:3]
    c, s = np.cos(box[6]), np.sin(box[6])
    local_x = c * d[:, 0] + s * d[:, 1]
    local_y = -s * d[:, 0] + c * d[:, 1]
    return (
        (np.abs(local_x) <= box[3] / 2 + margin)
        & (np.abs(local_y) <= box[4] / 2 + margin)
        & (np.abs(d[:, 2]) <= box[5] / 2 + margin)
    )


# --------------------------------------------------------------------------------------------------
# Layout, readers, determinism, atomic and idempotent writing
# --------------------------------------------------------------------------------------------------


def test_layout_parses_with_the_kitti_readers(dataset: Path) -> None:
    assert read_ids(dataset / "ImageSets" / "train.txt") == ["000000", "000001"]
    assert read_ids(dataset / "ImageSets" / "val.txt") == ["000002"]
    assert read_ids(dataset / "ImageSets" / "trainval.txt") == ["000000", "000001", "000002"]
    assert read_ids(dataset / "ImageSets" / "test.txt") == ["000000"]
    image_shapes = {shape for shape, _ in sim.CALIBRATIONS.values()}
    for folder, ids, labelled in (("training", ["000000", "000001", "000002"], True), ("testing", ["000000"], False)):
        base = dataset / folder
        assert (base / "label_2").is_dir() == labelled
        for frame_id in ids:
            points = read_velodyne(base / "velodyne" / f"{frame_id}.bin")
            assert points.dtype == np.float32 and points.shape[1] == 4 and len(points) > 1000
            assert points[:, 3].min() >= 0.0 and points[:, 3].max() <= 1.0
            calib = read_calib(base / "calib" / f"{frame_id}.txt")
            shape = read_image_size(base / "image_2" / f"{frame_id}.png")
            assert shape in image_shapes
            assert any(np.array_equal(calib.P2, c.P2) for _, c in sim.CALIBRATIONS.values())
            if labelled:
                labels = read_label(base / "label_2" / f"{frame_id}.txt")
                assert len(labels) > 0 and set(labels.name) <= set(KITTI_TYPES)
                plane = (base / "planes" / f"{frame_id}.txt").read_text().splitlines()
                a, b, c, d = (float(v) for v in plane[3].split())
                assert b < -0.99 and 1.5 < d < 1.8  # normal up (camera y points down), camera ~1.65 m high
    meta = sim.read_meta(dataset)
    assert meta is not None and meta["counts"]["train"]["frames"] == 2
    assert "Car" not in meta["counts"]["test"]  # test labels are not disclosed


def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = small_dataset(tmp_path / "again")
    assert tree_digest(again) == tree_digest(dataset)
    other = small_dataset(tmp_path / "other", seed=4)
    a, b = tree_digest(dataset), tree_digest(other)
    assert a["training/velodyne/000000.bin"] != b["training/velodyne/000000.bin"]


def test_a_frame_does_not_depend_on_the_split_sizes(dataset: Path, tmp_path: Path) -> None:
    bigger = sim.generate(tmp_path / "bigger", 1, 3, 3, scanner=SMALL, image_scale=8, progress=False)
    for name in ("velodyne/000002.bin", "label_2/000002.txt", "image_2/000001.png"):
        assert (bigger / "training" / name).read_bytes() == (dataset / "training" / name).read_bytes()


def test_generate_is_idempotent_and_replaces_other_settings(tmp_path: Path) -> None:
    root = small_dataset(tmp_path / "sim", num_test=0)
    marker = root / "DONE"
    stamp = marker.stat().st_mtime_ns
    assert small_dataset(root, num_test=0) == root
    assert marker.stat().st_mtime_ns == stamp  # complete with the same settings: nothing rewritten
    small_dataset(root, num_test=2)
    assert read_ids(root / "ImageSets" / "test.txt") == ["000000", "000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]  # no staging or old folders left


def test_a_dataset_written_before_the_simulator_moved_is_reused(tmp_path: Path) -> None:
    root = small_dataset(tmp_path / "sim", num_test=0)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "generator": sim.FORMER_GENERATOR_NAMES[0]}))
    stamp = (root / "DONE").stat().st_mtime_ns
    assert sim.read_meta(root) is not None
    assert small_dataset(root, num_test=0) == root
    assert (root / "DONE").stat().st_mtime_ns == stamp  # the same files: nothing rewritten
    small_dataset(root, num_test=1)  # other settings: replaced, not refused as a foreign folder
    assert sim.read_meta(root)["generator"] == sim.GENERATOR_NAME


def test_partial_folder_is_not_taken_as_complete(tmp_path: Path) -> None:
    root = small_dataset(tmp_path / "sim", num_test=0)
    (root / "DONE").unlink()
    (root / "training" / "velodyne" / "000001.bin").unlink()
    assert sim.read_meta(root) is None
    small_dataset(root, num_test=0)
    assert (root / "training" / "velodyne" / "000001.bin").is_file() and sim.read_meta(root) is not None


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    real = sim.simulate_frame
    monkeypatch.setattr(sim, "simulate_frame", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        small_dataset(tmp_path / "sim")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a simulated KITTI dataset"):
        small_dataset(root)
    assert (root / "notes.txt").read_text() == "keep me"


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_azimuth"):
        ScannerConfig(num_azimuth=4)
    with pytest.raises(ValueError, match="horizontal_fov_deg"):
        ScannerConfig(horizontal_fov_deg=0.0)
    with pytest.raises(ValueError, match="num_train"):
        sim.generate("/nonexistent/never-written", 0, 1)
    with pytest.raises(ValueError, match="not simulated"):
        scene_from_boxes(["Tram"], np.array([[10, 0, -1, 3, 2, 3, 0]]))


# --------------------------------------------------------------------------------------------------
# Scanner and ray casting
# --------------------------------------------------------------------------------------------------


def test_full_sweep_has_kitti_like_point_count(frame: sim.SimFrame) -> None:
    assert 95_000 < len(frame.points) < 140_000
    in_fov = fov_mask(frame.points, frame.calib, frame.image_shape)
    assert 0.08 < in_fov.mean() < 0.35  # KITTI keeps ~15-18 % of a sweep in the camera view


def test_ground_is_173_below_the_sensor() -> None:
    scene = scene_from_boxes([], np.zeros((0, 7)))
    frame = sim.observe(scene, np.random.default_rng(0), SMALL, image_scale=8)
    z = frame.points[:, 2]
    assert np.all(frame.point_object == -1)
    assert abs(np.median(z) + 1.73) < 0.005 and np.abs(z + 1.73).max() < 0.2  # 2 cm range noise at ~2-3 degrees
    sloped = scene_from_boxes([], np.zeros((0, 7)), ground=Ground(slope_x=0.01, slope_y=-0.005))
    pts = sim.observe(sloped, np.random.default_rng(0), SMALL, image_scale=8).points
    expected = -1.73 + 0.01 * pts[:, 0] - 0.005 * pts[:, 1]
    assert np.median(np.abs(pts[:, 2] - expected)) < 0.01


def test_ground_height_in_a_street_scene(frame: sim.SimFrame) -> None:
    p = frame.points
    near = (np.hypot(p[:, 0], p[:, 1]) < 8.0) & (p[:, 2] < -1.45)
    assert near.sum() > 1000
    assert abs(np.median(p[near, 2]) + 1.73) < 0.05


def test_culling_matches_brute_force_intersection() -> None:
    rng = np.random.default_rng(0)
    shapes = []
    for _ in range(25):
        boxes = [[-a, a, -b, b, 0.0, c] for a, b, c in rng.uniform(0.2, 3.0, (2, 3))]
        spheres = [[0.0, 0.0, 3.0, rng.uniform(0.3, 2.0)]]
        xy = rng.uniform(-40, 40, 2)
        shapes.append(
            Shape(xy[0], xy[1], rng.uniform(-2.0, 1.0), rng.uniform(-np.pi, np.pi), boxes, [0, 1], spheres, [2])
        )
    dirs = ScannerConfig(num_azimuth=360).directions(0.3)
    for origin in (np.zeros(3), np.array([0.27, -0.06, -0.08])):
        hits = cast(origin, dirs, shapes, None, max_range=120.0, track={3})
        brute = np.full(len(dirs), np.inf)
        for shape in shapes:
            t, _, _ = shape.intersect(origin, dirs)
            brute = np.minimum(brute, np.where(t <= 120.0, t, np.inf))
        np.testing.assert_array_equal(hits.t, brute)
        t3, _, _ = shapes[3].intersect(origin, dirs)
        np.testing.assert_array_equal(np.sort(hits.footprint[3][0]), np.flatnonzero(t3 <= 120.0))


def test_cast_returns_the_first_hit() -> None:
    near = Shape(10.0, 0.0, -1.73, 0.0, [[-1, 1, -1, 1, 0, 2.8]], [0])  # top at z = 1.07
    far = Shape(20.0, 0.0, -1.73, 0.0, [[-1, 1, -1, 1, 0, 5.0]], [1])  # top at z = 3.27
    dirs = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.15], [0.0, 1.0, -0.5]])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hits = cast(np.zeros(3), dirs, [far, near], Ground(), max_range=120.0)
    assert hits.shape.tolist() == [1, 0, GROUND]  # the level ray hits the near box, the rising one passes over it
    np.testing.assert_allclose(hits.t[0], 9.0)
    np.testing.assert_allclose(hits.normal[0], [-1.0, 0.0, 0.0])
    np.testing.assert_allclose(hits.t[1] * dirs[1, 0], 19.0)
    np.testing.assert_allclose(hits.t[2] * dirs[2, 2], -1.73)
    assert hits.material.tolist() == [0, 1, -1]


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------


def test_labels_contain_their_objects_points(frame: sim.SimFrame) -> None:
    boxes, objects = lidar_boxes_as_written(frame)
    assert len(boxes) >= 5
    for box, k in zip(boxes, objects, strict=True):
        own = frame.points[frame.point_object == k]
        assert len(own) >= sim.MIN_POINTS
        assert points_in_box(own, box, margin=0.08).mean() >= 0.95
        # ... and the box holds few points of anything else (no object overlaps another).
        others = frame.points[(frame.point_object != k) & (frame.point_object >= 0)]
        assert points_in_box(others, box, margin=0.0).sum() == 0


def test_label_fields_follow_the_kitti_conventions(frame: sim.SimFrame) -> None:
    labels = frame.labels
    height, width = frame.image_shape
    objects = labels.select(labels.name != "DontCare")
    assert set(objects.name) <= {"Car", "Van", "Pedestrian", "Cyclist"}
    assert np.all((objects.truncated >= 0) & (objects.truncated <= 1))
    assert set(objects.occluded.tolist()) <= {0, 1, 2, 3}
    assert np.all((labels.bbox[:, [0, 2]] >= 0) & (labels.bbox[:, [0, 2]] <= width - 1))
    assert np.all((labels.bbox[:, [1, 3]] >= 0) & (labels.bbox[:, [1, 3]] <= height - 1))
    assert np.all(labels.bbox[:, 2] >= labels.bbox[:, 0]) and np.all(labels.bbox[:, 3] >= labels.bbox[:, 1])
    np.testing.assert_allclose(objects.alpha, alpha_from_camera_boxes(objects.camera_boxes()))
    for name, (_, _, limits) in LABEL_SIZES.items():
        dims = objects.dimensions[objects.name == name]
        for axis, (lo, hi) in enumerate(limits):
            assert np.all((dims[:, axis] >= lo - 1e-9) & (dims[:, axis] <= hi + 1e-9))
    dontcare = format_label_lines(labels.select(labels.name == "DontCare"))
    for line in dontcare:
        fields = line.split()
        assert fields[1:4] == ["-1", "-1", "-10"] and fields[8:] == ["-1", "-1", "-1", "-1000", "-1000", "-1000", "-10"]


def test_points_in_view_project_inside_their_2d_boxes(frame: sim.SimFrame) -> None:
    labels = frame.labels
    checked = 0
    for row in np.flatnonzero(labels.name != "DontCare"):
        own = frame.points[frame.point_object == frame.label_object[row]]
        own = own[fov_mask(own, frame.calib, frame.image_shape)]
        if len(own) == 0:
            continue
        uv, depth = project_rect_to_image(lidar_to_rect(own, frame.calib), frame.calib)
        x1, y1, x2, y2 = labels.bbox[row]
        inside = (uv[:, 0] >= x1 - 2) & (uv[:, 0] <= x2 + 2) & (uv[:, 1] >= y1 - 2) & (uv[:, 1] <= y2 + 2)
        assert inside.mean() >= 0.97 and np.all(depth > 0)
        checked += 1
    assert checked >= 5


def test_image_shows_the_objects(frame: sim.SimFrame) -> None:
    image = frame.image.astype(np.float64)
    assert image.shape == (*frame.image_shape, 3)
    # The sky (top rows, away from buildings) is bluish; objects differ from the road around them.
    assert image[:5, :, 2].mean() > image[:5, :, 0].mean() - 40
    assert image.std() > 20


def test_occluded_objects_get_higher_occlusion_levels() -> None:
    # A car at 12 m hides most of an identical car right behind it; a third car stands in the open.
    car = [3.9, 1.65, 1.55]
    boxes = np.array(
        [
            [12.0, 0.0, -1.73 + 0.775, *car, 0.0],
            [19.0, 0.2, -1.73 + 0.775, *car, 0.0],
            [19.0, 6.5, -1.73 + 0.775, *car, 0.3],
            [30.0, -3.2, -1.73 + 0.875, 0.8, 0.6, 1.75, 1.0],  # a pedestrian half behind ...
            [24.0, -2.6, -1.73 + 0.775, *car, 0.0],  # ... this car
        ]
    )
    scene = scene_from_boxes(["Car", "Car", "Car", "Pedestrian", "Car"], boxes)
    frame = sim.observe(scene, np.random.default_rng(0), ScannerConfig(num_azimuth=2048, horizontal_fov_deg=120.0))
    stats = frame.object_stats
    fraction = stats["blocked"] / stats["rays"]
    level = dict(zip(frame.label_object.tolist(), frame.labels.occluded.tolist(), strict=True))
    assert level[0] == 0 and level[2] == 0 and fraction[0] == 0.0
    assert level[1] >= 2 and fraction[1] > 0.5
    assert level[3] >= 1 and 0.1 < fraction[3] < 1.0
    assert sim.occlusion_level(np.array([0.0, 0.1, 0.11, 0.5, 0.51, 0.85, 0.9, 1.0])).tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]


def test_truncation_and_unlabelled_objects() -> None:
    boxes = np.array(
        [
            [15.0, 0.0, -0.955, 3.9, 1.6, 1.55, 0.0],  # fully in view
            [14.0, 12.6, -0.955, 3.9, 1.6, 1.55, 0.0],  # straddles the left image border
            [-15.0, 0.0, -0.955, 3.9, 1.6, 1.55, 0.0],  # behind the car: not in the image
            [118.0, 2.0, -0.955, 3.9, 1.6, 1.55, 0.0],  # far and tiny: a DontCare region
        ]
    )
    scene = scene_from_boxes(["Car"] * 4, boxes)
    frame = sim.observe(scene, np.random.default_rng(0), ScannerConfig(num_azimuth=1024))
    truncation = frame.object_stats["truncation"]
    assert truncation[0] == 0.0 and 0.2 < truncation[1] < 0.8 and truncation[2] == 1.0
    rows = dict(zip(frame.label_object.tolist(), frame.labels.name.tolist(), strict=True))
    assert rows == {0: "Car", 1: "Car", 3: "DontCare"}
    row1 = frame.label_object.tolist().index(1)
    assert frame.labels.bbox[row1, 0] == 0.0  # clipped at the left border


def test_moderate_cars_are_plentiful() -> None:
    # A val split of ~100 frames needs well over 41 cars at moderate difficulty; 3 frames must give >= 4.
    moderate = 0
    for index in range(3):
        frame = sim.simulate_frame(sim.frame_rng(0, "training", 300 + index), SMALL, image_scale=8)
        moderate += int((sim.moderate_mask(frame.labels) & (frame.labels.name == "Car")).sum())
    assert moderate >= 4


def test_meta_records_settings(dataset: Path) -> None:
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["generator"] == sim.GENERATOR_NAME and meta["seed"] == 3
    assert meta["scanner"]["num_azimuth"] == SMALL.num_azimuth and meta["image_scale"] == 8
