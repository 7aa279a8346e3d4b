"""Coordinate frames of KITTI: LiDAR <-> rectified camera, image projection, camera FOV.

Frames (all metres, radians):

* **LiDAR**: x forward, y left, z up. A LiDAR box is ``[x, y, z, dx, dy, dz, heading]`` with
  ``(x, y, z)`` the **geometric centre**, ``dx = l``, ``dy = w``, ``dz = h`` and ``heading`` the yaw about
  +z (0 = length along +x), as in OpenPCDet.
* **Rectified camera 0** ("rect"): x right, y down, z forward. A camera box is
  ``[x, y, z, l, h, w, ry]`` with ``(x, y, z)`` the **bottom centre** (the ``label_2`` location) and
  ``ry`` the yaw about +y (0 = length along +x).
* **Image 2**: pixels ``(u, v)`` of ``image_2`` via ``P2``.

Conversions follow OpenPCDet ``boxes3d_kitti_camera_to_lidar`` and its inverse:
``centre = rect_to_lidar(location) + (0, 0, h / 2)``, ``heading = -(ry + pi / 2)``; back,
``location = lidar_to_rect(centre - (0, 0, h / 2))``, ``ry = wrap(-heading - pi / 2)``. Like everyone,
this ignores the sub-degree tilt between the LiDAR and camera axes in the yaw conversion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hrnas.tasks.kitti.formats import KittiCalib, KittiObjects

__all__ = [
    "alpha_from_camera_boxes",
    "box3d_to_2d_clipped",
    "camera_box_corners",
    "camera_to_lidar_boxes",
    "fov_mask",
    "lidar_to_camera_boxes",
    "lidar_to_rect",
    "predictions_to_kitti",
    "project_rect_to_image",
    "rect_to_lidar",
    "wrap_angle",
]


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap radians to ``[-pi, pi)``."""
    a = np.asarray(angle, dtype=np.float64)
    return np.mod(a + np.pi, 2.0 * np.pi) - np.pi


def _points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"points must be (N, >=3), got shape {p.shape}")
    return p[:, :3]


def _boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(f"boxes must be (N, 7), got shape {b.shape}")
    return b


def lidar_to_rect(points: np.ndarray, calib: KittiCalib) -> np.ndarray:
    """``(N, >=3)`` LiDAR points -> ``(N, 3)`` float64 rectified-camera points (extra columns dropped)."""
    p = _points(points)
    t = calib.velo_to_rect()
    return p @ t[:3, :3].T + t[:3, 3]


def rect_to_lidar(points: np.ndarray, calib: KittiCalib) -> np.ndarray:
    """``(N, >=3)`` rectified-camera points -> ``(N, 3)`` float64 LiDAR points."""
    p = _points(points)
    t = calib.rect_to_velo()
    return p @ t[:3, :3].T + t[:3, 3]


def project_rect_to_image(points: np.ndarray, calib: KittiCalib) -> tuple[np.ndarray, np.ndarray]:
    """Project ``(N, 3)`` rectified-camera points with ``P2``.

    Returns:
        ``uv``: ``(N, 2)`` pixels ``(u'/w', v'/w')`` with ``[u', v', w'] = P2 @ [x, y, z, 1]``;
        ``depth``: ``(N,)`` the rectified depth ``z`` (metres). Points with ``w' <= 0`` (behind the
        camera) still get a value; callers filter on ``depth``.
    """
    p = _points(points)
    proj = p @ calib.P2[:, :3].T + calib.P2[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = proj[:, :2] / proj[:, 2:3]
    return uv, p[:, 2].copy()


def fov_mask(points_lidar: np.ndarray, calib: KittiCalib, image_shape: Sequence[int]) -> np.ndarray:
    """``(N,)`` bool: the LiDAR point lies in the ``image_2`` field of view (OpenPCDet ``get_fov_flag``).

    Kept iff the rectified depth is ``>= 0`` and the projection satisfies ``0 <= u < W`` and
    ``0 <= v < H``, with ``image_shape = (H, W)`` of that frame's ``image_2``.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    rect = lidar_to_rect(points_lidar, calib)
    uv, depth = project_rect_to_image(rect, calib)
    return (depth >= 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)


def camera_to_lidar_boxes(boxes_camera: np.ndarray, calib: KittiCalib) -> np.ndarray:
    """``(N, 7)`` camera boxes ``[x, y, z, l, h, w, ry]`` (bottom centre) -> ``(N, 7)`` LiDAR boxes
    ``[x, y, z, dx=l, dy=w, dz=h, heading=-(ry + pi/2)]`` (geometric centre). Heading is not wrapped."""
    b = _boxes(boxes_camera)
    l, h, w, ry = b[:, 3], b[:, 4], b[:, 5], b[:, 6]
    centre = rect_to_lidar(b[:, :3], calib)
    centre[:, 2] += h / 2.0
    return np.concatenate([centre, np.stack([l, w, h, -(ry + np.pi / 2.0)], axis=1)], axis=1)


def lidar_to_camera_boxes(boxes_lidar: np.ndarray, calib: KittiCalib) -> np.ndarray:
    """``(N, 7)`` LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` -> ``(N, 7)`` camera boxes
    ``[x, y, z, l, h, w, ry]`` with the bottom centre and ``ry = wrap(-heading - pi/2)`` in ``[-pi, pi)``."""
    b = _boxes(boxes_lidar)
    dx, dy, dz, heading = b[:, 3], b[:, 4], b[:, 5], b[:, 6]
    bottom = b[:, :3].copy()
    bottom[:, 2] -= dz / 2.0
    loc = lidar_to_rect(bottom, calib)
    ry = wrap_angle(-heading - np.pi / 2.0)
    return np.concatenate([loc, np.stack([dx, dz, dy, ry], axis=1)], axis=1)


def camera_box_corners(boxes_camera: np.ndarray) -> np.ndarray:
    """``(N, 8, 3)`` corners of camera boxes ``[x, y, z, l, h, w, ry]`` in the rectified frame.

    Corners 0-3 are on the bottom face (``y``), 4-7 on the top face (``y - h``, y points down). The
    rotation is the official one: ``x' = cos(ry) dx + sin(ry) dz``, ``z' = -sin(ry) dx + cos(ry) dz``.
    """
    b = _boxes(boxes_camera)
    l, h, w, ry = b[:, 3:4], b[:, 4:5], b[:, 5:6], b[:, 6:7]
    sx = np.array([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5])
    sz = np.array([0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.5])
    dx = l * sx
    dz = w * sz
    dy = np.concatenate([np.zeros((b.shape[0], 4)), np.repeat(-h, 4, axis=1)], axis=1)
    c, s = np.cos(ry), np.sin(ry)
    x = c * dx + s * dz + b[:, 0:1]
    z = -s * dx + c * dz + b[:, 2:3]
    y = dy + b[:, 1:2]
    return np.stack([x, y, z], axis=2)


def box3d_to_2d_clipped(boxes_camera: np.ndarray, calib: KittiCalib, image_shape: Sequence[int] | None) -> np.ndarray:
    """The 2D image box of camera boxes: min/max of the 8 projected corners, clipped to the image.

    Args:
        boxes_camera: ``(N, 7)`` ``[x, y, z, l, h, w, ry]``, rectified frame, bottom centre.
        image_shape: ``(H, W)`` of ``image_2``; ``x`` is clipped to ``[0, W - 1]`` and ``y`` to
            ``[0, H - 1]`` (OpenPCDet ``boxes3d_kitti_camera_to_imageboxes``); ``None`` = no clipping.

    Returns:
        ``(N, 4)`` float64 ``x1, y1, x2, y2`` in pixels. As in the reference, corners behind the camera
        are not cut at a near plane, so boxes reaching behind the camera get meaningless image boxes.
    """
    corners = camera_box_corners(boxes_camera)
    uv, _ = project_rect_to_image(corners.reshape(-1, 3), calib)
    uv = uv.reshape(-1, 8, 2)
    out = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    if image_shape is not None:
        height, width = int(image_shape[0]), int(image_shape[1])
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width - 1)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height - 1)
    return out


def alpha_from_camera_boxes(boxes_camera: np.ndarray) -> np.ndarray:
    """``(N,)`` observation angle ``alpha = wrap(ry - atan2(x, z))`` in ``[-pi, pi)`` of camera boxes
    (equal to OpenPCDet's ``-atan2(-y_lidar, x_lidar) + ry`` up to the LiDAR/camera tilt)."""
    b = _boxes(boxes_camera)
    return wrap_angle(b[:, 6] - np.arctan2(b[:, 0], b[:, 2]))


def predictions_to_kitti(
    boxes_lidar: np.ndarray,
    scores: np.ndarray,
    names: Sequence[str] | np.ndarray,
    calib: KittiCalib,
    image_shape: Sequence[int],
) -> KittiObjects:
    """Turn LiDAR-frame detections into KITTI result objects (OpenPCDet ``generate_prediction_dicts``).

    Args:
        boxes_lidar: ``(N, 7)`` ``[x, y, z, dx, dy, dz, heading]``, geometric centre.
        scores: ``(N,)`` confidence, higher = better.
        names: ``(N,)`` KITTI types, e.g. ``"Car"``.
        image_shape: ``(H, W)`` of the frame's ``image_2``, for the clipped 2D box.

    Returns:
        Objects with the camera box, the projected and clipped 2D box (needed by the evaluation even for
        BEV/3D AP), ``alpha`` from :func:`alpha_from_camera_boxes`, ``truncated = occluded = -1`` and the
        scores.
    """
    cam = lidar_to_camera_boxes(boxes_lidar, calib)
    n = cam.shape[0]
    score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    name_arr = np.asarray(names, dtype=np.str_).reshape(-1)
    if score_arr.shape[0] != n or name_arr.shape[0] != n:
        raise ValueError(f"{n} boxes but {score_arr.shape[0]} scores and {name_arr.shape[0]} names")
    return KittiObjects(
        name=name_arr,
        truncated=np.full(n, -1.0),
        occluded=np.full(n, -1, dtype=np.int64),
        alpha=alpha_from_camera_boxes(cam),
        bbox=box3d_to_2d_clipped(cam, calib, image_shape),
        dimensions=cam[:, [4, 5, 3]],
        location=cam[:, :3],
        rotation_y=cam[:, 6],
        score=score_arr,
    )
