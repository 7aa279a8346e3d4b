"""KITTI 3D object detection as a map-style dataset of LiDAR frames (OpenPCDet ``KittiDataset`` with
the PointPillars settings, ``kitti-spec.md`` §1.1-1.3).

Per frame, in order:

1. Read the scan ``(N, 4)`` float32, the calibration and the ``image_2`` size (PNG header only); keep
   the points in the camera field of view (``fov_points_only``).
2. Read the label; every object but DontCare becomes a LiDAR box ``[x, y, z, dx, dy, dz, heading]``
   (geometric centre, heading in ``[-pi, pi)``). The raw label, DontCare included, stays in the
   sample for the evaluation.
3. Training only: ground-truth sampling (all non-DontCare boxes count in its collision check), then
   only the boxes of ``classes`` are kept, then flip / rotation / scaling.
4. Points outside the x/y range are dropped (bounds inclusive, z is left to the pillarizer). Training
   only: boxes whose centre is outside the range are dropped and the points are shuffled.
5. Training only: a frame left without boxes is replaced by another, drawn at random (as the reference).

Randomness: each training sample draws from a ``numpy`` generator seeded from torch's RNG, so under
``hrnas.engine.data`` (which seeds torch per ``(seed, epoch, index)``) samples are reproducible
whatever the worker count, and on resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from hrnas.data.errors import DatasetError
from hrnas.tasks.kitti.augment import AugmentConfig, augment_scene, shuffle_points
from hrnas.tasks.kitti.boxes import camera_to_lidar_boxes, fov_mask, wrap_angle
from hrnas.tasks.kitti.formats import (
    KITTI_TYPES,
    KittiCalib,
    KittiObjects,
    read_calib,
    read_image_size,
    read_label,
    read_velodyne,
)
from hrnas.tasks.kitti.gt_database import GtSampler, load_or_build_gt_database, read_road_plane
from hrnas.tasks.kitti.layout import FrameFiles, list_frames, split_list_path

__all__ = [
    "KittiDataConfig",
    "KittiDataset",
    "KittiFrame",
    "box_centre_mask",
    "collate_kitti",
    "point_range_mask",
]

_MAX_DRAWS = 100  # a training frame without boxes is redrawn at most this often before giving up


@dataclass(frozen=True)
class KittiDataConfig:
    """How frames become samples (defaults: OpenPCDet ``kitti_dataset.yaml`` + ``pointpillar.yaml``).

    Attributes:
        classes: detected classes; label ``k + 1`` is ``classes[k]`` (0 = background).
        point_cloud_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` metres, LiDAR frame.
        fov_points_only: keep only points that project into ``image_2`` with depth >= 0.
        num_point_features: float32 values per point in the ``.bin`` files (x, y, z, reflectance).
        remove_outside_boxes: training only, drop boxes whose centre is outside the range.
        resample_empty_frames: training only, replace a frame left without boxes by a random other one.
        augment: training augmentation (ground-truth sampling, flip, rotation, scaling, shuffle).
    """

    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    point_cloud_range: tuple[float, ...] = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
    fov_points_only: bool = True
    num_point_features: int = 4
    remove_outside_boxes: bool = True
    resample_empty_frames: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("kitti.classes: empty")
        for name in self.classes:
            if name not in KITTI_TYPES or name == "DontCare":
                raise ValueError(f"kitti.classes: unknown class {name!r} (known: {', '.join(KITTI_TYPES[:-1])})")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"kitti.classes: repeated class in {list(self.classes)}")
        r = self.point_cloud_range
        if len(r) != 6 or not all(r[i] < r[i + 3] for i in range(3)):
            raise ValueError(f"kitti.point_cloud_range: expected [x0, y0, z0, x1, y1, z1] with lo < hi, got {list(r)}")
        if self.num_point_features < 3:
            raise ValueError(f"kitti.num_point_features: expected >= 3, got {self.num_point_features}")


@dataclass(eq=False)
class KittiFrame:
    """One frame as read from disk, before augmentation and range filtering.

    * ``points``: ``(N, C)`` float32 LiDAR points (FOV-reduced when configured).
    * ``boxes``: ``(M, 7)`` float64 LiDAR boxes of every labelled object but DontCare, heading in
      ``[-pi, pi)``; ``names``: ``(M,)`` their types. Empty for an unlabelled split.
    * ``annos``: the raw label (DontCare included), ``None`` for an unlabelled split.
    * ``image_shape``: ``(H, W)`` of ``image_2``; ``road_plane``: ``(4,)`` or ``None``.
    """

    frame_id: str
    points: np.ndarray
    boxes: np.ndarray
    names: np.ndarray
    annos: KittiObjects | None
    calib: KittiCalib
    image_shape: tuple[int, int]
    road_plane: np.ndarray | None = None


def point_range_mask(points: np.ndarray, point_cloud_range: Sequence[float]) -> np.ndarray:
    """``(N,)`` bool: x and y inside the range, bounds included (OpenPCDet ``mask_points_by_range``;
    z is not tested)."""
    r = point_cloud_range
    return (points[:, 0] >= r[0]) & (points[:, 0] <= r[3]) & (points[:, 1] >= r[1]) & (points[:, 1] <= r[4])


def box_centre_mask(boxes: np.ndarray, point_cloud_range: Sequence[float]) -> np.ndarray:
    """``(M,)`` bool: the box centre is inside the range in x, y and z, bounds included (OpenPCDet
    ``mask_boxes_outside_range_numpy`` with ``use_center_to_filter``)."""
    r = np.asarray(point_cloud_range, dtype=np.float64)
    return ((boxes[:, :3] >= r[:3]) & (boxes[:, :3] <= r[3:])).all(axis=1)


class KittiDataset(Dataset):
    """The frames of ``ROOT/ImageSets/SPLIT.txt`` (``test`` reads ``testing/``, others ``training/``).

    Item ``i`` is a dict:

    * ``frame_id``: str.
    * ``points``: ``(N, C)`` float32 tensor ``[x, y, z, reflectance]`` (LiDAR frame, metres); ``N`` may
      be 0.
    * ``gt_boxes``: ``(M, 7)`` float32 tensor ``[x, y, z, dx, dy, dz, heading]`` of the ``classes``
      objects (geometric centre, heading in ``[-pi, pi)``); ``gt_labels``: ``(M,)`` int64 in
      ``1..len(classes)``. Empty for an unlabelled split.
    * ``calib``: :class:`KittiCalib`; ``image_shape``: ``(H, W)`` of ``image_2``.
    * ``annos``: the raw :class:`KittiObjects` label (DontCare included) or ``None``.

    Args:
        root: dataset root.
        split: ``ImageSets`` list name.
        training: augment, filter boxes by range, shuffle, resample empty frames; needs labels and,
            with ground-truth sampling on, builds or loads the database (:mod:`gt_database`).
        config: :class:`KittiDataConfig` (defaults when ``None``).

    Raises:
        KittiFormatError: a missing root/list, an id without its files (``list:line: frame ID has no
            FILE``); later, from ``__getitem__``, a malformed file (named, with its line).
    """

    def __init__(self, root: str | Path, split: str, training: bool, config: KittiDataConfig | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.training = training
        self.config = config if config is not None else KittiDataConfig()
        gs = self.config.augment.gt_sampling
        sampling = training and gs.enabled
        self.frame_files: list[FrameFiles] = list_frames(
            self.root,
            split,
            labels=True if training else None,
            road_planes=gs.use_road_plane if sampling else False,
        )
        self.sampler: GtSampler | None = None
        if sampling:
            db_path = self.root / gs.db_path if gs.db_path is not None else None  # absolute paths stay as they are
            db = load_or_build_gt_database(self.root, gs.db_split, db_path, self.config.num_point_features)
            self.sampler = GtSampler(db, gs, self.config.classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def frame_ids(self) -> list[str]:
        return [f.frame_id for f in self.frame_files]

    def __len__(self) -> int:
        return len(self.frame_files)

    # --- reading -------------------------------------------------------------------------------
    def load_frame(self, index: int) -> KittiFrame:
        """Frame ``index`` read from disk (steps 1-2 of the module docstring)."""
        files = self.frame_files[index]
        points = read_velodyne(files.velodyne, self.config.num_point_features)
        calib = read_calib(files.calib)
        image_shape = read_image_size(files.image)
        if self.config.fov_points_only:
            points = points[fov_mask(points, calib, image_shape)]
        annos = read_label(files.label) if files.label is not None else None
        if annos is not None:
            objects = annos.select(annos.name != "DontCare")
            boxes = camera_to_lidar_boxes(objects.camera_boxes(), calib)
            boxes[:, 6] = wrap_angle(boxes[:, 6])
            names = objects.name
        else:
            boxes, names = np.zeros((0, 7)), np.zeros(0, dtype=np.str_)
        plane = read_road_plane(files.plane) if files.plane is not None else None
        return KittiFrame(files.frame_id, points, boxes, names, annos, calib, image_shape, plane)

    # --- samples -------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.training:
            return self.sample(index)
        seed = int(torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64).item())
        return self.sample(index, np.random.default_rng(seed))

    def sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Item ``index``; training draws every random choice from ``rng`` (required then)."""
        if not self.training:
            return self._eval_sample(self.load_frame(index))
        if rng is None:
            raise ValueError("a training sample needs a random generator")
        for _ in range(_MAX_DRAWS):
            sample = self._train_sample(self.load_frame(index), rng)
            if sample["gt_boxes"].shape[0] > 0 or not self.config.resample_empty_frames:
                return sample
            index = int(rng.integers(len(self)))
        raise DatasetError(
            f"{split_list_path(self.root, self.split)}: {_MAX_DRAWS} frames drawn in a row had no "
            f"{'/'.join(self.classes)} box in range after augmentation"
        )

    def _labels(self, names: np.ndarray) -> np.ndarray:
        lookup = {name: k + 1 for k, name in enumerate(self.classes)}
        return np.asarray([lookup[str(n)] for n in names], dtype=np.int64)

    def _eval_sample(self, frame: KittiFrame) -> dict[str, Any]:
        keep = np.isin(frame.names, self.classes)
        points = frame.points[point_range_mask(frame.points, self.config.point_cloud_range)]
        return self._pack(frame, points, frame.boxes[keep], frame.names[keep])

    def _train_sample(self, frame: KittiFrame, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        points, boxes, names = frame.points, frame.boxes, frame.names
        if self.sampler is not None:
            points, boxes, names = self.sampler(points, boxes, names, rng, frame.calib, frame.road_plane)
        keep = np.isin(names, cfg.classes)
        points, boxes = augment_scene(points, boxes[keep], rng, cfg.augment)
        names = names[keep]
        points = points[point_range_mask(points, cfg.point_cloud_range)]
        if cfg.remove_outside_boxes:
            inside = box_centre_mask(boxes, cfg.point_cloud_range)
            boxes, names = boxes[inside], names[inside]
        if cfg.augment.shuffle_points:
            points = shuffle_points(points, rng)
        return self._pack(frame, points, boxes, names)

    def _pack(self, frame: KittiFrame, points: np.ndarray, boxes: np.ndarray, names: np.ndarray) -> dict[str, Any]:
        return {
            "frame_id": frame.frame_id,
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "gt_boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 7)),
            "gt_labels": torch.from_numpy(self._labels(names)),
            "calib": frame.calib,
            "image_shape": frame.image_shape,
            "annos": frame.annos,
        }


def collate_kitti(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`KittiDataset` items (``B`` samples, ``N_b`` points and ``M_b`` boxes each).

    Returns a dict:

    * ``points``: ``(sum N_b, 1 + C)`` float32, column 0 = the sample's index in the batch, then
      ``x, y, z, reflectance`` (OpenPCDet's layout); ``num_points``: ``(B,)`` int64, so
      ``points[:, 1:].split(num_points.tolist())`` gives the per-sample clouds.
    * ``gt_boxes``: ``(B, max M_b, 8)`` float32 zero-padded, column 7 = class label (0 = padding);
      ``num_boxes``: ``(B,)`` int64.
    * ``image_shape``: ``(B, 2)`` int64 ``(H, W)``; ``batch_size``: ``B``.
    * ``frame_id``, ``calib``, ``annos``: lists of length ``B``.
    """
    if not samples:
        raise ValueError("collate_kitti: no samples")
    clouds: list[Tensor] = [s["points"] for s in samples]
    widths = {int(p.shape[1]) for p in clouds}
    if len(widths) != 1:
        raise ValueError(f"collate_kitti: samples have different point widths {sorted(widths)}")
    index = torch.cat([torch.full((p.shape[0], 1), float(b), dtype=torch.float32) for b, p in enumerate(clouds)])
    points = torch.cat([index, torch.cat(clouds).to(torch.float32)], dim=1)
    num_boxes = torch.tensor([int(s["gt_boxes"].shape[0]) for s in samples], dtype=torch.int64)
    max_boxes = int(num_boxes.max()) if len(samples) else 0
    gt_boxes = torch.zeros((len(samples), max_boxes, 8), dtype=torch.float32)
    for b, s in enumerate(samples):
        m = int(num_boxes[b])
        gt_boxes[b, :m, :7] = s["gt_boxes"]
        gt_boxes[b, :m, 7] = s["gt_labels"].to(torch.float32)
    return {
        "points": points,
        "num_points": torch.tensor([int(p.shape[0]) for p in clouds], dtype=torch.int64),
        "gt_boxes": gt_boxes,
        "num_boxes": num_boxes,
        "image_shape": torch.tensor([list(s["image_shape"]) for s in samples], dtype=torch.int64),
        "batch_size": len(samples),
        "frame_id": [s["frame_id"] for s in samples],
        "calib": [s["calib"] for s in samples],
        "annos": [s["annos"] for s in samples],
    }
