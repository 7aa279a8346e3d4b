"""Readers and writers for the KITTI 3D object detection files.

Covers the official layout of the KITTI object benchmark (Geiger et al., CVPR 2012) as used by
PointPillars/OpenPCDet:

* ``label_2/NNNNNN.txt``: one object per line, 15 space-separated fields (result files add a 16th,
  the score). Parsed into :class:`KittiObjects`, a struct of numpy arrays.
* ``calib/NNNNNN.txt``: ``KEY: v1 v2 ...`` lines, row-major. Parsed into :class:`KittiCalib`.
* ``velodyne/NNNNNN.bin``: little-endian float32, ``(N, 4)`` = x forward, y left, z up (metres),
  reflectance.
* ``image_2/NNNNNN.png``: only the size is read (from the PNG header).
* ``ImageSets/*.txt``: one frame id per line.

Every malformed input raises :class:`KittiFormatError` with a one-line message that starts with
``path:line:`` (or ``path:`` when no line applies).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrnas.data.errors import DatasetError

__all__ = [
    "KITTI_TYPES",
    "KittiCalib",
    "KittiFormatError",
    "KittiObjects",
    "format_calib",
    "format_label_lines",
    "parse_calib",
    "parse_label_lines",
    "read_calib",
    "read_ids",
    "read_ids_with_lines",
    "read_image_size",
    "read_label",
    "read_velodyne",
    "write_calib",
    "write_label",
    "write_velodyne",
]

KITTI_TYPES: tuple[str, ...] = (
    "Car",
    "Van",
    "Truck",
    "Pedestrian",
    "Person_sitting",
    "Cyclist",
    "Tram",
    "Misc",
    "DontCare",
)
"""Object types allowed in ``label_2`` and result files (case-sensitive, as in the devkit)."""

_NUM_LABEL_FIELDS = 15


class KittiFormatError(DatasetError):
    """A KITTI file (label, result, calib, velodyne, image, id list) is malformed.

    The message is one line and names the file and, where it applies, the 1-based line number.
    """


def _where(source: str | Path, line: int | None = None) -> str:
    return f"{source}:{line}" if line is not None else f"{source}"


# --------------------------------------------------------------------------------------------------
# Labels and results
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class KittiObjects:
    """The objects of one frame, as a struct of arrays (``N`` objects, file order kept).

    Frames and units follow ``label_2``:

    * ``name``: ``(N,)`` str, one of :data:`KITTI_TYPES`.
    * ``truncated``: ``(N,)`` float64 in [0, 1] (-1 for DontCare and for predictions).
    * ``occluded``: ``(N,)`` int64, 0..3 (-1 for DontCare and for predictions).
    * ``alpha``: ``(N,)`` float64, observation angle in radians (-10 = unknown).
    * ``bbox``: ``(N, 4)`` float64, 2D box in image_2 pixels ``x1, y1, x2, y2`` (0-based).
    * ``dimensions``: ``(N, 3)`` float64 metres in **file order** ``h, w, l`` (note: the
      OpenPCDet/mmdet3d info dicts reorder this to ``l, h, w``; see :meth:`from_annos`).
    * ``location``: ``(N, 3)`` float64, bottom centre of the 3D box in the rectified camera-0 frame
      (x right, y down, z forward), metres.
    * ``rotation_y``: ``(N,)`` float64, yaw about the camera y axis in radians (0 = length along +x).
    * ``score``: ``(N,)`` float64 or ``None`` (labels have none; results do).
    """

    name: np.ndarray
    truncated: np.ndarray
    occluded: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    dimensions: np.ndarray
    location: np.ndarray
    rotation_y: np.ndarray
    score: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.name = np.asarray(self.name, dtype=np.str_).reshape(-1)
        n = self.name.shape[0]
        self.truncated = np.asarray(self.truncated, dtype=np.float64).reshape(n)
        self.occluded = np.asarray(self.occluded, dtype=np.int64).reshape(n)
        self.alpha = np.asarray(self.alpha, dtype=np.float64).reshape(n)
        self.bbox = np.asarray(self.bbox, dtype=np.float64).reshape(n, 4)
        self.dimensions = np.asarray(self.dimensions, dtype=np.float64).reshape(n, 3)
        self.location = np.asarray(self.location, dtype=np.float64).reshape(n, 3)
        self.rotation_y = np.asarray(self.rotation_y, dtype=np.float64).reshape(n)
        if self.score is not None:
            self.score = np.asarray(self.score, dtype=np.float64).reshape(n)

    def __len__(self) -> int:
        return int(self.name.shape[0])

    @classmethod
    def empty(cls, with_score: bool = False) -> KittiObjects:
        """No objects; ``score`` is an empty array when ``with_score`` (a frame without detections)."""
        return cls(
            name=np.zeros(0, dtype=np.str_),
            truncated=np.zeros(0),
            occluded=np.zeros(0, dtype=np.int64),
            alpha=np.zeros(0),
            bbox=np.zeros((0, 4)),
            dimensions=np.zeros((0, 3)),
            location=np.zeros((0, 3)),
            rotation_y=np.zeros(0),
            score=np.zeros(0) if with_score else None,
        )

    @classmethod
    def from_annos(cls, annos: Mapping[str, object]) -> KittiObjects:
        """Build from an OpenPCDet/mmdet3d-style annotation dict.

        Keys ``name, truncated, occluded, alpha, bbox, dimensions, location, rotation_y`` and optionally
        ``score``. As in those code bases, ``dimensions`` is ordered **l, h, w** there and is reordered
        to the file order ``h, w, l`` here.
        """
        dims_lhw = np.asarray(annos["dimensions"], dtype=np.float64).reshape(-1, 3)
        score = annos.get("score")
        return cls(
            name=np.asarray(annos["name"], dtype=np.str_),
            truncated=np.asarray(annos["truncated"]),
            occluded=np.asarray(annos["occluded"]),
            alpha=np.asarray(annos["alpha"]),
            bbox=np.asarray(annos["bbox"]),
            dimensions=dims_lhw[:, [1, 2, 0]],
            location=np.asarray(annos["location"]),
            rotation_y=np.asarray(annos["rotation_y"]),
            score=None if score is None else np.asarray(score),
        )

    def select(self, index: np.ndarray | Sequence[int] | slice) -> KittiObjects:
        """The objects picked by a boolean mask, an index array or a slice (order as given)."""
        return KittiObjects(
            name=self.name[index],
            truncated=self.truncated[index],
            occluded=self.occluded[index],
            alpha=self.alpha[index],
            bbox=self.bbox[index],
            dimensions=self.dimensions[index],
            location=self.location[index],
            rotation_y=self.rotation_y[index],
            score=None if self.score is None else self.score[index],
        )

    def camera_boxes(self) -> np.ndarray:
        """``(N, 7)`` float64 boxes ``[x, y, z, l, h, w, ry]`` in the rectified camera frame.

        ``(x, y, z)`` is the bottom centre (the label ``location``); the order is the one of OpenPCDet's
        ``boxes3d_camera`` and of the official evaluation's 3D boxes.
        """
        h, w, l = self.dimensions[:, 0], self.dimensions[:, 1], self.dimensions[:, 2]
        return np.concatenate([self.location, np.stack([l, h, w, self.rotation_y], axis=1)], axis=1).astype(np.float64)


def _parse_float(token: str, field: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise KittiFormatError(f"{where}: field {field!r} is not a number: {token!r}") from None
    if not math.isfinite(value):
        raise KittiFormatError(f"{where}: field {field!r} is not finite: {token!r}")
    return value


_FIELD_NAMES = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "x1",
    "y1",
    "x2",
    "y2",
    "h",
    "w",
    "l",
    "x",
    "y",
    "z",
    "rotation_y",
    "score",
)


def parse_label_lines(
    lines: Iterable[str], source: str | Path = "<labels>", *, require_score: bool = False
) -> KittiObjects:
    """Parse ``label_2``-format lines (blank lines are skipped).

    Each line has 15 fields, or 16 with a trailing score; all lines of one file must agree. With
    ``require_score`` (result files) every line must have 16 fields.

    Raises:
        KittiFormatError: ``source:line: ...`` for a wrong field count, an unknown type, a
            non-numeric or non-finite value, a non-integer ``occluded``, or mixed 15/16-field lines.
    """
    names: list[str] = []
    values: list[list[float]] = []
    occluded: list[int] = []
    has_score: bool | None = None
    for lineno, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields:
            continue
        where = _where(source, lineno)
        expected = "16" if require_score else "15 or 16"
        if len(fields) not in (15, 16) or (require_score and len(fields) != 16):
            raise KittiFormatError(f"{where}: expected {expected} fields, got {len(fields)}")
        line_has_score = len(fields) == 16
        if has_score is None:
            has_score = line_has_score
        elif has_score != line_has_score:
            raise KittiFormatError(f"{where}: mixes lines with and without a score")
        if fields[0] not in KITTI_TYPES:
            raise KittiFormatError(f"{where}: unknown object type {fields[0]!r} (known: {', '.join(KITTI_TYPES)})")
        nums = [_parse_float(tok, _FIELD_NAMES[i + 1], where) for i, tok in enumerate(fields[1:])]
        if nums[1] != int(nums[1]):
            raise KittiFormatError(f"{where}: field 'occluded' is not an integer: {fields[2]!r}")
        if fields[0] != "DontCare":
            for index in (7, 8, 9):  # h, w, l: a DontCare region has the -1 placeholders, an object has a size
                if nums[index] <= 0:
                    raise KittiFormatError(
                        f"{where}: field {_FIELD_NAMES[index + 1]!r} is {fields[index + 1]} for a {fields[0]}, "
                        "expected a positive size in metres"
                    )
        names.append(fields[0])
        occluded.append(int(nums[1]))
        values.append(nums)
    if not names:
        return KittiObjects.empty(with_score=bool(require_score))
    arr = np.asarray(values, dtype=np.float64)
    return KittiObjects(
        name=np.asarray(names, dtype=np.str_),
        truncated=arr[:, 0],
        occluded=np.asarray(occluded, dtype=np.int64),
        alpha=arr[:, 2],
        bbox=arr[:, 3:7],
        dimensions=arr[:, 7:10],
        location=arr[:, 10:13],
        rotation_y=arr[:, 13],
        score=arr[:, 14] if has_score else None,
    )


def read_label(path: str | Path, *, require_score: bool = False) -> KittiObjects:
    """Read a ``label_2`` file, or a result file with ``require_score=True`` (see
    :func:`parse_label_lines`)."""
    return parse_label_lines(read_ascii(path, "label").splitlines(), source=Path(path), require_score=require_score)


def read_ascii(path: str | Path, what: str) -> str:
    """The text of a KITTI text file; KittiFormatError naming it when it is missing, unreadable or not ASCII."""
    path = Path(path)
    try:
        return path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise KittiFormatError(f"{path}: not an ASCII text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise KittiFormatError(f"{path}: cannot read {what} file ({exc.strerror})") from None


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _fmt_sentinel(value: float, decimals: int) -> str:
    # DontCare lines carry integer sentinels (-1, -10, -1000), written without decimals officially.
    return str(int(value)) if value == int(value) else _fmt(value, decimals)


def format_label_lines(objects: KittiObjects, *, decimals: int = 2, score_decimals: int = 4) -> list[str]:
    """Format objects as ``label_2`` lines (no trailing newline), the score appended when present.

    Floats use ``decimals`` digits (the official files use 2), ``occluded`` is an integer and the
    score uses ``score_decimals``. DontCare lines keep their integer sentinels, e.g.
    ``DontCare -1 -1 -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10``, as in the official files.
    """
    lines = []
    for i in range(len(objects)):
        name = str(objects.name[i])
        geometry = [
            float(objects.alpha[i]),
            *objects.bbox[i].tolist(),
            *objects.dimensions[i].tolist(),
            *objects.location[i].tolist(),
            float(objects.rotation_y[i]),
        ]
        if name == "DontCare":
            head = [_fmt_sentinel(float(objects.truncated[i]), decimals), str(int(objects.occluded[i]))]
            body = [_fmt(v, decimals) if 1 <= k <= 4 else _fmt_sentinel(v, decimals) for k, v in enumerate(geometry)]
        else:
            head = [_fmt(float(objects.truncated[i]), decimals), str(int(objects.occluded[i]))]
            body = [_fmt(v, decimals) for v in geometry]
        tokens = [name, *head, *body]
        if objects.score is not None:
            tokens.append(_fmt(float(objects.score[i]), score_decimals))
        lines.append(" ".join(tokens))
    return lines


def write_label(path: str | Path, objects: KittiObjects, *, decimals: int = 2, score_decimals: int = 4) -> None:
    """Write a ``label_2``/result file (one line per object, each ending in a newline)."""
    lines = format_label_lines(objects, decimals=decimals, score_decimals=score_decimals)
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="ascii")


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------

_CALIB_SHAPES: dict[str, tuple[int, int]] = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R0_rect": (3, 3),
    "Tr_velo_to_cam": (3, 4),
    "Tr_imu_to_velo": (3, 4),
}
_CALIB_ALIASES = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}
_CALIB_REQUIRED = ("P2", "R0_rect", "Tr_velo_to_cam")


@dataclass(frozen=True, eq=False)
class KittiCalib:
    """The calibration of one frame (float64 matrices, metres).

    * ``P0..P3``: ``(3, 4)`` projections from the rectified camera-0 frame to the image of camera
      0..3 (P2 = ``image_2``); ``P0, P1, P3`` may be ``None``.
    * ``R0_rect``: ``(3, 3)`` rectifying rotation of camera 0.
    * ``Tr_velo_to_cam``: ``(3, 4)`` LiDAR -> unrectified camera-0 frame.
    * ``Tr_imu_to_velo``: ``(3, 4)`` or ``None`` (unused by detectors).

    ``x_rect = R0_rect @ Tr_velo_to_cam @ [x, y, z, 1]`` (each padded to 4x4).
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    P0: np.ndarray | None = None
    P1: np.ndarray | None = None
    P3: np.ndarray | None = None
    Tr_imu_to_velo: np.ndarray | None = None

    def velo_to_rect(self) -> np.ndarray:
        """``(4, 4)`` homogeneous transform LiDAR -> rectified camera-0 frame."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3, :] = self.Tr_velo_to_cam
        return r0 @ tr

    def rect_to_velo(self) -> np.ndarray:
        """``(4, 4)`` homogeneous transform rectified camera-0 -> LiDAR (the inverse of
        :meth:`velo_to_rect`)."""
        return np.linalg.inv(self.velo_to_rect())


def parse_calib(lines: Iterable[str], source: str | Path = "<calib>") -> KittiCalib:
    """Parse calib lines ``KEY: v1 v2 ...`` (the colon is optional; blank lines are skipped).

    Keys other than those of :class:`KittiCalib` are ignored; the tracking-benchmark spellings
    ``R_rect``, ``Tr_velo_cam``, ``Tr_imu_velo`` are accepted.

    Raises:
        KittiFormatError: a wrong value count, a non-numeric value, a repeated key, or a missing
            ``P2``, ``R0_rect`` or ``Tr_velo_to_cam``.
    """
    mats: dict[str, np.ndarray] = {}
    for lineno, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields:
            continue
        where = _where(source, lineno)
        key = fields[0].rstrip(":")
        key = _CALIB_ALIASES.get(key, key)
        if key not in _CALIB_SHAPES:
            continue
        if key in mats:
            raise KittiFormatError(f"{where}: key {key!r} repeated")
        shape = _CALIB_SHAPES[key]
        if len(fields) - 1 != shape[0] * shape[1]:
            raise KittiFormatError(f"{where}: {key} needs {shape[0] * shape[1]} values, got {len(fields) - 1}")
        vals = [_parse_float(tok, key, where) for tok in fields[1:]]
        mats[key] = np.asarray(vals, dtype=np.float64).reshape(shape)
    for key in _CALIB_REQUIRED:
        if key not in mats:
            raise KittiFormatError(f"{_where(source)}: calibration has no {key}")
    return KittiCalib(**mats)


def read_calib(path: str | Path) -> KittiCalib:
    """Read a ``calib/NNNNNN.txt`` file (see :func:`parse_calib`)."""
    return parse_calib(read_ascii(path, "calibration").splitlines(), source=Path(path))


def format_calib(calib: KittiCalib) -> str:
    """The official text form: ``KEY: v ...`` with ``%.12e`` values, keys in file order, ending with a
    blank line. Missing optional matrices are left out."""
    lines = []
    for key in _CALIB_SHAPES:
        mat = getattr(calib, key)
        if mat is None:
            continue
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in np.asarray(mat).reshape(-1)))
    return "\n".join(lines) + "\n\n"


def write_calib(path: str | Path, calib: KittiCalib) -> None:
    """Write :func:`format_calib` to ``path``."""
    Path(path).write_text(format_calib(calib), encoding="ascii")


# --------------------------------------------------------------------------------------------------
# Point clouds, images, id lists
# --------------------------------------------------------------------------------------------------


def read_velodyne(path: str | Path, num_features: int = 4) -> np.ndarray:
    """Read a ``velodyne/*.bin`` scan as ``(N, num_features)`` float32 (x, y, z in metres, LiDAR frame:
    x forward, y left, z up; then reflectance).

    Raises:
        KittiFormatError: the size is not a multiple of ``4 * num_features`` bytes, or a value is
            NaN/inf (the message names the first bad point).
    """
    path = Path(path)
    size = path.stat().st_size
    stride = 4 * num_features
    if size % stride:
        raise KittiFormatError(f"{path}: size {size} bytes is not a multiple of {stride} (float32 x {num_features})")
    points = np.fromfile(path, dtype="<f4").reshape(-1, num_features).astype(np.float32, copy=False)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise KittiFormatError(f"{path}: point {first} has a non-finite value ({int((~finite).sum())} bad points)")
    return points


def write_velodyne(path: str | Path, points: np.ndarray) -> None:
    """Write ``(N, C)`` points as little-endian float32 (the ``velodyne/*.bin`` layout)."""
    arr = np.asarray(points)
    if arr.ndim != 2:
        raise ValueError(f"points must be (N, C), got shape {arr.shape}")
    arr.astype("<f4").tofile(Path(path))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` in pixels of a PNG image, read from its header (no decoding)."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise KittiFormatError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def read_ids(path: str | Path) -> list[str]:
    """Frame ids of an ``ImageSets`` list, one per line (blank lines skipped; a missing final newline
    is fine).

    Raises:
        KittiFormatError: a line holds more than one token.
    """
    return [frame_id for frame_id, _ in read_ids_with_lines(path)]


def read_ids_with_lines(path: str | Path) -> list[tuple[str, int]]:
    """:func:`read_ids` with each id's 1-based line number, for messages that point at the line."""
    path = Path(path)
    out = []
    for lineno, raw in enumerate(read_ascii(path, "frame list").splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise KittiFormatError(f"{_where(path, lineno)}: expected one frame id, got {raw.strip()!r}")
        out.append((fields[0], lineno))
    return out
