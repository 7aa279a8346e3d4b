"""KITTI dataset: frames, FOV/range filters, ground-truth database and sampling, augmentation, collate.

Every test writes a small dataset in the official layout with the ``formats.write_*`` helpers.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from hrnas.data.errors import DatasetError
from hrnas.engine.data import train_batches
from hrnas.tasks.kitti.augment import AugmentConfig, augment_scene, flip_scene, rotate_scene, scale_scene
from hrnas.tasks.kitti.boxes import (
    alpha_from_camera_boxes,
    box3d_to_2d_clipped,
    camera_to_lidar_boxes,
    fov_mask,
    lidar_to_camera_boxes,
    lidar_to_rect,
    predictions_to_kitti,
)
from hrnas.tasks.kitti.dataset import (
    KittiDataConfig,
    KittiDataset,
    box_centre_mask,
    collate_kitti,
    point_range_mask,
)
from hrnas.tasks.kitti.formats import (
    KittiCalib,
    KittiFormatError,
    KittiObjects,
    format_label_lines,
    parse_label_lines,
    write_calib,
    write_label,
    write_velodyne,
)
from hrnas.tasks.kitti.gt_database import (
    GtDatabase,
    GtSampler,
    GtSamplingConfig,
    build_gt_database,
    default_database_path,
    load_or_build_gt_database,
    object_difficulty,
    points_in_boxes,
    put_boxes_on_road_plane,
    read_road_plane,
)
from hrnas.tasks.kitti.iou import bev_iou_lidar

# The calibration of KITTI training frame 000000.
CALIB = KittiCalib(
    P2=np.array(
        [[707.0493, 0.0, 604.0814, 45.75831], [0.0, 707.0493, 180.5066, -0.3454157], [0.0, 0.0, 1.0, 0.004981016]]
    ),
    R0_rect=np.array(
        [
            [0.9999128, 0.01009263, -0.008511932],
            [-0.01012729, 0.9999406, -0.004037671],
            [0.008470675, 0.004123522, 0.9999556],
        ]
    ),
    Tr_velo_to_cam=np.array(
        [
            [0.006927964, -0.9999722, -0.002757829, -0.02457729],
            [-0.001162982, 0.002749836, -0.9999955, -0.06127237],
            [0.9999753, 0.006931141, -0.001143899, -0.3321029],
        ]
    ),
)
IMAGE_SHAPE = (375, 1242)
RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)

# name, camera box [x, y, z, l, h, w, ry] (label values, 2 decimals), truncated, occluded, points inside
Obj = tuple[str, tuple[float, ...], float, int, int]
FRAMES: dict[str, list[Obj]] = {
    "000000": [
        ("Car", (-3.0, 1.7, 15.0, 3.9, 1.5, 1.6, 0.3), 0.0, 0, 120),
        ("Pedestrian", (2.0, 1.7, 10.0, 0.8, 1.75, 0.6, -1.2), 0.0, 0, 60),
        ("Van", (6.0, 1.8, 25.0, 4.5, 2.0, 1.9, 1.57), 0.0, 1, 40),
    ],
    "000001": [
        ("Cyclist", (-2.5, 1.65, 12.0, 1.76, 1.73, 0.6, 2.9), 0.0, 0, 50),
        ("Car", (8.0, 1.7, 30.0, 4.0, 1.5, 1.7, -0.4), 0.9, 0, 80),  # truncation 0.9: difficulty -1
        ("Pedestrian", (-6.0, 1.7, 20.0, 0.8, 1.7, 0.6, 0.5), 0.0, 0, 2),  # 2 points: under min_points 5
    ],
    "000002": [
        ("Car", (1.0, 1.7, 40.0, 4.2, 1.6, 1.7, -2.5), 0.0, 0, 100),
        ("Car", (-8.0, 1.7, 22.0, 3.8, 1.5, 1.6, 0.0), 0.0, 1, 70),
    ],
    "000003": [],
    "000004": [
        ("Car", (0.5, 1.7, 18.0, 4.0, 1.55, 1.65, 3.1), 0.0, 0, 90),
        ("Pedestrian", (-1.5, 1.75, 8.0, 0.7, 1.8, 0.5, -3.1), 0.1, 1, 30),
        ("Van", (-7.0, 1.9, 35.0, 5.0, 2.2, 2.0, 0.2), 0.0, 0, 20),
    ],
    "000005": [("Car", (2.0, 1.7, 20.0, 3.9, 1.5, 1.6, 0.0), 0.0, 0, 0)],
}
DONTCARE = "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10"
SPLITS = {"train": ["000000", "000001", "000002", "000003"], "val": ["000004", "000005"]}

# Points outside the camera view or the range, added to every non-empty frame.
OUTSIDE = np.array(
    [
        [-10.0, 0.0, -1.0, 0.5],  # behind the camera
        [10.0, 30.0, -1.0, 0.5],  # far left, outside the image
        [5.0, 0.0, 10.0, 0.5],  # above the image
        [75.0, 0.0, 0.0, 0.5],  # in view but beyond x_max = 69.12
    ],
    dtype=np.float32,
)


def _png(width: int, height: int) -> bytes:
    """A black RGB image of ``width`` × ``height`` pixels as PNG bytes."""
    ok, png = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    return png.tobytes()


def _points_in_box(box: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points well inside a LiDAR box (80 % of each size), with reflectance."""
    local = rng.uniform(-0.4, 0.4, size=(n, 3)) * box[3:6]
    c, s = math.cos(box[6]), math.sin(box[6])
    xyz = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c, local[:, 2]], axis=1)
    return np.concatenate([xyz + box[:3], rng.uniform(0, 1, size=(n, 1))], axis=1).astype(np.float32)


def _objects(objs: list[Obj]) -> KittiObjects:
    if not objs:
        return KittiObjects.empty()
    cam = np.array([o[1] for o in objs])
    return KittiObjects(
        name=[o[0] for o in objs],
        truncated=[o[2] for o in objs],
        occluded=[o[3] for o in objs],
        alpha=np.round(alpha_from_camera_boxes(cam), 2),
        bbox=np.round(box3d_to_2d_clipped(cam, CALIB, IMAGE_SHAPE), 2),
        dimensions=cam[:, [4, 5, 3]],
        location=cam[:, :3],
        rotation_y=cam[:, 6],
    )


def _scene(objs: list[Obj], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ground = np.column_stack(
        [rng.uniform(2, 68, 600), rng.uniform(-30, 30, 600), np.full(600, -2.3), rng.uniform(0, 1, 600)]
    ).astype(np.float32)
    parts = [ground, OUTSIDE]
    if objs:
        boxes = camera_to_lidar_boxes(np.array([o[1] for o in objs]), CALIB)
        parts += [_points_in_box(boxes[k], o[4], rng) for k, o in enumerate(objs)]
    return np.concatenate(parts)


def make_kitti(root: Path, planes: bool = False) -> Path:
    """Write the frames of ``FRAMES`` (000005 with an empty scan) and one unlabelled test frame."""
    for folder in ("training", "testing"):
        for sub in ("velodyne", "calib", "image_2"):
            (root / folder / sub).mkdir(parents=True)
    (root / "training" / "label_2").mkdir()
    (root / "ImageSets").mkdir()
    if planes:
        (root / "training" / "planes").mkdir()
    for k, (frame_id, objs) in enumerate(FRAMES.items()):
        base = root / "training"
        points = _scene(objs, k) if frame_id != "000005" else np.zeros((0, 4), np.float32)
        write_velodyne(base / "velodyne" / f"{frame_id}.bin", points)
        write_calib(base / "calib" / f"{frame_id}.txt", CALIB)
        (base / "image_2" / f"{frame_id}.png").write_bytes(_png(IMAGE_SHAPE[1], IMAGE_SHAPE[0]))
        write_label(base / "label_2" / f"{frame_id}.txt", _objects(objs))
        if objs:
            with (base / "label_2" / f"{frame_id}.txt").open("a") as f:
                f.write(DONTCARE + "\n")
        if planes:
            (base / "planes" / f"{frame_id}.txt").write_text("# Matrix\nWIDTH 4\nHEIGHT 1\n0.0 -1.0 0.0 1.65\n")
    test = root / "testing"
    write_velodyne(test / "velodyne" / "000000.bin", _scene(FRAMES["000000"], 99))
    write_calib(test / "calib" / "000000.txt", CALIB)
    (test / "image_2" / "000000.png").write_bytes(_png(IMAGE_SHAPE[1], IMAGE_SHAPE[0]))
    for split, ids in SPLITS.items():
        (root / "ImageSets" / f"{split}.txt").write_text("\n".join(ids))
    (root / "ImageSets" / "test.txt").write_text("000000\n")
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_kitti(tmp_path / "kitti")


def no_sampling(**changes) -> KittiDataConfig:
    aug = AugmentConfig(gt_sampling=GtSamplingConfig(enabled=False), **changes)
    return KittiDataConfig(augment=aug)


# ------------------------------------------------------------------------------- frames and labels


def test_label_to_lidar_box_to_label_round_trip(root: Path):
    ds = KittiDataset(root, "val", training=False)
    assert ds.frame_ids == ["000004", "000005"] and len(ds) == 2
    frame = ds.load_frame(0)
    label = root / "training" / "label_2" / "000004.txt"
    lines = label.read_text().splitlines()
    # DontCare stays in the raw label, is not a box; Van is a box of the frame but not a target.
    assert frame.annos is not None and frame.annos.name.tolist() == ["Car", "Pedestrian", "Van", "DontCare"]
    assert frame.names.tolist() == ["Car", "Pedestrian", "Van"]
    assert np.all(frame.boxes[:, 6] >= -np.pi) and np.all(frame.boxes[:, 6] < np.pi)
    objects = frame.annos.select(frame.annos.name != "DontCare")
    np.testing.assert_allclose(
        lidar_to_camera_boxes(frame.boxes, frame.calib), objects.camera_boxes(), atol=1e-6, rtol=0
    )
    # Back through the prediction path to label text: the 3D fields and the type come back exactly.
    pred = predictions_to_kitti(frame.boxes, np.ones(3), frame.names, frame.calib, frame.image_shape)
    for got, want in zip(format_label_lines(pred), lines[:3], strict=True):
        g, w = got.split(), want.split()
        assert g[0] == w[0] and g[8:15] == w[8:15]
    np.testing.assert_allclose(
        parse_label_lines(format_label_lines(pred)).camera_boxes(), objects.camera_boxes(), atol=1e-6
    )

    sample = ds[0]
    assert sample["frame_id"] == "000004" and sample["image_shape"] == IMAGE_SHAPE
    assert len(sample["annos"]) == 4
    assert sample["gt_boxes"].dtype == torch.float32 and sample["gt_boxes"].shape == (2, 7)
    assert sample["gt_labels"].tolist() == [1, 2]  # Car, Pedestrian; the Van is not a class
    np.testing.assert_allclose(sample["gt_boxes"].numpy(), frame.boxes[:2], atol=1e-5)


def test_fov_and_range_filters(root: Path):
    ds = KittiDataset(root, "train", training=False)
    frame = ds.load_frame(0)
    raw = np.fromfile(root / "training" / "velodyne" / "000000.bin", dtype="<f4").reshape(-1, 4)
    in_view = fov_mask(raw, CALIB, IMAGE_SHAPE)
    np.testing.assert_array_equal(frame.points, raw[in_view])
    outside = raw[600:604]  # the OUTSIDE points follow the 600 ground points
    np.testing.assert_array_equal(outside, OUTSIDE)
    np.testing.assert_array_equal(fov_mask(outside, CALIB, IMAGE_SHAPE), [False, False, False, True])
    sample = ds[0]
    pts = sample["points"].numpy()
    expected = raw[in_view & point_range_mask(raw, RANGE)]
    np.testing.assert_array_equal(pts, expected)  # evaluation keeps the file order
    assert np.all(fov_mask(pts, CALIB, IMAGE_SHAPE)) and 0 < pts.shape[0] < raw.shape[0] - 3
    # Without the FOV filter only the range applies (x/y inclusive, z untested).
    wide = KittiDataset(root, "train", training=False, config=KittiDataConfig(fov_points_only=False))
    assert wide[0]["points"].shape[0] == int(point_range_mask(raw, RANGE).sum()) == raw.shape[0] - 2


def test_range_masks_are_inclusive():
    pts = np.array([[0.0, -39.68, 5.0], [69.12, 39.68, -9.0], [-1e-3, 0, 0], [0, 39.69, 0]])
    np.testing.assert_array_equal(point_range_mask(pts, RANGE), [True, True, False, False])
    boxes = np.zeros((3, 7))
    boxes[:, :3] = [[0.0, 0.0, -3.0], [69.12, 39.68, 1.0], [10.0, 0.0, 1.01]]
    np.testing.assert_array_equal(box_centre_mask(boxes, RANGE), [True, True, False])


def test_empty_frame_is_a_valid_sample(root: Path):
    ds = KittiDataset(root, "val", training=False)
    sample = ds[1]
    assert sample["points"].shape == (0, 4) and sample["gt_boxes"].shape == (1, 7)
    batch = collate_kitti([sample, ds[0]])
    assert batch["num_points"].tolist() == [0, ds[0]["points"].shape[0]]
    assert torch.all(batch["points"][:, 0] == 1)


def test_unlabelled_test_split(root: Path):
    ds = KittiDataset(root, "test", training=False)
    sample = ds[0]
    assert sample["annos"] is None and sample["gt_boxes"].shape == (0, 7) and sample["gt_labels"].shape == (0,)
    assert sample["points"].shape[0] > 0
    with pytest.raises(KittiFormatError, match=r"test.txt:1: frame 000000 has no .*label_2/000000.txt$"):
        KittiDataset(root, "test", training=True, config=no_sampling())


# ------------------------------------------------------------------------------------- bad input


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_id_without_files(root: Path):
    (root / "ImageSets" / "val.txt").write_text("000004\n\n000099\n")
    with pytest.raises(KittiFormatError) as info:
        KittiDataset(root, "val", training=False)
    text = _one_line(info)
    assert text.startswith(f"{root / 'ImageSets' / 'val.txt'}:3: frame 000099 has no ")
    assert text.endswith(str(root / "training" / "velodyne" / "000099.bin"))
    (root / "training" / "image_2" / "000004.png").unlink()
    (root / "ImageSets" / "val.txt").write_text("000004\n")
    with pytest.raises(KittiFormatError, match=r"val.txt:1: frame 000004 has no .*image_2/000004.png$"):
        KittiDataset(root, "val", training=False)
    with pytest.raises(KittiFormatError, match=r"ImageSets/nope.txt: no such split list \(known: test, train, val\)"):
        KittiDataset(root, "nope", training=False)


def test_non_finite_points_name_the_file(root: Path):
    path = root / "training" / "velodyne" / "000004.bin"
    pts = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    pts[3, 1] = np.inf
    write_velodyne(path, pts)
    ds = KittiDataset(root, "val", training=False)
    with pytest.raises(KittiFormatError) as info:
        ds[0]
    assert _one_line(info) == f"{path}: point 3 has a non-finite value (1 bad points)"
    path.write_bytes(pts.tobytes()[:-8])
    with pytest.raises(KittiFormatError, match=r"000004.bin: size \d+ bytes is not a multiple of 16"):
        ds[0]


def test_bad_label_line_names_file_and_line(root: Path):
    path = root / "training" / "label_2" / "000004.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("Pedestrian", "Bus")
    path.write_text("\n".join(lines) + "\n")
    ds = KittiDataset(root, "val", training=False)
    with pytest.raises(KittiFormatError) as info:
        ds[0]
    assert _one_line(info).startswith(f"{path}:2: unknown object type 'Bus'")


def test_config_validation():
    with pytest.raises(ValueError, match="kitti.classes: unknown class 'Bus'"):
        KittiDataConfig(classes=("Car", "Bus"))
    with pytest.raises(ValueError, match="kitti.point_cloud_range"):
        KittiDataConfig(point_cloud_range=(0, 0, 0, -1, 1, 1))
    with pytest.raises(ValueError, match="augment.flip_axes: unknown axis 'z'"):
        AugmentConfig(flip_axes=("z",))
    with pytest.raises(ValueError, match=r"gt_sampling.sample_groups.Car: expected an integer >= 0"):
        GtSamplingConfig(sample_groups={"Car": -1})


# ----------------------------------------------------------------------------------- augmentation


def _local(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    d = points[:, :3].astype(np.float64) - box[:3]
    c, s = math.cos(box[6]), math.sin(box[6])
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c, d[:, 2]], axis=1)


def test_transforms_move_points_with_their_boxes():
    rng = np.random.default_rng(0)
    boxes = np.array([[20.0, 5.0, -1.0, 4.0, 1.8, 1.5, 0.4], [35.0, -10.0, -0.8, 0.8, 0.6, 1.7, -2.9]])
    free = np.array([50.0, 20.0, 0.0, 5.0, 5.0, 1.0, 0.0])
    pts = np.concatenate([_points_in_box(b, 50, rng) for b in (*boxes, free)])
    before = points_in_boxes(pts, boxes)
    assert before.sum(axis=0).tolist() == [50, 50]
    for name, (p, b, factor) in {
        "flip": (*flip_scene(pts, boxes, "x"), 1.0),
        "flip_y": (*flip_scene(pts, boxes, "y"), 1.0),
        "rotate": (*rotate_scene(pts, boxes, 0.7), 1.0),
        "scale": (*scale_scene(pts, boxes, 1.05), 1.05),
    }.items():
        np.testing.assert_array_equal(points_in_boxes(p, b), before, err_msg=name)
        for j in range(2):
            inside = before[:, j]
            local_before = np.abs(_local(pts[inside], boxes[j]))
            np.testing.assert_allclose(np.abs(_local(p[inside], b[j])), local_before * factor, atol=1e-9, err_msg=name)
    flipped, fb = flip_scene(pts, boxes, "x")
    np.testing.assert_array_equal(flipped[:, 1], -pts[:, 1])
    np.testing.assert_array_equal(fb[:, 6], -boxes[:, 6])
    assert pts[0, 1] != flipped[0, 1]  # inputs untouched, outputs are copies


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])  # its sign flips under a mirror, not under rotation or scaling


def test_augment_scene_is_seeded_and_consistent():
    rng0 = np.random.default_rng(1)
    boxes = np.array([[20.0, 5.0, -1.0, 4.0, 1.8, 1.5, 3.0], [12.0, -3.0, -0.8, 0.8, 0.6, 1.7, -3.0]])
    pts = np.concatenate([_points_in_box(b, 40, rng0) for b in boxes])
    cfg = AugmentConfig()
    flips = set()
    for seed in range(12):
        p, b = augment_scene(pts, boxes, np.random.default_rng(seed), cfg)
        p2, b2 = augment_scene(pts, boxes, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(p, p2)
        np.testing.assert_array_equal(b, b2)
        assert p.dtype == np.float32 and b.dtype == np.float64
        assert np.all(b[:, 6] >= -np.pi) and np.all(b[:, 6] < np.pi)
        assert points_in_boxes(p, b).sum(axis=0).tolist() == [40, 40]
        scale = b[0, 3] / boxes[0, 3]
        assert 0.95 <= scale <= 1.05
        np.testing.assert_allclose(b[:, 3:6], boxes[:, 3:6] * scale)
        flips.add(bool(np.sign(_cross(b[0], b[1])) != np.sign(_cross(boxes[0], boxes[1]))))
    assert flips == {True, False}  # the flip happens in some frames, not all


def test_training_sample_keeps_object_points_in_boxes(root: Path):
    ds = KittiDataset(root, "train", training=True, config=no_sampling())
    frame = ds.load_frame(0)
    keep = np.isin(frame.names, ds.classes)
    counts = points_in_boxes(frame.points, frame.boxes[keep]).sum(axis=0)
    assert counts.tolist() == [120, 60]
    for seed in range(4):
        sample = ds.sample(0, np.random.default_rng(seed))
        assert sample["gt_labels"].tolist() == [1, 2]
        got = points_in_boxes(sample["points"].numpy(), sample["gt_boxes"].numpy().astype(np.float64))
        assert got.sum(axis=0).tolist() == counts.tolist()


def test_training_samples_are_deterministic_under_the_engine(root: Path):
    ds = KittiDataset(root, "train", training=True)
    torch.manual_seed(5)
    a = ds[0]
    torch.manual_seed(5)
    b = ds[0]
    torch.manual_seed(6)
    c = ds[0]
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["gt_boxes"], b["gt_boxes"])
    assert not torch.equal(a["points"], c["points"])

    def first(n: int) -> list[dict]:
        it = train_batches(ds, global_batch=2, seed=3, collate=collate_kitti)
        return [next(it) for _ in range(n)]

    one, two = first(3), first(3)
    for x, y in zip(one, two, strict=True):
        assert x["frame_id"] == y["frame_id"]
        assert torch.equal(x["points"], y["points"]) and torch.equal(x["gt_boxes"], y["gt_boxes"])
    resumed = next(train_batches(ds, global_batch=2, seed=3, start_step=2, collate=collate_kitti))
    assert torch.equal(resumed["points"], one[2]["points"])
    workers = next(train_batches(ds, global_batch=2, seed=3, workers=2, collate=collate_kitti))
    assert torch.equal(workers["points"], one[0]["points"]) and torch.equal(workers["gt_boxes"], one[0]["gt_boxes"])


def test_frames_without_boxes_are_resampled(root: Path):
    (root / "ImageSets" / "mixed.txt").write_text("000003\n000002\n")
    ds = KittiDataset(root, "mixed", training=True, config=no_sampling())
    sample = ds.sample(0, np.random.default_rng(0))
    assert sample["frame_id"] == "000002" and sample["gt_boxes"].shape[0] == 2
    keep = KittiDataset(root, "mixed", training=True, config=replace(no_sampling(), resample_empty_frames=False))
    assert keep.sample(0, np.random.default_rng(0))["gt_boxes"].shape == (0, 7)
    (root / "ImageSets" / "empty.txt").write_text("000003\n")
    ds = KittiDataset(root, "empty", training=True, config=no_sampling())
    with pytest.raises(DatasetError, match=r"empty.txt: 100 frames drawn in a row had no Car/Pedestrian/Cyclist box"):
        ds.sample(0, np.random.default_rng(0))


# ------------------------------------------------------------------------- ground-truth database


def test_database_contents_and_filters(root: Path):
    db = build_gt_database(root, "train")
    # every non-DontCare object of the 4 train frames, with the points generated inside it
    assert db.names.tolist() == ["Car", "Pedestrian", "Van", "Cyclist", "Car", "Pedestrian", "Car", "Car"]
    assert db.num_points.tolist() == [120, 60, 40, 50, 80, 2, 100, 70]
    assert db.frame_ids.tolist()[:3] == ["000000"] * 3
    assert db.difficulty[4] == -1 and db.difficulty[0] == 0
    for k in range(len(db)):
        pts = db.object_points(k)
        assert pts.dtype == np.float32 and pts.shape == (db.num_points[k], 4)
        # stored relative to the box centre: moved back, they are inside the box
        back = pts.astype(np.float64)
        back[:, :3] += db.boxes[k, :3]
        assert points_in_boxes(back, db.boxes[k : k + 1]).all()
    sampler = GtSampler(db, GtSamplingConfig(), ("Car", "Pedestrian", "Cyclist"))
    # the truncated car (difficulty -1) and the 2-point pedestrian are never drawn
    assert sampler.pool_sizes() == {"Car": 3, "Pedestrian": 1, "Cyclist": 1}
    loose = GtSamplingConfig(removed_difficulty=(), min_points={})
    assert GtSampler(db, loose, ("Car", "Pedestrian")).pool_sizes() == {"Car": 4, "Pedestrian": 2}


def test_points_in_boxes_matches_the_per_point_rule():
    rng = np.random.default_rng(3)
    boxes = np.column_stack(
        [
            rng.uniform(0, 20, 30),
            rng.uniform(-5, 5, 30),
            rng.uniform(-1, 0, 30),
            rng.uniform(0.5, 5, 30),
            rng.uniform(0.5, 2, 30),
            rng.uniform(1, 2, 30),
            rng.uniform(-np.pi, np.pi, 30),
        ]
    )
    pts = np.column_stack([rng.uniform(-3, 23, 4000), rng.uniform(-8, 8, 4000), rng.uniform(-2, 1, 4000)])
    pts[:30, :3] = boxes[:, :3] + [0, 0, 1] * boxes[:, 5:6] / 2  # on the top face: inside (z is inclusive)
    got = points_in_boxes(pts, boxes)
    want = np.zeros_like(got)
    for i, (x, y, z) in enumerate(pts):
        for j, (cx, cy, cz, dx, dy, dz, h) in enumerate(boxes):
            lx = (x - cx) * math.cos(h) + (y - cy) * math.sin(h)
            ly = -(x - cx) * math.sin(h) + (y - cy) * math.cos(h)
            want[i, j] = abs(z - cz) <= dz / 2 and abs(lx) < dx / 2 + 0.01 and abs(ly) < dy / 2 + 0.01
    np.testing.assert_array_equal(got, want)
    assert got.sum() > 100 and got[np.arange(30), np.arange(30)].all()
    assert points_in_boxes(np.zeros((0, 4)), boxes).shape == (0, 30)
    assert points_in_boxes(pts, np.zeros((0, 7))).shape == (4000, 0)


def test_object_difficulty_matches_the_reference_levels():
    objs = KittiObjects(
        name=["Car"] * 5,
        truncated=[0.0, 0.2, 0.4, 0.0, 0.6],
        occluded=[0, 1, 2, 0, 0],
        alpha=np.zeros(5),
        bbox=[[0, 0, 10, 39], [0, 0, 10, 30], [0, 0, 10, 30], [0, 0, 10, 22], [0, 0, 10, 100]],
        dimensions=np.ones((5, 3)),
        location=np.ones((5, 3)),
        rotation_y=np.zeros(5),
    )
    # heights are bottom - top + 1 = 40, 31, 31, 23, 101
    assert object_difficulty(objs).tolist() == [0, 1, 2, -1, -1]


def test_database_is_cached_and_rebuilt_when_its_source_changes(root: Path, monkeypatch: pytest.MonkeyPatch):
    path = default_database_path(root, "train")
    ds = KittiDataset(root, "train", training=True)
    assert path.is_file() and len(ds.sampler.database) == 8
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed, not left behind
    stamp = path.stat().st_mtime_ns

    import hrnas.tasks.kitti.gt_database as gtdb

    def fail(*args, **kwargs):
        raise AssertionError("the cached database should have been used")

    monkeypatch.setattr(gtdb, "build_gt_database", fail)
    again = KittiDataset(root, "train", training=True)
    assert len(again.sampler.database) == 8 and path.stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # the split changes: rebuilt with the new frames only
    (root / "ImageSets" / "train.txt").write_text("000000\n000002")
    db = load_or_build_gt_database(root, "train")
    assert db.frame_ids.tolist() == ["000000"] * 3 + ["000002"] * 2
    assert len(GtDatabase.load(path)) == 5

    # another root with the same database file: rebuilt from that root
    other = shutil.copytree(root, root.parent / "copy")
    (other / "ImageSets" / "train.txt").write_text("000001")
    db = load_or_build_gt_database(other, "train", path=path)
    assert db.frame_ids.tolist() == ["000001"] * 3
    assert str(other.resolve()) in GtDatabase.load(path).fingerprint

    # an unreadable cache file is replaced
    path.write_bytes(b"garbage")
    assert len(load_or_build_gt_database(root, "train")) == 5
    # a relative database path is under the root
    cfg = KittiDataConfig(augment=AugmentConfig(gt_sampling=GtSamplingConfig(db_path="cache/db.npz")))
    KittiDataset(root, "train", training=True, config=cfg)
    assert len(GtDatabase.load(root / "cache" / "db.npz")) == 5


def _db(boxes: np.ndarray, names: list[str], per_object: int, seed: int = 0) -> GtDatabase:
    rng = np.random.default_rng(seed)
    pts = [_points_in_box(np.r_[0, 0, 0, b[3:7]], per_object, rng) for b in boxes]
    n = len(names)
    return GtDatabase(
        frame_ids=np.array(["000000"] * n),
        names=np.array(names),
        boxes=boxes.astype(np.float64),
        num_points=np.full(n, per_object),
        difficulty=np.zeros(n, dtype=np.int64),
        offsets=np.arange(n + 1) * per_object,
        points=np.concatenate(pts),
    )


def test_gt_sampling_pastes_only_non_colliding_boxes_with_their_points():
    db_boxes = np.array(
        [
            [10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0],  # overlaps the next one: both dropped
            [11.0, 0.5, -1.0, 4.0, 2.0, 1.5, 0.3],
            [20.0, 5.0, -1.0, 4.0, 2.0, 1.5, 0.0],  # overlaps the scene's car: dropped
            [30.0, -5.0, -1.0, 4.0, 2.0, 1.5, 1.0],  # free
            [40.0, 10.0, -0.9, 0.8, 0.6, 1.7, -0.5],  # free (a pedestrian)
        ]
    )
    db = _db(db_boxes, ["Car", "Car", "Car", "Car", "Pedestrian"], per_object=7)
    sampler = GtSampler(db, GtSamplingConfig(sample_groups={"Car": 10, "Pedestrian": 10}), ("Car", "Pedestrian"))
    scene_boxes = np.array([[21.0, 5.5, -1.0, 4.0, 2.0, 1.5, 0.2], [50.0, 0.0, -1.0, 4.5, 1.9, 2.0, 0.0]])
    scene_names = np.array(["Car", "Van"])
    rng = np.random.default_rng(0)
    in_free_box = _points_in_box(db_boxes[3], 9, rng)  # scene points where a box is pasted: removed
    elsewhere = np.array([[60.0, 0.0, -1.0, 0.2], [21.0, 5.5, -1.0, 0.3]], dtype=np.float32)
    scene = np.concatenate([in_free_box, elsewhere])

    points, boxes, names = sampler(scene, scene_boxes, scene_names, np.random.default_rng(1))
    assert boxes.shape == (4, 7) and names.tolist()[:2] == ["Car", "Van"]
    new = boxes[2:]
    assert sorted(map(tuple, new)) == sorted(map(tuple, db_boxes[3:]))
    assert sorted(names[2:].tolist()) == ["Car", "Pedestrian"]
    # no pasted box overlaps another box in BEV
    iou = bev_iou_lidar(boxes, boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() == 0
    # object points first (7 each), then the scene points that were not inside a pasted box
    assert points.shape == (14 + 2, 4) and points.dtype == np.float32
    np.testing.assert_array_equal(points[14:], elsewhere)
    assert points_in_boxes(points, new).sum(axis=0).tolist() == [7, 7]
    # the scene is not modified and the inputs come back unchanged when nothing is drawn
    assert scene.shape == (11, 4)
    empty = GtSampler(db, GtSamplingConfig(sample_groups={"Car": 0}), ("Car",))
    p, b, n = empty(scene, scene_boxes, scene_names, np.random.default_rng(0))
    assert p is scene and b.shape == (2, 7) and n.tolist() == ["Car", "Van"]


def test_gt_sampling_draws_the_configured_count():
    rng = np.random.default_rng(0)
    # 40 cars on a grid, far enough apart never to collide
    grid = np.array([[5.0 + 6 * (k % 10), -20.0 + 10 * (k // 10), -1.0, 3.9, 1.6, 1.5, 0.0] for k in range(40)])
    db = _db(grid, ["Car"] * 40, per_object=5)
    sampler = GtSampler(db, GtSamplingConfig(), ("Car", "Pedestrian", "Cyclist"))
    _, boxes, names = sampler(np.zeros((0, 4), np.float32), np.zeros((0, 7)), np.zeros(0, np.str_), rng)
    assert boxes.shape == (15, 7) and set(names.tolist()) == {"Car"}
    limited = GtSampler(db, GtSamplingConfig(limit_whole_scene=True), ("Car",))
    scene = np.array([[100.0, 0.0, -1.0, 3.9, 1.6, 1.5, 0.0]] * 1)
    _, boxes, _ = limited(np.zeros((0, 4), np.float32), scene, np.array(["Car"]), rng)
    assert boxes.shape == (1 + 14, 7)


def test_dataset_training_sample_with_gt_sampling(root: Path):
    ds = KittiDataset(root, "train", training=True)
    frame = ds.load_frame(2)
    sample = ds.sample(2, np.random.default_rng(0))
    boxes = sample["gt_boxes"].numpy().astype(np.float64)
    labels = sample["gt_labels"].numpy()
    # the two own cars (the database copies of them collide and are dropped) plus the car of 000000,
    # the pedestrian of 000000 and the cyclist of 000001, each pasted with all its points
    assert frame.boxes.shape[0] == 2 and boxes.shape[0] == 5
    assert sorted(labels.tolist()) == [1, 1, 1, 2, 3]
    iou = bev_iou_lidar(boxes, boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() == 0
    counts = points_in_boxes(sample["points"].numpy(), boxes).sum(axis=0)
    assert sorted(counts.tolist()) == [50, 60, 70, 100, 120]


def test_road_plane(tmp_path: Path):
    root = make_kitti(tmp_path / "kitti", planes=True)
    plane = read_road_plane(root / "training" / "planes" / "000000.txt")
    np.testing.assert_allclose(plane, [0.0, -1.0, 0.0, 1.65])
    box = np.array([[20.0, 0.0, 3.0, 4.0, 1.6, 1.5, 0.0]])
    moved, lowered = put_boxes_on_road_plane(box, plane, CALIB)
    bottom = moved[:, :3] - [0, 0, 0.75]
    rect = lidar_to_rect(bottom, CALIB)
    assert abs(plane[:3] @ rect[0] + plane[3]) < 1e-3  # the bottom centre is on the plane
    assert lowered[0] == pytest.approx(box[0, 2] - moved[0, 2])
    ds = KittiDataset(root, "train", training=True)
    assert ds.load_frame(0).road_plane is not None
    (root / "training" / "planes" / "000001.txt").unlink()
    with pytest.raises(KittiFormatError, match=r"train.txt:2: frame 000001 has no .*planes/000001.txt"):
        KittiDataset(root, "train", training=True)
    assert KittiDataset(root, "train", training=False).load_frame(0).road_plane is None
    (root / "training" / "planes" / "000000.txt").write_text("# Matrix\nWIDTH 4\n")
    with pytest.raises(KittiFormatError, match=r"000000.txt: expected the plane coefficients on line 4"):
        read_road_plane(root / "training" / "planes" / "000000.txt")


# ------------------------------------------------------------------------------------------ collate


def test_collate_shapes(root: Path):
    ds = KittiDataset(root, "train", training=False)
    samples = [ds[i] for i in range(3)]
    batch = collate_kitti(samples)
    n = [s["points"].shape[0] for s in samples]
    assert batch["batch_size"] == 3 and batch["num_points"].tolist() == n
    assert batch["points"].shape == (sum(n), 5) and batch["points"].dtype == torch.float32
    assert batch["points"][:, 0].tolist() == [0.0] * n[0] + [1.0] * n[1] + [2.0] * n[2]
    for b, cloud in enumerate(batch["points"][:, 1:].split(batch["num_points"].tolist())):
        assert torch.equal(cloud, samples[b]["points"])
    m = [s["gt_boxes"].shape[0] for s in samples]
    assert m == [2, 3, 2] and batch["gt_boxes"].shape == (3, 3, 8) and batch["num_boxes"].tolist() == m
    assert torch.equal(batch["gt_boxes"][0, :2, :7], samples[0]["gt_boxes"])
    assert torch.all(batch["gt_boxes"][0, 2] == 0) and torch.all(batch["gt_boxes"][2, 2] == 0)
    assert batch["gt_boxes"][1, :, 7].tolist() == [3.0, 1.0, 2.0]  # Cyclist, Car, Pedestrian
    assert batch["image_shape"].tolist() == [list(IMAGE_SHAPE)] * 3
    assert batch["frame_id"] == ["000000", "000001", "000002"] and len(batch["calib"]) == 3
    padded = collate_kitti([ds[3], ds[0]])  # frame 000003 has no objects: zero rows, zero padding
    assert padded["gt_boxes"].shape == (2, 2, 8) and padded["num_boxes"].tolist() == [0, 2]
    assert torch.all(padded["gt_boxes"][0] == 0)
    assert collate_kitti([ds[3]])["gt_boxes"].shape == (1, 0, 8)


@pytest.mark.parametrize("training", [False, True])
def test_distributed_sampler_shards_cover_the_split(root: Path, training: bool):
    ds = KittiDataset(root, "train", training=training)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=collate_kitti, num_workers=0)
        for batch in loader:
            assert batch["points"].shape[1] == 5 and batch["gt_boxes"].shape[2] == 8
            assert batch["batch_size"] == 2 and batch["num_points"].sum() == batch["points"].shape[0]
            seen.extend(batch["frame_id"])
    if not training:  # training may replace a frame left without boxes by another
        assert sorted(seen) == ds.frame_ids
    assert len(seen) == len(ds)
