"""KITTI file formats (label/result, calib, velodyne, image size, id lists) and coordinate frames."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from hrnas.data.errors import DatasetError
from hrnas.tasks.kitti.boxes import (
    alpha_from_camera_boxes,
    box3d_to_2d_clipped,
    camera_box_corners,
    camera_to_lidar_boxes,
    fov_mask,
    lidar_to_camera_boxes,
    lidar_to_rect,
    predictions_to_kitti,
    project_rect_to_image,
    rect_to_lidar,
)
from hrnas.tasks.kitti.formats import (
    KittiFormatError,
    KittiObjects,
    format_calib,
    format_label_lines,
    parse_calib,
    parse_label_lines,
    read_calib,
    read_ids,
    read_image_size,
    read_label,
    read_velodyne,
    write_calib,
    write_label,
    write_velodyne,
)

# calib/000000.txt of the KITTI object training set.
CALIB_000000 = (
    "P0: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 0.000000000000e+00 "
    "0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 "
    "0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00\n"
    "P1: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.797842000000e+02 "
    "0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 "
    "0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00\n"
    "P2: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 4.575831000000e+01 "
    "0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 -3.454157000000e-01 "
    "0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.981016000000e-03\n"
    "P3: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.341081000000e+02 "
    "0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 2.330660000000e+00 "
    "0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.201153000000e-03\n"
    "R0_rect: 9.999128000000e-01 1.009263000000e-02 -8.511932000000e-03 -1.012729000000e-02 "
    "9.999406000000e-01 -4.037671000000e-03 8.470675000000e-03 4.123522000000e-03 "
    "9.999556000000e-01\n"
    "Tr_velo_to_cam: 6.927964000000e-03 -9.999722000000e-01 -2.757829000000e-03 "
    "-2.457729000000e-02 -1.162982000000e-03 2.749836000000e-03 -9.999955000000e-01 "
    "-6.127237000000e-02 9.999753000000e-01 6.931141000000e-03 -1.143899000000e-03 "
    "-3.321029000000e-01\n"
    "Tr_imu_to_velo: 9.999976000000e-01 7.553071000000e-04 -2.035826000000e-03 "
    "-8.086759000000e-01 -7.854027000000e-04 9.998898000000e-01 -1.482298000000e-02 "
    "3.195559000000e-01 2.024406000000e-03 1.482454000000e-02 9.998881000000e-01 "
    "-7.997231000000e-01\n"
    "\n"
)

# label_2/000000.txt, plus lines in the style of other training frames (cars, a truncated van, DontCare).
LABEL_LINES = [
    "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01",
    "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59",
    "Van 0.88 3 -2.02 0.00 190.07 106.08 336.82 2.00 1.82 4.43 -5.77 1.73 6.94 -2.71",
    "Cyclist 0.00 1 -2.46 329.60 172.74 398.49 243.49 1.72 0.78 1.71 -6.11 1.68 17.29 -2.80",
    "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10",
]
IMAGE_SHAPE = (375, 1242)


@pytest.fixture(scope="module")
def calib():
    return parse_calib(CALIB_000000.splitlines(), source="000000.txt")


# ------------------------------------------------------------------------------------------- labels


def test_label_fields_and_units():
    objs = parse_label_lines(LABEL_LINES)
    assert len(objs) == 5 and objs.score is None
    assert objs.name.tolist() == ["Pedestrian", "Car", "Van", "Cyclist", "DontCare"]
    np.testing.assert_array_equal(objs.occluded, [0, 0, 3, 1, -1])
    np.testing.assert_allclose(objs.bbox[0], [712.40, 143.00, 810.73, 307.92])
    np.testing.assert_allclose(objs.dimensions[0], [1.89, 0.48, 1.20])  # file order h, w, l
    np.testing.assert_allclose(objs.location[0], [1.84, 1.47, 8.41])
    # camera box [x, y, z, l, h, w, ry]
    np.testing.assert_allclose(objs.camera_boxes()[0], [1.84, 1.47, 8.41, 1.20, 1.89, 0.48, 0.01])


def test_label_round_trip_is_byte_exact(tmp_path: Path):
    path = tmp_path / "000000.txt"
    path.write_text("\n".join(LABEL_LINES) + "\n")
    objs = read_label(path)
    assert format_label_lines(objs) == LABEL_LINES
    out = tmp_path / "copy.txt"
    write_label(out, objs)
    assert out.read_text() == path.read_text()


def test_result_file_with_scores(tmp_path: Path):
    objs = parse_label_lines(LABEL_LINES[:4]).select([1, 3])
    objs.score = np.array([0.91234, 0.5])
    objs.truncated[:] = -1
    objs.occluded[:] = -1
    path = tmp_path / "r.txt"
    write_label(path, objs)
    first = path.read_text().splitlines()[0]
    assert first == "Car -1.00 -1 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59 0.9123"
    back = read_label(path, require_score=True)
    np.testing.assert_allclose(back.score, [0.9123, 0.5])
    np.testing.assert_allclose(back.camera_boxes(), objs.camera_boxes())


def test_empty_files(tmp_path: Path):
    path = tmp_path / "e.txt"
    path.write_text("\n\n")
    assert len(read_label(path)) == 0
    assert read_label(path, require_score=True).score.shape == (0,)
    write_label(path, KittiObjects.empty())
    assert path.read_text() == ""


def test_select_and_from_annos():
    objs = parse_label_lines(LABEL_LINES)
    cars = objs.select(objs.name == "Car")
    assert len(cars) == 1 and cars.name[0] == "Car"
    annos = {
        "name": objs.name,
        "truncated": objs.truncated,
        "occluded": objs.occluded,
        "alpha": objs.alpha,
        "bbox": objs.bbox,
        "dimensions": objs.dimensions[:, [2, 0, 1]],  # OpenPCDet info order l, h, w
        "location": objs.location,
        "rotation_y": objs.rotation_y,
    }
    back = KittiObjects.from_annos(annos)
    np.testing.assert_array_equal(back.dimensions, objs.dimensions)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70", "expected 15 or 16"),
        ("Bus 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59", "unknown object type"),
        ("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 abc -0.65 1.71 46.70 -1.59", "not a number"),
        ("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 nan -0.65 1.71 46.70 -1.59", "not finite"),
        ("Car 0.00 0.5 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59", "occluded"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "000007.txt"
    path.write_text(LABEL_LINES[0] + "\n" + line + "\n")
    with pytest.raises(KittiFormatError) as info:
        read_label(path)
    text = str(info.value)
    assert text.startswith(f"{path}:2:") and message in text and "\n" not in text
    assert isinstance(info.value, DatasetError) and isinstance(info.value, ValueError)


def test_result_file_needs_scores(tmp_path: Path):
    path = tmp_path / "000001.txt"
    path.write_text(LABEL_LINES[1] + " 0.5\n" + LABEL_LINES[1] + "\n")
    with pytest.raises(KittiFormatError, match=r"000001.txt:2: expected 16 fields, got 15"):
        read_label(path, require_score=True)
    with pytest.raises(KittiFormatError, match=r"000001.txt:2: mixes"):
        read_label(path)


# -------------------------------------------------------------------------------------------- calib


def test_calib_values(calib):
    assert calib.P2.shape == (3, 4) and calib.R0_rect.shape == (3, 3)
    assert calib.Tr_velo_to_cam.shape == (3, 4) and calib.Tr_imu_to_velo is not None
    assert calib.P2[0, 0] == 707.0493 and calib.P2[2, 3] == 4.981016e-03
    assert calib.Tr_velo_to_cam[2, 3] == -3.321029e-01
    np.testing.assert_allclose(calib.velo_to_rect() @ calib.rect_to_velo(), np.eye(4), atol=1e-12)


def test_calib_round_trip(tmp_path: Path, calib):
    assert format_calib(calib) == CALIB_000000
    path = tmp_path / "000000.txt"
    write_calib(path, calib)
    assert path.read_text() == CALIB_000000
    again = read_calib(path)
    np.testing.assert_array_equal(again.Tr_velo_to_cam, calib.Tr_velo_to_cam)


def test_calib_errors(tmp_path: Path):
    path = tmp_path / "000003.txt"
    path.write_text("\n".join(line for line in CALIB_000000.splitlines() if not line.startswith("Tr_velo")))
    with pytest.raises(KittiFormatError, match=r"000003.txt: calibration has no Tr_velo_to_cam"):
        read_calib(path)
    lines = CALIB_000000.splitlines()
    lines[4] = "R0_rect: 1 0 0 0 1 0 0 0"
    path.write_text("\n".join(lines))
    with pytest.raises(KittiFormatError, match=r"000003.txt:5: R0_rect needs 9 values, got 8"):
        read_calib(path)


def test_calib_tracking_spelling():
    lines = [
        line.replace("R0_rect:", "R_rect").replace("Tr_velo_to_cam:", "Tr_velo_cam")
        for line in CALIB_000000.splitlines()
    ]
    cal = parse_calib(lines)
    assert cal.R0_rect[0, 0] == 9.999128e-01 and cal.Tr_velo_to_cam[0, 0] == 6.927964e-03


# ------------------------------------------------------------------------- velodyne, images, ids


def test_velodyne_round_trip_and_errors(tmp_path: Path):
    pts = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    path = tmp_path / "000000.bin"
    write_velodyne(path, pts)
    assert path.stat().st_size == 1600
    back = read_velodyne(path)
    assert back.dtype == np.float32 and back.shape == (100, 4)
    np.testing.assert_array_equal(back, pts)

    path.write_bytes(pts.tobytes()[:-4])
    with pytest.raises(KittiFormatError, match=r"000000.bin: size 1596 bytes is not a multiple of 16"):
        read_velodyne(path)
    pts[7, 2] = np.nan
    pts[9, 0] = np.inf
    write_velodyne(path, pts)
    with pytest.raises(KittiFormatError, match=r"000000.bin: point 7 has a non-finite value \(2 bad points\)"):
        read_velodyne(path)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_image_size(tmp_path: Path):
    path = tmp_path / "000000.png"
    path.write_bytes(_png(1242, 375))
    assert read_image_size(path) == (375, 1242)
    path.write_bytes(b"not a png at all, really not")
    with pytest.raises(KittiFormatError, match="not a PNG"):
        read_image_size(path)


def test_read_ids(tmp_path: Path):
    path = tmp_path / "val.txt"
    path.write_text("000001\n000002\n\n000004")  # train.txt has no final newline either
    assert read_ids(path) == ["000001", "000002", "000004"]
    path.write_text("000001\n000002 000003\n")
    with pytest.raises(KittiFormatError, match=r"val.txt:2:"):
        read_ids(path)


def test_non_ascii_frame_lists_and_planes_are_one_line_errors(tmp_path: Path):
    from hrnas.tasks.kitti.gt_database import read_road_plane
    from hrnas.tasks.kitti.layout import list_frames

    (tmp_path / "ImageSets").mkdir()
    ids = tmp_path / "ImageSets" / "val.txt"
    ids.write_bytes("000001\n00000\u00e9\n".encode("latin-1"))
    with pytest.raises(KittiFormatError, match=r"val.txt: not an ASCII text file"):
        read_ids(ids)
    with pytest.raises(KittiFormatError, match=r"val.txt: not an ASCII text file"):
        list_frames(tmp_path, "val")
    plane = tmp_path / "000001.txt"
    plane.write_bytes("# Plane\nWidth 4\nHeight 1\n0 -1 0 1.6\u00b0\n".encode("latin-1"))
    with pytest.raises(KittiFormatError, match=r"000001.txt: not an ASCII text file"):
        read_road_plane(plane)


# --------------------------------------------------------------------------------------- frames


def test_label_to_lidar_to_label_round_trip(calib):
    objs = parse_label_lines(LABEL_LINES[:4])
    cam = objs.camera_boxes()
    lidar = camera_to_lidar_boxes(cam, calib)
    # 000000's pedestrian as OpenPCDet stores it in its infos (gt_boxes_lidar).
    np.testing.assert_allclose(
        lidar[0], [8.73138192, -1.85591746, -0.65469939, 1.2, 0.48, 1.89, -1.58079633], atol=1e-6
    )
    back = lidar_to_camera_boxes(lidar, calib)
    np.testing.assert_allclose(back, cam, atol=1e-9)
    # Random boxes over the whole range, yaw anywhere in [-pi, pi).
    rng = np.random.default_rng(0)
    n = 1000
    cam = np.column_stack(
        [
            rng.uniform(-30, 30, n),
            rng.uniform(-1, 3, n),
            rng.uniform(0, 70, n),
            rng.uniform(0.5, 12, n),
            rng.uniform(0.5, 4, n),
            rng.uniform(0.4, 3, n),
            rng.uniform(-np.pi, np.pi, n),
        ]
    )
    back = lidar_to_camera_boxes(camera_to_lidar_boxes(cam, calib), calib)
    np.testing.assert_allclose(back, cam, atol=1e-6, rtol=0)


def test_lidar_box_conventions(calib):
    cam = np.array([[2.0, 1.6, 20.0, 4.0, 1.5, 1.6, 0.0]])  # length along camera +x (to the right)
    lidar = camera_to_lidar_boxes(cam, calib)[0]
    assert lidar[6] == pytest.approx(-np.pi / 2)  # heading -pi/2: length along LiDAR -y (right)
    np.testing.assert_allclose(lidar[3:6], [4.0, 1.6, 1.5])  # dx = l, dy = w, dz = h
    bottom_rect = lidar_to_rect(lidar[None, :3] - [0, 0, 0.75], calib)
    np.testing.assert_allclose(bottom_rect[0], cam[0, :3], atol=1e-9)  # centre is h/2 above the bottom
    assert lidar[0] == pytest.approx(20.3, abs=0.2) and lidar[1] == pytest.approx(-2.0, abs=0.2)


def test_rect_lidar_points_are_inverse(calib):
    pts = np.random.default_rng(1).uniform(-50, 50, size=(200, 4))
    np.testing.assert_allclose(rect_to_lidar(lidar_to_rect(pts, calib), calib), pts[:, :3], atol=1e-9)


def test_projection_of_000000_pedestrian(calib):
    objs = parse_label_lines(LABEL_LINES[:1])
    cam = objs.camera_boxes()
    box = box3d_to_2d_clipped(cam, calib, IMAGE_SHAPE)[0]
    # The labelled 2D box is a tight box of the image, the projection a box of the 3D corners.
    np.testing.assert_allclose(box, objs.bbox[0], atol=12)
    assert alpha_from_camera_boxes(cam)[0] == pytest.approx(objs.alpha[0], abs=0.01)
    # Projection is P2 @ [x, y, z, 1] divided by its third component.
    uv, depth = project_rect_to_image(np.array([[1.84, 1.47, 8.41]]), calib)
    h = calib.P2 @ np.array([1.84, 1.47, 8.41, 1.0])
    np.testing.assert_allclose(uv[0], h[:2] / h[2])
    assert depth[0] == 8.41


def test_box_corners_and_clipping(calib):
    cam = np.array([[0.0, 2.0, 10.0, 4.0, 1.5, 2.0, np.pi / 2]])
    corners = camera_box_corners(cam)[0]
    # ry = pi/2: the length lies along camera z, the width along x; bottom at y = 2, top at y = 0.5.
    np.testing.assert_allclose(np.sort(np.unique(corners[:, 2].round(9))), [8.0, 12.0])
    np.testing.assert_allclose(np.sort(np.unique(corners[:, 0].round(9))), [-1.0, 1.0])
    np.testing.assert_allclose(np.sort(np.unique(corners[:, 1].round(9))), [0.5, 2.0])
    # A box far to the left is clipped to the image's left edge; no clipping without a shape.
    left = np.array([[-30.0, 1.6, 12.0, 4.0, 1.5, 1.6, 0.0]])
    clipped = box3d_to_2d_clipped(left, calib, IMAGE_SHAPE)[0]
    assert clipped[0] == 0.0 and clipped[2] == 0.0
    assert box3d_to_2d_clipped(left, calib, None)[0, 0] < 0


def test_fov_mask(calib):
    pts = np.array(
        [
            [10.0, 0.0, -1.0, 0.3],  # straight ahead: in view
            [-10.0, 0.0, -1.0, 0.3],  # behind
            [10.0, 30.0, -1.0, 0.3],  # far left, outside the image
            [20.0, -5.0, 0.0, 0.3],  # ahead, slightly right: in view
            [5.0, 0.0, 10.0, 0.3],  # far above the image
        ]
    )
    np.testing.assert_array_equal(fov_mask(pts, calib, IMAGE_SHAPE), [True, False, False, True, False])


def test_predictions_to_kitti(calib):
    objs = parse_label_lines(LABEL_LINES[:4])
    lidar = camera_to_lidar_boxes(objs.camera_boxes(), calib)
    lidar[:, 6] += 2 * math.pi  # decoded headings are not wrapped
    pred = predictions_to_kitti(lidar, [0.9, 0.8, 0.7, 0.6], objs.name, calib, IMAGE_SHAPE)
    np.testing.assert_allclose(pred.camera_boxes(), objs.camera_boxes(), atol=1e-9)
    assert np.all(pred.rotation_y >= -np.pi) and np.all(pred.rotation_y < np.pi)
    np.testing.assert_allclose(pred.alpha, objs.alpha, atol=0.01)
    np.testing.assert_allclose(pred.bbox, box3d_to_2d_clipped(objs.camera_boxes(), calib, IMAGE_SHAPE))
    assert np.all(pred.truncated == -1) and np.all(pred.occluded == -1)
    line = format_label_lines(pred.select([0]))[0]
    assert line.startswith("Pedestrian -1.00 -1 ") and line.endswith(" 0.9000")
