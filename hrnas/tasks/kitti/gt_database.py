"""Ground-truth database and ground-truth sampling augmentation (SECOND, Yan et al. 2018; as in
OpenPCDet's ``DataBaseSampler`` with the PointPillars KITTI settings).

The database holds, for every labelled object (DontCare excluded) of a split, its LiDAR box, the
points of the full scan inside it (relative to the box centre), its point count and its difficulty.
It is built once and cached as one ``.npz`` file, written atomically; the file records a fingerprint
of the root, the split and the sizes/mtimes of the frames' files, and is rebuilt when that changes.

Sampling pastes database objects into a training scene: per class a fixed number is drawn, drawn
boxes whose rotated BEV IoU with an existing box or another drawn box is > 0 are dropped, scene points
inside the kept boxes are removed and the objects' points are prepended.

One deliberate difference from the reference: the reference walks each class through a shuffled
list with a pointer kept across frames, which makes a frame's draw depend on the frames loaded before
it in the same worker. Here each frame draws its objects without replacement from a per-sample RNG, so
samples are reproducible under any worker count and on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrnas.tasks.kitti.boxes import camera_to_lidar_boxes, lidar_to_rect, rect_to_lidar, wrap_angle
from hrnas.tasks.kitti.formats import (
    KITTI_TYPES,
    KittiCalib,
    KittiFormatError,
    KittiObjects,
    read_ascii,
    read_calib,
    read_label,
    read_velodyne,
)
from hrnas.tasks.kitti.iou import bev_iou_lidar
from hrnas.tasks.kitti.layout import FrameFiles, list_frames
from hrnas.utils.atomic import atomic_path

__all__ = [
    "POINT_IN_BOX_MARGIN",
    "GtDatabase",
    "GtSampler",
    "GtSamplingConfig",
    "build_gt_database",
    "default_database_path",
    "load_or_build_gt_database",
    "object_difficulty",
    "points_in_boxes",
    "read_road_plane",
]

POINT_IN_BOX_MARGIN = 0.01
"""Metres added to the half length and half width in :func:`points_in_boxes` (OpenPCDet's CPU
``points_in_boxes`` kernel uses the same margin)."""

_DB_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = POINT_IN_BOX_MARGIN) -> np.ndarray:
    """``(N, M)`` bool: point ``i`` lies in LiDAR box ``j``.

    Args:
        points: ``(N, >=3)`` LiDAR points (x, y, z first).
        boxes: ``(M, 7)`` ``[x, y, z, dx, dy, dz, heading]``, geometric centre.
        margin: metres added to ``dx/2`` and ``dy/2``.

    A point is inside iff ``|z - cz| <= dz/2`` and, in the box frame, ``|local_x| < dx/2 + margin`` and
    ``|local_y| < dy/2 + margin`` (the rule of OpenPCDet's CPU kernel, here in float64).
    """
    p = np.asarray(points, dtype=np.float64)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((p.shape[0], b.shape[0]), dtype=bool)
    if p.shape[0] == 0 or b.shape[0] == 0:
        return out
    # Only the points of the x slab reachable by a box are tested exactly (found by binary search).
    order = np.argsort(p[:, 0], kind="stable")
    xs = p[order, 0]
    for j, (cx, cy, cz, dx, dy, dz, heading) in enumerate(b):
        reach = 0.5 * np.hypot(dx + 2 * margin, dy + 2 * margin) + 1e-9
        cand = order[np.searchsorted(xs, cx - reach, "left") : np.searchsorted(xs, cx + reach, "right")]
        q = p[cand]
        sx = q[:, 0] - cx
        sy = q[:, 1] - cy
        c, s = np.cos(heading), np.sin(heading)
        local_x = sx * c + sy * s
        local_y = -sx * s + sy * c
        out[cand, j] = (
            (np.abs(q[:, 2] - cz) <= dz / 2.0)
            & (np.abs(local_x) < dx / 2.0 + margin)
            & (np.abs(local_y) < dy / 2.0 + margin)
        )
    return out


def object_difficulty(objects: KittiObjects) -> np.ndarray:
    """``(N,)`` int64 KITTI difficulty of labelled objects as the reference's database uses it:
    0 easy, 1 moderate, 2 hard, -1 none of them.

    The 2D height is ``bottom - top + 1`` pixels (OpenPCDet ``get_kitti_obj_level``; the evaluation's
    own filter has no ``+ 1``): easy = height >= 40, truncation <= 0.15, occlusion <= 0; moderate = >= 25,
    <= 0.3, <= 1; hard = >= 25, <= 0.5, <= 2.
    """
    height = objects.bbox[:, 3] - objects.bbox[:, 1] + 1.0
    trunc, occ = objects.truncated, objects.occluded
    out = np.full(len(objects), -1, dtype=np.int64)
    for level, (min_h, max_t, max_o) in reversed(list(enumerate([(40, 0.15, 0), (25, 0.3, 1), (25, 0.5, 2)]))):
        out[(height >= min_h) & (trunc <= max_t) & (occ <= max_o)] = level
    return out


def read_road_plane(path: str | Path) -> np.ndarray:
    """``(4,)`` float64 road plane ``a x + b y + c z + d = 0`` in the rectified camera frame from a
    ``planes/ID.txt`` file (the 4th line holds the four values), normal flipped to point up (``b < 0``,
    camera y points down) and normalised to unit length, as OpenPCDet ``get_road_plane``.

    Raises:
        KittiFormatError: ``path:4: ...`` when the plane line is missing or malformed.
    """
    path = Path(path)
    lines = read_ascii(path, "road plane").splitlines()
    if len(lines) < 4:
        raise KittiFormatError(f"{path}: expected the plane coefficients on line 4, the file has {len(lines)} lines")
    try:
        plane = np.asarray([float(v) for v in lines[3].split()], dtype=np.float64)
    except ValueError:
        raise KittiFormatError(f"{path}:4: plane coefficients are not numbers: {lines[3].strip()!r}") from None
    norm = np.linalg.norm(plane[:3]) if plane.shape == (4,) else 0.0
    if plane.shape != (4,) or not np.all(np.isfinite(plane)) or norm == 0 or plane[1] == 0:
        raise KittiFormatError(
            f"{path}:4: expected 4 finite coefficients a b c d with b != 0, got {lines[3].strip()!r}"
        )
    if plane[1] > 0:
        plane = -plane
    return plane / norm


def put_boxes_on_road_plane(boxes: np.ndarray, plane: np.ndarray, calib: KittiCalib) -> tuple[np.ndarray, np.ndarray]:
    """Move LiDAR boxes vertically so their bottom sits on the road plane (OpenPCDet
    ``put_boxes_on_road_planes``).

    Returns:
        The moved boxes ``(M, 7)`` (a copy) and ``(M,)`` the height each was lowered by (metres).
    """
    a, b, c, d = plane
    centre = lidar_to_rect(boxes[:, :3], calib)
    centre[:, 1] = (-d - a * centre[:, 0] - c * centre[:, 2]) / b
    ground = rect_to_lidar(centre, calib)[:, 2]
    lowered = boxes[:, 2] - boxes[:, 5] / 2.0 - ground
    moved = boxes.copy()
    moved[:, 2] -= lowered
    return moved, lowered


# --------------------------------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class GtDatabase:
    """Objects of a split with their points (``K`` objects, ``P`` points in all).

    * ``frame_ids``: ``(K,)`` str, the frame each object comes from.
    * ``names``: ``(K,)`` str KITTI type.
    * ``boxes``: ``(K, 7)`` float64 LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` (heading in [-pi, pi)).
    * ``num_points``: ``(K,)`` int64 points of the full scan inside the box.
    * ``difficulty``: ``(K,)`` int64, see :func:`object_difficulty`.
    * ``offsets``: ``(K + 1,)`` int64; object ``k`` owns ``points[offsets[k]:offsets[k + 1]]``.
    * ``points``: ``(P, C)`` float32, xyz relative to the box centre, then the other features.
    * ``fingerprint``: what the database was built from (see :func:`load_or_build_gt_database`).
    """

    frame_ids: np.ndarray
    names: np.ndarray
    boxes: np.ndarray
    num_points: np.ndarray
    difficulty: np.ndarray
    offsets: np.ndarray
    points: np.ndarray
    fingerprint: str = ""

    def __len__(self) -> int:
        return int(self.names.shape[0])

    def object_points(self, index: int) -> np.ndarray:
        """``(n, C)`` float32 points of object ``index``, relative to its box centre (a view)."""
        return self.points[self.offsets[index] : self.offsets[index + 1]]

    def save(self, path: str | Path) -> None:
        """Write the database to ``path`` atomically (:func:`hrnas.utils.atomic.atomic_path`: a temporary
        file in the same folder, synced, then renamed), so a crash never leaves a partial file under the
        final name."""
        with atomic_path(path) as tmp, open(tmp, "xb") as f:
            np.savez(
                f,
                version=np.int64(_DB_VERSION),
                fingerprint=np.str_(self.fingerprint),
                frame_ids=self.frame_ids.astype(np.str_),
                names=self.names.astype(np.str_),
                boxes=self.boxes,
                num_points=self.num_points,
                difficulty=self.difficulty,
                offsets=self.offsets,
                points=self.points,
            )
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str | Path) -> GtDatabase:
        """Read a file written by :meth:`save`.

        Raises:
            KittiFormatError: the file is not a database of this version.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != _DB_VERSION:
                    raise KittiFormatError(f"{path}: database version {int(data['version'])}, expected {_DB_VERSION}")
                return cls(
                    frame_ids=data["frame_ids"],
                    names=data["names"],
                    boxes=data["boxes"].astype(np.float64),
                    num_points=data["num_points"].astype(np.int64),
                    difficulty=data["difficulty"].astype(np.int64),
                    offsets=data["offsets"].astype(np.int64),
                    points=data["points"].astype(np.float32, copy=False),
                    fingerprint=str(data["fingerprint"]),
                )
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, KittiFormatError):
                raise
            raise KittiFormatError(f"{path}: not a ground-truth database ({type(exc).__name__}: {exc})") from None


def _frames_fingerprint(root: Path, split: str, frames: Sequence[FrameFiles], num_features: int) -> str:
    digest = hashlib.sha1()
    for f in frames:
        digest.update(f.frame_id.encode())
        for path in (f.velodyne, f.calib, f.label):
            st = path.stat()  # type: ignore[union-attr]
            digest.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return json.dumps(
        {
            "version": _DB_VERSION,
            "root": str(root.resolve()),
            "split": split,
            "frames": len(frames),
            "num_point_features": num_features,
            "files_sha1": digest.hexdigest(),
        },
        sort_keys=True,
    )


def build_gt_database(root: str | Path, split: str = "train", num_point_features: int = 4) -> GtDatabase:
    """Collect every labelled object (DontCare excluded) of ``split`` with the points of its frame's
    **full** scan inside its box (OpenPCDet ``create_groundtruth_database``).

    Raises:
        KittiFormatError: a frame's files are missing or malformed (the message names the file).
    """
    root = Path(root)
    frames = list_frames(root, split, labels=True)
    frame_ids, names, boxes, num_points, difficulty, chunks = [], [], [], [], [], []
    for files in frames:
        objects = read_label(files.label)  # type: ignore[arg-type]
        objects = objects.select(objects.name != "DontCare")
        if len(objects) == 0:
            continue
        calib = read_calib(files.calib)
        points = read_velodyne(files.velodyne, num_point_features)
        lidar = camera_to_lidar_boxes(objects.camera_boxes(), calib)
        lidar[:, 6] = wrap_angle(lidar[:, 6])
        inside = points_in_boxes(points, lidar)
        for k in range(len(objects)):
            obj = points[inside[:, k]].copy()
            obj[:, :3] = (obj[:, :3].astype(np.float64) - lidar[k, :3]).astype(np.float32)
            chunks.append(obj)
            num_points.append(obj.shape[0])
        frame_ids.extend([files.frame_id] * len(objects))
        names.extend(objects.name.tolist())
        boxes.append(lidar)
        difficulty.append(object_difficulty(objects))
    counts = np.asarray(num_points, dtype=np.int64)
    return GtDatabase(
        frame_ids=np.asarray(frame_ids, dtype=np.str_),
        names=np.asarray(names, dtype=np.str_),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 7)),
        num_points=counts,
        difficulty=np.concatenate(difficulty) if difficulty else np.zeros(0, dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        points=np.concatenate(chunks) if chunks else np.zeros((0, num_point_features), dtype=np.float32),
        fingerprint=_frames_fingerprint(root, split, frames, num_point_features),
    )


def default_database_path(root: str | Path, split: str) -> Path:
    """``ROOT/gt_database/kitti_dbinfos_SPLIT.npz``."""
    return Path(root) / "gt_database" / f"kitti_dbinfos_{split}.npz"


def load_or_build_gt_database(
    root: str | Path, split: str = "train", path: str | Path | None = None, num_point_features: int = 4
) -> GtDatabase:
    """The cached database of ``split`` at ``path`` (default :func:`default_database_path`), rebuilt and
    rewritten when the file is missing, unreadable, or was built from another root, split, frame list
    or other file sizes/mtimes."""
    root = Path(root)
    path = Path(path) if path is not None else default_database_path(root, split)
    frames = list_frames(root, split, labels=True)
    expected = _frames_fingerprint(root, split, frames, num_point_features)
    if path.is_file():
        try:
            db = GtDatabase.load(path)
        except KittiFormatError:
            db = None
        if db is not None and db.fingerprint == expected:
            return db
    db = build_gt_database(root, split, num_point_features)
    db.save(path)
    return db


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def _reference_groups() -> dict[str, int]:
    return {"Car": 15, "Pedestrian": 15, "Cyclist": 15}


def _reference_min_points() -> dict[str, int]:
    return {"Car": 5, "Pedestrian": 5, "Cyclist": 5}


@dataclass(frozen=True)
class GtSamplingConfig:
    """Ground-truth sampling (defaults: OpenPCDet ``pointpillar.yaml``).

    Attributes:
        enabled: paste database objects into training scenes.
        db_split: split the database is built from.
        db_path: cache file, relative to the dataset root unless absolute; ``None`` =
            ``gt_database/kitti_dbinfos_{db_split}.npz``.
        sample_groups: objects drawn per frame and class (``SAMPLE_GROUPS``), in drawing order.
        min_points: per class, database objects with fewer points are never drawn
            (``filter_by_min_points``).
        removed_difficulty: database objects of these difficulties are never drawn
            (``filter_by_difficulty``; -1 = neither easy, moderate nor hard).
        limit_whole_scene: draw ``count - objects of that class already in the frame``.
        remove_extra_width: metres added to ``dx, dy, dz`` of drawn boxes when removing scene points.
        use_road_plane: put drawn boxes on the frame's road plane (``planes/ID.txt``): ``True`` = every
            frame needs one, ``False`` = off, ``None`` = on when the split folder has ``planes/``.
    """

    enabled: bool = True
    db_split: str = "train"
    db_path: str | None = None
    sample_groups: Mapping[str, int] = field(default_factory=_reference_groups)
    min_points: Mapping[str, int] = field(default_factory=_reference_min_points)
    removed_difficulty: tuple[int, ...] = (-1,)
    limit_whole_scene: bool = False
    remove_extra_width: tuple[float, float, float] = (0.0, 0.0, 0.0)
    use_road_plane: bool | None = None

    def __post_init__(self) -> None:
        for key in ("sample_groups", "min_points"):
            for name, count in dict(getattr(self, key)).items():
                if name not in KITTI_TYPES or name == "DontCare":
                    raise ValueError(f"gt_sampling.{key}: unknown class {name!r}")
                if int(count) != count or count < 0:
                    raise ValueError(f"gt_sampling.{key}.{name}: expected an integer >= 0, got {count!r}")
        if len(self.remove_extra_width) != 3 or any(w < 0 for w in self.remove_extra_width):
            raise ValueError(f"gt_sampling.remove_extra_width: expected 3 values >= 0, got {self.remove_extra_width!r}")


class GtSampler:
    """Ground-truth sampling over a :class:`GtDatabase` for the classes ``classes``.

    Classes of ``config.sample_groups`` that are not in ``classes`` are not drawn (as the reference).
    """

    def __init__(self, database: GtDatabase, config: GtSamplingConfig, classes: Sequence[str]) -> None:
        self.database = database
        self.config = config
        min_points = dict(config.min_points)
        keep_difficulty = ~np.isin(database.difficulty, np.asarray(config.removed_difficulty, dtype=np.int64))
        self.groups: list[tuple[str, int, np.ndarray]] = []
        for name, count in config.sample_groups.items():
            if name not in classes:
                continue
            ok = (database.names == name) & keep_difficulty & (database.num_points >= min_points.get(name, 0))
            self.groups.append((name, int(count), np.flatnonzero(ok)))

    def pool_sizes(self) -> dict[str, int]:
        """Database objects that may be drawn, per class."""
        return {name: int(pool.size) for name, _, pool in self.groups}

    def __call__(
        self,
        points: np.ndarray,
        boxes: np.ndarray,
        names: np.ndarray,
        rng: np.random.Generator,
        calib: KittiCalib | None = None,
        road_plane: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paste database objects into a scene.

        Args:
            points: ``(N, C)`` float32 scene points.
            boxes: ``(M, 7)`` LiDAR boxes of the scene's objects (every class but DontCare: all count in
                the collision check).
            names: ``(M,)`` their types.
            rng: the per-sample generator (drawn: one choice per class with a non-empty pool).
            calib, road_plane: needed when ``road_plane`` is given (boxes are put on it).

        Returns:
            ``points`` ``(N' , C)`` float32 with the drawn objects' points first and the scene points inside
            the drawn boxes removed; ``boxes`` ``(M + S, 7)`` and ``names`` ``(M + S,)`` with the ``S``
            drawn boxes appended. Inputs are not modified.
        """
        db = self.database
        existing = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        picked: list[np.ndarray] = []
        for name, count, pool in self.groups:
            n = count - int(np.sum(names == name)) if self.config.limit_whole_scene else count
            if n <= 0 or pool.size == 0:
                continue
            chosen = rng.choice(pool, size=min(n, pool.size), replace=False)
            cand = db.boxes[chosen]
            among = bev_iou_lidar(cand, cand)
            np.fill_diagonal(among, 0.0)
            with_scene = bev_iou_lidar(cand, existing) if existing.shape[0] else among
            valid = (with_scene.max(axis=1) + among.max(axis=1)) == 0
            picked.append(chosen[valid])
            existing = np.concatenate([existing, cand[valid]])
        chosen_all = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
        if chosen_all.size == 0:
            return points, np.asarray(boxes, dtype=np.float64).reshape(-1, 7), np.asarray(names)
        new_boxes = db.boxes[chosen_all].copy()
        if road_plane is not None:
            if calib is None:
                raise ValueError("a road plane needs the frame's calibration")
            new_boxes, _ = put_boxes_on_road_plane(new_boxes, road_plane, calib)
        obj_points = []
        for k, idx in enumerate(chosen_all):
            obj = db.object_points(int(idx)).astype(np.float64)
            obj[:, :3] += new_boxes[k, :3]
            obj_points.append(obj.astype(np.float32))
        removal = new_boxes.copy()
        removal[:, 3:6] += np.asarray(self.config.remove_extra_width, dtype=np.float64)
        scene = points[~points_in_boxes(points, removal).any(axis=1)]
        out_points = np.concatenate([*obj_points, scene.astype(np.float32, copy=False)], axis=0)
        out_boxes = np.concatenate([np.asarray(boxes, dtype=np.float64).reshape(-1, 7), new_boxes])
        out_names = np.concatenate([np.asarray(names, dtype=np.str_), db.names[chosen_all]])
        return out_points, out_boxes, out_names
