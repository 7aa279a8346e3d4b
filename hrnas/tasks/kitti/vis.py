"""Pictures of KITTI detections: a bird's-eye view and the camera image with projected 3D boxes.

The BEV picture (:func:`draw_bev`) looks forward along +x (up in the picture, left = +y), shows the LiDAR
points shaded by height, the ground-truth boxes in white and the detections in their class colour with
a line from the box centre to the middle of its front face (the heading). The camera picture
(:func:`draw_camera`) projects the 8 corners of every box with ``P2`` and draws its 12 edges, the front
face crossed; boxes with a corner behind the camera are left out (their projection is meaningless).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from hrnas.tasks.kitti.boxes import camera_box_corners, lidar_to_camera_boxes, project_rect_to_image
from hrnas.tasks.kitti.formats import KittiCalib

__all__ = ["CLASS_COLOURS", "GT_COLOUR", "draw_bev", "draw_camera", "lidar_box_corners_bev"]

CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "Car": (255, 80, 80),
    "Pedestrian": (80, 200, 255),
    "Cyclist": (255, 200, 0),
}
"""RGB colour of each detected class."""
GT_COLOUR = (255, 255, 255)
_OTHER = (200, 120, 255)
_MIN_DEPTH = 0.1  # metres in front of the camera for a projected corner to count


def _colour(name: str) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(name, _OTHER)


def lidar_box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4, 2)`` BEV corners ``(x, y)`` of LiDAR boxes ``(N, 7)``, front-left first, counter-clockwise."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    sx = np.array([0.5, -0.5, -0.5, 0.5])
    sy = np.array([0.5, 0.5, -0.5, -0.5])
    dx, dy = b[:, 3:4] * sx, b[:, 4:5] * sy
    c, s = np.cos(b[:, 6:7]), np.sin(b[:, 6:7])
    return np.stack([c * dx - s * dy + b[:, 0:1], s * dx + c * dy + b[:, 1:2]], axis=-1)


def draw_bev(
    points: np.ndarray,
    point_cloud_range: Sequence[float],
    gt_boxes: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    names: Sequence[str] = (),
    scores: Sequence[float] | None = None,
    metres_per_pixel: float = 0.1,
) -> np.ndarray:
    """An RGB uint8 bird's-eye view ``(H, W, 3)`` of the x/y extent of ``point_cloud_range``.

    Args:
        points: ``(N, >=3)`` LiDAR points; those outside the range are not drawn.
        gt_boxes: ``(M, 7)`` LiDAR boxes drawn in white, or None.
        boxes, names, scores: detections ``(D, 7)``, their class names and scores (printed beside them).
        metres_per_pixel: picture resolution.
    """
    x0, y0, _, x1, y1, _ = (float(v) for v in point_cloud_range)
    height = max(1, int(round((x1 - x0) / metres_per_pixel)))
    width = max(1, int(round((y1 - y0) / metres_per_pixel)))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)

    def to_pixel(xy: np.ndarray) -> np.ndarray:
        col = (y1 - xy[..., 1]) / metres_per_pixel
        row = (x1 - xy[..., 0]) / metres_per_pixel
        return np.stack([col, row], axis=-1)

    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[0]:
        px = np.floor(to_pixel(pts[:, :2])).astype(np.int64)
        inside = (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
        z = pts[inside, 2]
        shade = np.clip(170 + 40 * (z - np.median(z)) if z.size else z, 90, 255).astype(np.uint8)
        canvas[px[inside, 1], px[inside, 0]] = shade[:, None]

    def polygon(box_corners: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
        pix = np.round(to_pixel(box_corners)).astype(np.int32)
        cv2.polylines(canvas, [pix], True, colour, thickness, cv2.LINE_AA)

    if gt_boxes is not None and len(gt_boxes):
        for c in lidar_box_corners_bev(gt_boxes):
            polygon(c, GT_COLOUR, 1)
    if boxes is not None and len(boxes):
        dets = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        for i, (c, box) in enumerate(zip(lidar_box_corners_bev(dets), dets, strict=True)):
            colour = _colour(str(names[i]) if i < len(names) else "")
            polygon(c, colour, 2)
            centre = np.round(to_pixel(box[:2])).astype(int)
            front = np.round(to_pixel(c[[0, 3]].mean(axis=0))).astype(int)
            cv2.line(canvas, tuple(int(v) for v in centre), tuple(int(v) for v in front), colour, 2, cv2.LINE_AA)
            if scores is not None:
                org = (int(centre[0]) + 4, int(centre[1]) - 4)
                cv2.putText(canvas, f"{float(scores[i]):.2f}", org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1)
    return canvas


def draw_camera(
    image: np.ndarray,
    calib: KittiCalib,
    gt_boxes: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    names: Sequence[str] = (),
) -> np.ndarray:
    """A copy of the RGB ``image (H, W, 3)`` with the LiDAR boxes ``(N, 7)`` projected onto it: ground truth
    in white (thin), detections in their class colour with the front face crossed."""
    canvas = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]

    def draw(lidar: np.ndarray, colours: list[tuple[int, int, int]], thickness: int, cross: bool) -> None:
        if lidar is None or not len(lidar):
            return
        corners = camera_box_corners(lidar_to_camera_boxes(np.asarray(lidar, dtype=np.float64).reshape(-1, 7), calib))
        for box, colour in zip(corners, colours, strict=True):
            uv, depth = project_rect_to_image(box, calib)
            if (depth < _MIN_DEPTH).any() or not np.isfinite(uv).all():
                continue
            pix = [tuple(int(round(v)) for v in p) for p in uv]
            for a, b in edges:
                cv2.line(canvas, pix[a], pix[b], colour, thickness, cv2.LINE_AA)
            if cross:  # corners 0, 1, 4, 5 are the front face (+l/2 along the heading)
                cv2.line(canvas, pix[0], pix[5], colour, 1, cv2.LINE_AA)
                cv2.line(canvas, pix[1], pix[4], colour, 1, cv2.LINE_AA)

    if gt_boxes is not None:
        draw(gt_boxes, [GT_COLOUR] * len(gt_boxes), 1, False)
    if boxes is not None:
        draw(boxes, [_colour(str(n)) for n in names], 2, True)
    return canvas
