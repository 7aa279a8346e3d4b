"""A deterministic LiDAR + camera simulator that writes a dataset in the exact KITTI object layout.

No KITTI data exists on the machines this project is tested on, so the detection pipeline is
exercised on simulated frames written in the official layout and file formats::

    ROOT/ImageSets/{train,val,trainval}.txt (+ test.txt when num_test > 0)
    ROOT/training/{velodyne,calib,image_2,label_2,planes}/NNNNNN.*
    ROOT/testing/{velodyne,calib,image_2}/NNNNNN.*          (when num_test > 0)
    ROOT/meta.json, ROOT/DONE                               generator settings and counts; completion marker

Each frame (see :func:`simulate_frame`):

* **Scene**: a random street (:mod:`hrnas.demos.lidar.scene`): cars, vans, pedestrians and
  cyclists of KITTI-like sizes and headings, placed without overlap, plus buildings, sidewalks,
  street lights, signs, trees, hedges and fences, on a gently sloped ground plane.
* **LiDAR**: an HDL-64E-like scanner 1.73 m above the ground (:mod:`hrnas.demos.lidar.raycast`);
  each ray returns its first hit (true occlusion), with Gaussian range noise, material-dependent
  reflectance (scaled by the incidence angle) and dropout (glass, foliage). ``velodyne/*.bin`` holds
  the full sweep, float32 ``x, y, z, reflectance`` (reflectance in steps of 0.01 as in KITTI).
* **Calibration**: one of two real KITTI calibrations (drive 2011_09_26 with 1242x375 images, and
  the one of training frame 000000 with 1224x370 images), so frames differ in image size and
  calibration as real ones do.
* **Labels** (``label_2``): for every object that can be seen in ``image_2``: truncation = fraction
  of the object's volume (a 6x6x6 grid in its box) outside the image or behind the camera;
  occlusion level from the fraction ``f`` of the LiDAR rays that would hit the object but first hit
  another shape (0: f <= 0.1, 1: f <= 0.5, 2: f <= 0.85, 3: more); alpha; the 2D box = the projected 3D
  box clipped to the image (as the evaluation derives it for predictions); h w l; bottom-centre
  location in the rectified camera frame; rotation_y. Objects with fewer than ``MIN_POINTS`` LiDAR
  returns or a 2D box lower than ``DONTCARE_HEIGHT`` px become ``DontCare`` regions, as far and tiny
  objects are in KITTI; objects hidden completely or outside the image are not labelled.
* **Camera image** (``image_2``): the same scene ray-cast from camera 2 at reduced resolution
  (Lambert shading, sky, distance haze), upsampled to the full image size.
* **Road plane** (``planes``): the ground plane in the rectified camera frame, in the format
  OpenPCDet reads for ground-truth sampling.

Every frame draws from its own generator seeded by ``(seed, folder, index)``: a frame does not depend
on how many others are generated, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from hrnas.data.errors import DatasetError
from hrnas.demos.lidar.raycast import GROUND, NO_HIT, ScannerConfig, cast
from hrnas.demos.lidar.scene import Scene, SceneConfig, sample_scene
from hrnas.tasks.kitti.boxes import (
    alpha_from_camera_boxes,
    box3d_to_2d_clipped,
    lidar_to_camera_boxes,
    lidar_to_rect,
    project_rect_to_image,
)
from hrnas.tasks.kitti.formats import KittiCalib, KittiObjects, write_calib, write_label, write_velodyne
from hrnas.utils.atomic import atomic_folder
from hrnas.utils.errors import parse_json_text
from hrnas.utils.progress import progress as progress_bar

__all__ = [
    "CALIBRATIONS",
    "FAST_SCANNER",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "SimFrame",
    "generate",
    "frame_rng",
    "label_scene",
    "moderate_mask",
    "observe",
    "occlusion_level",
    "read_meta",
    "render_image",
    "road_plane",
    "scan",
    "simulate_frame",
]

GENERATOR_NAME = "hrnas.demos.lidar.simulator"
GENERATOR_VERSION = 1
FORMER_GENERATOR_NAMES = ("hrnas.data.kitti.simulator",)
"""Names the same simulator wrote into ``meta.json`` before it moved (same files for the same settings):
datasets carrying them are read, reused and replaced like the simulator's own."""
MIN_POINTS = 3
"""Objects with fewer LiDAR returns than this are not annotated in 3D (DontCare or nothing)."""
DONTCARE_HEIGHT = 12.0
"""Objects whose 2D box is lower than this (px) become DontCare regions."""
OCCLUSION_THRESHOLDS = (0.1, 0.5, 0.85)
"""Blocked-ray fractions separating occlusion levels 0 | 1 | 2 | 3."""
FAST_SCANNER = ScannerConfig(num_azimuth=1024, horizontal_fov_deg=110.0)
"""A reduced scanner for quick demos: half the azimuth resolution, only the sector the camera sees."""

_TR_IMU_TO_VELO = [
    [9.999976e-01, 7.553071e-04, -2.035826e-03, -8.086759e-01],
    [-7.854027e-04, 9.998898e-01, -1.482298e-02, 3.195559e-01],
    [2.024406e-03, 1.482454e-02, 9.998881e-01, -7.997231e-01],
]


def _kitti_calib(
    focal: float,
    centre: tuple[float, float],
    p1_x: float,
    p2_t: tuple[float, float, float],
    p3_t: tuple[float, float, float],
    r0_rect: list[list[float]],
    tr_velo_to_cam: list[list[float]],
) -> KittiCalib:
    """A KITTI calibration from its published values (the P matrices share one intrinsic matrix)."""
    k = np.array([[focal, 0.0, centre[0]], [0.0, focal, centre[1]], [0.0, 0.0, 1.0]])

    def proj(t: tuple[float, float, float]) -> np.ndarray:
        return np.concatenate([k, np.asarray(t, dtype=np.float64)[:, None]], axis=1)

    return KittiCalib(
        P0=proj((0.0, 0.0, 0.0)),
        P1=proj((p1_x, 0.0, 0.0)),
        P2=proj(p2_t),
        P3=proj(p3_t),
        R0_rect=np.asarray(r0_rect, dtype=np.float64),
        Tr_velo_to_cam=np.asarray(tr_velo_to_cam, dtype=np.float64),
        Tr_imu_to_velo=np.asarray(_TR_IMU_TO_VELO, dtype=np.float64),
    )


CALIBRATIONS: dict[str, tuple[tuple[int, int], KittiCalib]] = {
    "2011_09_26": (
        (375, 1242),
        _kitti_calib(
            7.215377e02,
            (6.095593e02, 1.728540e02),
            -3.875744e02,
            (4.485728e01, 2.163791e-01, 2.745884e-03),
            (-3.395242e02, 2.199936e00, 2.729905e-03),
            [
                [9.999239e-01, 9.837760e-03, -7.445048e-03],
                [-9.869795e-03, 9.999421e-01, -4.278459e-03],
                [7.402527e-03, 4.351614e-03, 9.999631e-01],
            ],
            [
                [7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
                [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
                [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01],
            ],
        ),
    ),
    "training_000000": (
        (370, 1224),
        _kitti_calib(
            7.070493e02,
            (6.040814e02, 1.805066e02),
            -3.797842e02,
            (4.575831e01, -3.454157e-01, 4.981016e-03),
            (-3.341081e02, 2.330660e00, 3.201153e-03),
            [
                [9.999128e-01, 1.009263e-02, -8.511932e-03],
                [-1.012729e-02, 9.999406e-01, -4.037671e-03],
                [8.470675e-03, 4.123522e-03, 9.999556e-01],
            ],
            [
                [6.927964e-03, -9.999722e-01, -2.757829e-03, -2.457729e-02],
                [-1.162982e-03, 2.749836e-03, -9.999955e-01, -6.127237e-02],
                [9.999753e-01, 6.931141e-03, -1.143899e-03, -3.321029e-01],
            ],
        ),
    ),
}
"""Real KITTI calibrations ``name -> ((H, W) of image_2, calib)``; a frame uses the first with
probability 0.7."""

_FOLDER_STREAM = {"training": 0, "testing": 1}


@dataclass(eq=False)
class SimFrame:
    """One simulated frame.

    Attributes:
        points: ``(N, 4)`` float32 ``x, y, z, reflectance`` (LiDAR frame).
        point_object: ``(N,)`` int64, index into ``scene.objects`` of the object each point lies on,
            -1 for ground and clutter.
        labels: the ``label_2`` objects (labelled objects first, then DontCare).
        label_object: ``(len(labels),)`` int64 index into ``scene.objects`` of each label.
        calib: the calibration; ``image_shape``: ``(H, W)`` of ``image``.
        image: ``(H, W, 3)`` uint8 RGB camera image.
        plane: ``(4,)`` road plane ``a, b, c, d`` (``a x + b y + c z + d = 0``, rectified camera frame,
            normal pointing up, i.e. ``b < 0``).
        object_stats: per scene object: ``rays`` (would hit it), ``blocked`` (first hit elsewhere),
            ``points`` (returns on it), ``truncation``.
        scene: the simulated scene.
    """

    points: np.ndarray
    point_object: np.ndarray
    labels: KittiObjects
    label_object: np.ndarray
    calib: KittiCalib
    image_shape: tuple[int, int]
    image: np.ndarray
    plane: np.ndarray
    object_stats: dict[str, np.ndarray]
    scene: Scene


def frame_rng(seed: int, folder: str, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of ``training``/``testing``: independent of all other frames."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _FOLDER_STREAM[folder], int(index)]))


def scan(
    scene: Scene, scanner: ScannerConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Simulate one LiDAR sweep of ``scene``.

    Returns:
        ``points`` ``(N, 4)`` float32, ``point_object`` ``(N,)`` (see :class:`SimFrame`) and per-object
        ``rays``/``blocked``/``points`` counts ``(num_objects,)``.
    """
    step = 2.0 * np.pi / scanner.num_azimuth
    dirs = scanner.directions(azimuth_offset=float(rng.uniform(0.0, step)))
    shape_of = {obj.shape: k for k, obj in enumerate(scene.objects)}
    hits = cast(np.zeros(3), dirs, scene.shapes, scene.ground, scanner.max_range, track=set(shape_of))
    n_obj = len(scene.objects)
    rays = np.zeros(n_obj, dtype=np.int64)
    blocked = np.zeros(n_obj, dtype=np.int64)
    for shape_index, k in shape_of.items():
        idx, _ = hits.footprint[shape_index]
        rays[k] = idx.size
        first = hits.shape[idx]
        blocked[k] = int(((first >= 0) & (first != shape_index)).sum())
    valid = np.flatnonzero((hits.shape != NO_HIT) & (hits.t >= scanner.min_range))
    owner = hits.shape[valid]
    t = hits.t[valid]
    d = dirs[valid]
    material = hits.material[valid]
    on_ground = owner == GROUND
    if on_ground.any():
        p = d[on_ground] * t[on_ground, None]
        material[on_ground] = scene.ground_material(p[:, 0], p[:, 1])
    props = scene.materials[material]
    keep = rng.random(valid.size) >= props[:, 4]
    owner, t, d, props = owner[keep], t[keep], d[keep], props[keep]
    normal = hits.normal[valid][keep]
    t_noisy = t + rng.normal(0.0, scanner.range_noise, t.size)
    xyz = d * t_noisy[:, None]
    cos_inc = np.abs((d * normal).sum(axis=1))
    reflect = props[:, 0] * (0.55 + 0.45 * cos_inc) * (1.0 + rng.normal(0.0, 0.08, t.size))
    reflect = np.round(np.clip(reflect, 0.0, 0.99), 2)
    points = np.concatenate([xyz, reflect[:, None]], axis=1).astype(np.float32)
    object_of_shape = np.full(len(scene.shapes) + 2, -1, dtype=np.int64)
    for shape_index, k in shape_of.items():
        object_of_shape[shape_index] = k
    point_object = np.where(owner >= 0, object_of_shape[np.maximum(owner, 0)], -1)
    counts = np.bincount(point_object[point_object >= 0], minlength=n_obj)[:n_obj]
    return points, point_object, {"rays": rays, "blocked": blocked, "points": counts}


def occlusion_level(blocked_fraction: np.ndarray | float) -> np.ndarray:
    """KITTI occlusion level 0..3 from the fraction of an object's rays blocked by other shapes
    (thresholds :data:`OCCLUSION_THRESHOLDS`, upper bounds inclusive)."""
    f = np.asarray(blocked_fraction, dtype=np.float64)
    return np.searchsorted(np.asarray(OCCLUSION_THRESHOLDS), f, side="left").astype(np.int64)


def _box_grid(boxes: np.ndarray, steps: int = 6) -> np.ndarray:
    """``(N, steps**3, 3)`` points on a regular grid filling LiDAR boxes ``[x, y, z, l, w, h, yaw]``."""
    u = np.linspace(-0.5, 0.5, steps)
    g = np.stack(np.meshgrid(u, u, u, indexing="ij"), axis=-1).reshape(-1, 3)
    local = g[None] * boxes[:, None, 3:6]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1] + boxes[:, None, 0]
    y = s * local[..., 0] + c * local[..., 1] + boxes[:, None, 1]
    z = local[..., 2] + boxes[:, None, 2]
    return np.stack([x, y, z], axis=-1)


def label_scene(
    scene: Scene, stats: dict[str, np.ndarray], calib: KittiCalib, image_shape: tuple[int, int]
) -> tuple[KittiObjects, np.ndarray, np.ndarray]:
    """The ``label_2`` objects of a scanned scene (rules in the module docstring).

    Args:
        stats: per-object ``rays``, ``blocked`` and ``points`` from :func:`scan`.
        image_shape: ``(H, W)`` of ``image_2``.

    Returns:
        ``(labels, label_object, truncation)``: labels (objects then DontCare regions), the scene
        object index of each label, and the truncation of every scene object.
    """
    height, width = image_shape
    n_obj = len(scene.objects)
    if n_obj == 0:
        return KittiObjects.empty(), np.zeros(0, dtype=np.int64), np.zeros(0)
    boxes = np.stack([obj.box for obj in scene.objects])
    cam = lidar_to_camera_boxes(boxes, calib)
    grid = _box_grid(boxes)
    rect = lidar_to_rect(grid.reshape(-1, 3), calib)
    uv, depth = project_rect_to_image(rect, calib)
    uv, depth = uv.reshape(n_obj, -1, 2), depth.reshape(n_obj, -1)
    front = depth >= 0.1
    with np.errstate(invalid="ignore"):
        inside = front & (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height)
    truncation = 1.0 - inside.mean(axis=1)
    corner_depth = lidar_to_rect(_box_grid(boxes, steps=2).reshape(-1, 3), calib)[:, 2].reshape(n_obj, 8)
    bbox = box3d_to_2d_clipped(cam, calib, image_shape)
    for k in np.flatnonzero((corner_depth < 0.1).any(axis=1) & front.any(axis=1)):
        # Part of the box is behind the camera: take the extent of the grid points in front of it.
        pts = uv[k][front[k]]
        lo = np.clip(pts.min(axis=0), 0, [width - 1, height - 1])
        hi = np.clip(pts.max(axis=0), 0, [width - 1, height - 1])
        bbox[k] = [lo[0], lo[1], hi[0], hi[1]]
    box_height = bbox[:, 3] - bbox[:, 1]
    rays, blocked, points = stats["rays"], stats["blocked"], stats["points"]
    blocked_fraction = np.where(rays > 0, blocked / np.maximum(rays, 1), 1.0)
    occlusion = occlusion_level(blocked_fraction)
    alpha = alpha_from_camera_boxes(cam)
    labelled, dontcare = [], []
    for k in range(n_obj):
        if truncation[k] >= 0.98:
            continue
        hidden = rays[k] > 0 and blocked[k] == rays[k]
        if points[k] >= MIN_POINTS and box_height[k] >= DONTCARE_HEIGHT:
            labelled.append(k)
        elif not hidden and box_height[k] >= 4.0:
            dontcare.append(k)
    lab = np.asarray(labelled, dtype=np.int64)
    n_dc = len(dontcare)
    # DontCare lines carry the official sentinels: -1 -1 -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10.
    labels = KittiObjects(
        name=np.asarray([scene.objects[k].name for k in labelled] + ["DontCare"] * n_dc, dtype=np.str_),
        truncated=np.concatenate([truncation[lab], np.full(n_dc, -1.0)]),
        occluded=np.concatenate([occlusion[lab], np.full(n_dc, -1, dtype=np.int64)]),
        alpha=np.concatenate([alpha[lab], np.full(n_dc, -10.0)]),
        bbox=bbox[np.asarray(labelled + dontcare, dtype=np.int64)],
        dimensions=np.concatenate([cam[lab][:, [4, 5, 3]], np.full((n_dc, 3), -1.0)]),
        location=np.concatenate([cam[lab][:, :3], np.full((n_dc, 3), -1000.0)]),
        rotation_y=np.concatenate([cam[lab][:, 6], np.full(n_dc, -10.0)]),
    )
    return labels, np.asarray(labelled + dontcare, dtype=np.int64), truncation


def _camera_rays(
    calib: KittiCalib, image_shape: tuple[int, int], scale: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Origin (LiDAR frame) and ``(h * w, 3)`` unit directions of camera-2 pixel rays at ``1/scale``
    resolution (pixel centres), row-major."""
    height, width = image_shape
    h, w = max(1, height // scale), max(1, width // scale)
    k = calib.P2[:, :3]
    k_inv = np.linalg.inv(k)
    centre_rect = -k_inv @ calib.P2[:, 3]
    u = (np.arange(w) + 0.5) * (width / w) - 0.5
    v = (np.arange(h) + 0.5) * (height / h) - 0.5
    uu, vv = np.meshgrid(u, v)
    pix = np.stack([uu, vv, np.ones_like(uu)], axis=-1).reshape(-1, 3)
    d_rect = pix @ k_inv.T
    to_velo = calib.rect_to_velo()
    d = d_rect @ to_velo[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    origin = to_velo[:3, :3] @ centre_rect + to_velo[:3, 3]
    return origin, d, h, w


def render_image(scene: Scene, calib: KittiCalib, image_shape: tuple[int, int], scale: int = 4) -> np.ndarray:
    """Ray-cast the scene from camera 2 at ``1/scale`` resolution and upsample to ``(H, W, 3)`` uint8 RGB.

    Shading: material colour x (ambient + Lambert sun), sky gradient where nothing is hit, haze growing
    with distance.
    """
    origin, dirs, h, w = _camera_rays(calib, image_shape, scale)
    hits = cast(origin, dirs, scene.shapes, scene.ground, max_range=400.0)
    sun = np.array([-0.35, 0.45, 0.82])
    sun /= np.linalg.norm(sun)
    colour = np.empty((dirs.shape[0], 3))
    sky = np.clip(dirs[:, 2:3], 0.0, 1.0)
    colour[:] = (1.0 - sky) * np.array([0.78, 0.85, 0.93]) + sky * np.array([0.35, 0.55, 0.85])
    hit = hits.shape != NO_HIT
    mat = hits.material.copy()
    on_ground = hits.shape == GROUND
    if on_ground.any():
        p = origin + dirs[on_ground] * hits.t[on_ground, None]
        mat[on_ground] = scene.ground_material(p[:, 0], p[:, 1])
    base = scene.materials[mat[hit], 1:4]
    lambert = np.clip(hits.normal[hit] @ sun, 0.0, 1.0)
    shaded = base * (0.45 + 0.6 * lambert)[:, None]
    haze = 1.0 - np.exp(-hits.t[hit] / 180.0)
    colour[hit] = shaded * (1.0 - haze[:, None]) + np.array([0.78, 0.85, 0.93]) * haze[:, None]
    small = np.clip(colour.reshape(h, w, 3) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    height, width = image_shape
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def road_plane(scene: Scene, calib: KittiCalib) -> np.ndarray:
    """``(4,)`` the ground plane ``a x + b y + c z + d = 0`` in the rectified camera frame, unit normal
    pointing up (``b < 0``)."""
    n = scene.ground.normal()
    d = scene.ground.height * n[2]  # n . p + d = 0 on the plane
    to_velo = calib.rect_to_velo()
    a, t = to_velo[:3, :3], to_velo[:3, 3]
    n_rect = a.T @ n
    d_rect = float(n @ t + d)
    plane = np.concatenate([n_rect, [d_rect]]) / np.linalg.norm(n_rect)
    return -plane if plane[1] > 0 else plane


def observe(
    scene: Scene,
    rng: np.random.Generator,
    scanner: ScannerConfig | None = None,
    calibration: str = "2011_09_26",
    image_scale: int = 4,
) -> SimFrame:
    """Scan, label and photograph a given scene with the named calibration (a key of
    :data:`CALIBRATIONS`). Deterministic given the state of ``rng`` (which it advances)."""
    scanner = scanner or ScannerConfig()
    image_shape, calib = CALIBRATIONS[calibration]
    points, point_object, stats = scan(scene, scanner, rng)
    labels, label_object, truncation = label_scene(scene, stats, calib, image_shape)
    return SimFrame(
        points=points,
        point_object=point_object,
        labels=labels,
        label_object=label_object,
        calib=calib,
        image_shape=image_shape,
        image=render_image(scene, calib, image_shape, scale=image_scale),
        plane=road_plane(scene, calib),
        object_stats={**stats, "truncation": truncation},
        scene=scene,
    )


def simulate_frame(
    rng: np.random.Generator,
    scanner: ScannerConfig | None = None,
    scene_config: SceneConfig | None = None,
    image_scale: int = 4,
) -> SimFrame:
    """Simulate one frame: draw a calibration (the first of :data:`CALIBRATIONS` with probability 0.7)
    and a street scene, then :func:`observe` it. Deterministic given the state of ``rng``."""
    scanner = scanner or ScannerConfig()
    names = list(CALIBRATIONS)
    calibration = names[0] if rng.random() < 0.7 else names[1]
    scene = sample_scene(rng, scene_config, mount_height=scanner.mount_height)
    return observe(scene, rng, scanner, calibration, image_scale)


# --------------------------------------------------------------------------------------------------
# Writing a dataset
# --------------------------------------------------------------------------------------------------


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _write_frame(folder: Path, frame_id: str, frame: SimFrame, with_label: bool) -> None:
    write_velodyne(folder / "velodyne" / f"{frame_id}.bin", frame.points)
    write_calib(folder / "calib" / f"{frame_id}.txt", frame.calib)
    (folder / "image_2" / f"{frame_id}.png").write_bytes(_png_bytes(frame.image))
    if with_label:
        write_label(folder / "label_2" / f"{frame_id}.txt", frame.labels)
        a, b, c, d = frame.plane
        (folder / "planes" / f"{frame_id}.txt").write_text(
            f"# Plane\nWidth 4\nHeight 1\n{a:e} {b:e} {c:e} {d:e}\n", encoding="ascii"
        )


def moderate_mask(labels: KittiObjects) -> np.ndarray:
    """``(N,)`` bool: the label counts at KITTI moderate difficulty (2D height > 25 px, occlusion <= 1,
    truncation <= 0.3), using the values as written to the file (2 decimals)."""
    height = np.round(labels.bbox[:, 3], 2) - np.round(labels.bbox[:, 1], 2)
    return (height > 25.0) & (labels.occluded <= 1) & (np.round(labels.truncated, 2) <= 0.3)


def _expected_meta(
    num_train: int, num_val: int, num_test: int, seed: int, scanner: ScannerConfig, scene: SceneConfig, image_scale: int
) -> dict[str, Any]:
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "scanner": asdict(scanner),
        "scene": json.loads(json.dumps(asdict(scene))),
        "image_scale": int(image_scale),
    }


def read_meta(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meta.json`` of a complete simulated dataset at ``root`` (one with its ``DONE`` marker), or
    ``None`` when absent, partial or not made by this simulator."""
    root = Path(root)
    if not (root / "DONE").is_file():
        return None
    return _read_meta_file(root)


def _read_meta_file(root: Path) -> dict[str, Any] | None:
    try:
        meta = parse_json_text((root / "meta.json").read_text(), str(root / "meta.json"))
    except (OSError, ValueError):
        return None
    ours = (GENERATOR_NAME, *FORMER_GENERATOR_NAMES)
    return meta if isinstance(meta, dict) and meta.get("generator") in ours else None


def _check_replaceable(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")
    if _read_meta_file(root) is None and any(root.iterdir()):
        raise DatasetError(f"{root}: exists and is not a simulated KITTI dataset; refusing to replace it")


def _split_counts(labels: Sequence[KittiObjects], num_points: Sequence[int], with_labels: bool) -> dict[str, Any]:
    """Frames, mean points per frame and (for labelled splits) label counts per type, plus the cars that
    count at moderate difficulty."""
    counts: dict[str, Any] = {
        "frames": len(num_points),
        "mean_points": float(np.mean(num_points)) if num_points else 0.0,
    }
    if with_labels:
        names = np.concatenate([lab.name for lab in labels]) if labels else np.zeros(0, dtype=np.str_)
        for name in ("Car", "Van", "Pedestrian", "Cyclist", "DontCare"):
            counts[name] = int((names == name).sum())
        counts["Car_moderate"] = int(sum(int((moderate_mask(lab) & (lab.name == "Car")).sum()) for lab in labels))
    return counts


def generate(
    root: str | os.PathLike[str],
    num_train: int = 300,
    num_val: int = 100,
    seed: int = 0,
    *,
    num_test: int = 0,
    scanner: ScannerConfig | None = None,
    scene: SceneConfig | None = None,
    image_scale: int = 4,
    progress: bool = True,
) -> Path:
    """Write a simulated KITTI dataset to ``root`` unless a complete one with the same settings is there.

    Training frames ``000000 .. num_train + num_val - 1`` go to ``training/`` (the first ``num_train``
    listed in ``ImageSets/train.txt``, the rest in ``val.txt``, all in ``trainval.txt``); ``num_test``
    unlabelled frames go to ``testing/`` and ``test.txt``. Everything is written to a hidden staging
    folder beside ``root`` and moved into place with ``os.replace`` once complete (with ``meta.json``
    and the ``DONE`` marker written last), so ``root`` is absent, a previous complete dataset, or the new
    one; a partial folder is never taken as complete. A previous simulated dataset with other settings
    (or without its marker) is replaced; any other non-empty folder is refused.

    Args:
        root: destination folder.
        num_train, num_val: training-folder frames per split (``num_train >= 1``, ``num_val >= 0``).
        seed: same seed and settings give byte-identical files.
        num_test: frames in ``testing/`` (no labels).
        scanner: the LiDAR (default :class:`ScannerConfig`, ~120 k points per sweep; see
            :data:`FAST_SCANNER`).
        scene: scene contents (default :class:`SceneConfig`).
        image_scale: the camera image is ray-cast at ``1/image_scale`` resolution, then upsampled.
        progress: show a tqdm bar.

    Returns:
        ``root`` as a Path.

    Raises:
        DatasetError: ``root`` is a file, or a non-empty folder that is not a simulated dataset.
    """
    if num_train < 1 or num_val < 0 or num_test < 0:
        raise ValueError(f"need num_train >= 1, num_val >= 0, num_test >= 0; got {num_train}, {num_val}, {num_test}")
    if image_scale < 1:
        raise ValueError(f"image_scale must be >= 1, got {image_scale}")
    scanner = scanner or ScannerConfig()
    scene = scene or SceneConfig()
    root = Path(root)
    expected = _expected_meta(num_train, num_val, num_test, seed, scanner, scene, image_scale)
    meta = read_meta(root)
    if meta is not None and all(meta.get(key) == value for key, value in expected.items() if key != "generator"):
        return root
    with atomic_folder(root, _check_replaceable) as staging:
        jobs = [("training", i, True) for i in range(num_train + num_val)]
        jobs += [("testing", i, False) for i in range(num_test)]
        folders = {"training": ("velodyne", "calib", "image_2", "label_2", "planes")}
        if num_test:
            folders["testing"] = ("velodyne", "calib", "image_2")
        for folder, subdirs in folders.items():
            for sub in subdirs:
                (staging / folder / sub).mkdir(parents=True)
        labels: dict[str, list[KittiObjects]] = {"train": [], "val": [], "test": []}
        npoints: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for folder, index, labelled in progress_bar(jobs, desc="simulated KITTI", enabled=progress, unit="frame"):
            frame = simulate_frame(frame_rng(seed, folder, index), scanner, scene, image_scale)
            _write_frame(staging / folder, f"{index:06d}", frame, labelled)
            split = "test" if folder == "testing" else ("train" if index < num_train else "val")
            labels[split].append(frame.labels)
            npoints[split].append(int(frame.points.shape[0]))
        sets = staging / "ImageSets"
        sets.mkdir()
        ids = {
            "train": range(num_train),
            "val": range(num_train, num_train + num_val),
            "trainval": range(num_train + num_val),
        }
        if num_test:
            ids["test"] = range(num_test)
        for name, frame_ids in ids.items():
            (sets / f"{name}.txt").write_text("".join(f"{i:06d}\n" for i in frame_ids), encoding="ascii")
        expected["counts"] = {
            split: _split_counts(labels[split], npoints[split], with_labels=split != "test")
            for split in ids
            if split != "trainval"
        }
        (staging / "meta.json").write_text(json.dumps(expected, indent=1) + "\n")
        (staging / "DONE").write_text("complete\n")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hrnas.demos.lidar.simulator ROOT [--train N] [--val N] [--test N] [--seed S] [--fast]``."""
    parser = argparse.ArgumentParser(prog="python -m hrnas.demos.lidar.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--azimuth-steps", type=int, default=None, help="azimuth steps per revolution (default 2048)")
    parser.add_argument("--fov", type=float, default=None, help="horizontal sector cast, degrees (default 360)")
    parser.add_argument("--fast", action="store_true", help="use FAST_SCANNER (1024 steps, 110 degrees)")
    args = parser.parse_args(argv)
    base = FAST_SCANNER if args.fast else ScannerConfig()
    scanner = ScannerConfig(
        **{
            **asdict(base),
            **({"num_azimuth": args.azimuth_steps} if args.azimuth_steps else {}),
            **({"horizontal_fov_deg": args.fov} if args.fov else {}),
        }
    )
    root = generate(args.root, args.train, args.val, args.seed, num_test=args.test, scanner=scanner)
    print(json.dumps(read_meta(root)["counts"], indent=1))  # type: ignore[index]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
