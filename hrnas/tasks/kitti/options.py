"""The ``task:`` section of a KITTI run config (``task.name: kitti``): pillar grid, training augmentation,
post-processing.

Defaults are OpenPCDet's ``pointpillar.yaml`` (kitti-spec §1.2). ``data.crop_size`` must be the pillar grid
``[ny, nx]`` of ``point_cloud_range`` / ``voxel_size`` (496×432 by default), the size of the pseudo-image the
backbone reads and at which search costs are measured (:attr:`hrnas.tasks.kitti.task.KittiTask.grid`
checks it). These keys formed a ``detection:`` section of their own in older configs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hrnas.tasks.options import TaskOptions, option

__all__ = ["KittiOptions"]


@dataclass(frozen=True)
class KittiOptions(TaskOptions):
    """KITTI 3D detection options.

    Attributes:
        point_cloud_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` metres, LiDAR frame; also the
            span of the anchor grid.
        voxel_size: pillar size ``[dx, dy, dz]`` in metres; ``dz`` must be the whole z extent (pillars).
        max_points_per_pillar: point slots per pillar (first come, first kept).
        max_pillars_train: pillars kept per training frame (first come); ``max_pillars_test`` at evaluation.
        gt_sampling: paste ground-truth database objects into training frames (the database is built
            once from the training split and cached under the dataset root).
        sample_groups: objects drawn per training frame for Car, Pedestrian, Cyclist.
        flip: random mirror across the x axis (p = 0.5).
        rotation: random rotation about z, uniform in ``[-rotation, rotation]`` radians.
        scaling_range: ``[lo, hi]`` of the random global scaling.
        score_threshold: detections below this sigmoid score are dropped before the NMS.
        nms_iou_threshold: class-agnostic rotated BEV NMS threshold.
        nms_pre_max: highest-scored boxes entering the NMS; ``nms_post_max``: boxes kept per frame.
    """

    point_cloud_range: tuple[float, ...] = option((0.0, -39.68, -3.0, 69.12, 39.68, 1.0), length=6)
    voxel_size: tuple[float, ...] = option((0.16, 0.16, 4.0), length=3, minimum=0.0)
    max_points_per_pillar: int = option(32, minimum=1)
    max_pillars_train: int = option(16000, minimum=1)
    max_pillars_test: int = option(40000, minimum=1)
    gt_sampling: bool = True
    sample_groups: tuple[int, ...] = option((15, 15, 15), length=3, minimum=0)
    flip: bool = True
    rotation: float = option(0.78539816, minimum=0.0)
    scaling_range: tuple[float, ...] = option((0.95, 1.05), length=2, minimum=0.0)
    score_threshold: float = option(0.1, minimum=0.0, maximum=1.0)
    nms_iou_threshold: float = option(0.01, minimum=0.0, maximum=1.0)
    nms_pre_max: int = option(4096, minimum=1)
    nms_post_max: int = option(500, minimum=1)

    legacy_keys: ClassVar[Mapping[str, str]] = {
        "detection": "moved into task: (task.name: kitti); rename detection.X to task.X",
    }

    def validate(self, cfg: Any, fail: Callable[[str, str], Exception]) -> None:
        """The range must be increasing on every axis, pillars non-empty, the scaling range positive."""
        r = self.point_cloud_range
        if not all(r[i] < r[i + 3] for i in range(3)):
            raise fail("task.point_cloud_range", f"{list(r)} needs min < max on x, y and z")
        if min(self.voxel_size) <= 0:
            raise fail("task.voxel_size", f"{list(self.voxel_size)} must be > 0")
        lo, hi = self.scaling_range
        if not 0 < lo <= hi:
            raise fail("task.scaling_range", f"[{lo}, {hi}] must satisfy 0 < lo <= hi")
