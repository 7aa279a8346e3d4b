"""KITTI 3D object detection data: file formats and coordinate frames.

* :mod:`hrnas.data.kitti.formats`: ``label_2``/result, ``calib``, ``velodyne`` and id-list files.
* :mod:`hrnas.data.kitti.boxes`: LiDAR <-> camera boxes, image projection, camera FOV filter.
"""

from hrnas.data.kitti.boxes import (
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
    wrap_angle,
)
from hrnas.data.kitti.formats import (
    KITTI_TYPES,
    KittiCalib,
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

__all__ = [
    "KITTI_TYPES",
    "KittiCalib",
    "KittiFormatError",
    "KittiObjects",
    "alpha_from_camera_boxes",
    "box3d_to_2d_clipped",
    "camera_box_corners",
    "camera_to_lidar_boxes",
    "format_calib",
    "format_label_lines",
    "fov_mask",
    "lidar_to_camera_boxes",
    "lidar_to_rect",
    "parse_calib",
    "parse_label_lines",
    "predictions_to_kitti",
    "project_rect_to_image",
    "read_calib",
    "read_ids",
    "read_image_size",
    "read_label",
    "read_velodyne",
    "rect_to_lidar",
    "wrap_angle",
    "write_calib",
    "write_label",
    "write_velodyne",
]
