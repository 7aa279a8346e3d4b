"""Where the files of a KITTI object-detection frame live, checked before anything is read.

The official layout (Geiger et al., CVPR 2012) as used by OpenPCDet::

    ROOT/ImageSets/{train,val,trainval,test}.txt          one frame id per line
    ROOT/training/{velodyne,calib,image_2,label_2}/ID.*   splits other than ``test``
    ROOT/testing/{velodyne,calib,image_2}/ID.*            split ``test`` (no labels)
    ROOT/training/planes/ID.txt                           optional road planes

:func:`list_frames` resolves a split into :class:`FrameFiles` and fails with one line naming the list
file and line of the first id whose files are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hrnas.tasks.kitti.formats import KittiFormatError, read_ids_with_lines

__all__ = ["FrameFiles", "list_frames", "split_folder", "split_list_path"]


@dataclass(frozen=True)
class FrameFiles:
    """The files of one frame. ``label``/``plane`` are ``None`` when not used or not present."""

    frame_id: str
    velodyne: Path
    calib: Path
    image: Path
    label: Path | None
    plane: Path | None


def split_folder(split: str) -> str:
    """``testing`` for the ``test`` split, ``training`` for every other (as OpenPCDet)."""
    return "testing" if split == "test" else "training"


def split_list_path(root: str | Path, split: str) -> Path:
    """``ROOT/ImageSets/SPLIT.txt``."""
    return Path(root) / "ImageSets" / f"{split}.txt"


def _read_frame_ids(path: Path) -> list[tuple[str, int]]:
    """The split list's ids with their line numbers; an id must be a plain file name."""
    out = read_ids_with_lines(path)
    for frame_id, lineno in out:
        if "/" in frame_id or "\\" in frame_id or frame_id in (".", ".."):
            raise KittiFormatError(f"{path}:{lineno}: frame id {frame_id!r} is not a file name")
    return out


def list_frames(
    root: str | Path, split: str, *, labels: bool | None = None, road_planes: bool | None = False
) -> list[FrameFiles]:
    """The frames of ``split``, in list order, with every needed file checked to exist.

    Args:
        root: dataset root (holds ``ImageSets/`` and ``training/``/``testing/``).
        split: list name, e.g. ``train``, ``val``, ``test``.
        labels: ``True`` = every frame needs ``label_2/ID.txt``; ``False`` = labels are not used;
            ``None`` = used when the split folder has a ``label_2`` directory (then every frame needs one).
        road_planes: the same three choices for ``planes/ID.txt``.

    Raises:
        KittiFormatError: ``ROOT`` or the list is missing (``path: ...``), or ``list:line: frame ID has
            no FILE`` for the first id missing a velodyne, calib, image or (when used) label/plane file.
    """
    root = Path(root)
    if not root.is_dir():
        raise KittiFormatError(f"{root}: KITTI root is not a directory")
    list_path = split_list_path(root, split)
    if not list_path.is_file():
        sets = root / "ImageSets"
        known = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
        raise KittiFormatError(f"{list_path}: no such split list (known: {', '.join(known) or 'none'})")
    folder = root / split_folder(split)
    use_labels = (folder / "label_2").is_dir() if labels is None else labels
    use_planes = (folder / "planes").is_dir() if road_planes is None else road_planes
    frames = []
    for frame_id, lineno in _read_frame_ids(list_path):
        files = FrameFiles(
            frame_id=frame_id,
            velodyne=folder / "velodyne" / f"{frame_id}.bin",
            calib=folder / "calib" / f"{frame_id}.txt",
            image=folder / "image_2" / f"{frame_id}.png",
            label=folder / "label_2" / f"{frame_id}.txt" if use_labels else None,
            plane=folder / "planes" / f"{frame_id}.txt" if use_planes else None,
        )
        for path in (files.velodyne, files.calib, files.image, files.label, files.plane):
            if path is not None and not path.is_file():
                raise KittiFormatError(f"{list_path}:{lineno}: frame {frame_id} has no {path}")
        frames.append(files)
    return frames
