"""``hrnas kitti-eval LABEL_DIR RESULT_DIR [--ids FILE] [--json]``: official KITTI AP of result files.

``LABEL_DIR`` holds the ground-truth ``NNNNNN.txt`` files (``label_2`` format) and ``RESULT_DIR`` one
result file per frame in the same format plus a 16th score field. The frames are those listed by
``--ids`` (an ``ImageSets`` file), else every ``*.txt`` of ``LABEL_DIR``. A frame without a result file
has no detections. Bad input (a malformed line, a missing label file) prints one ``error: file:line:
...`` line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hrnas.data.errors import DatasetError
from hrnas.tasks.base import TaskError
from hrnas.tasks.kitti.eval import CLASS_NAMES, evaluate_kitti, format_kitti_table
from hrnas.tasks.kitti.formats import KittiObjects, read_ids, read_label
from hrnas.utils.errors import HrnasError

__all__ = ["add_arguments", "build_parser", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``kitti-eval`` arguments to ``parser`` (for use as a subcommand)."""
    parser.add_argument("label_dir", metavar="LABEL_DIR", type=Path, help="ground-truth label_2 folder")
    parser.add_argument("result_dir", metavar="RESULT_DIR", type=Path, help="folder of result files")
    parser.add_argument("--ids", type=Path, default=None, help="file of frame ids (default: all labels)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--classes",
        default="Car,Pedestrian,Cyclist",
        help=f"comma-separated classes (known: {', '.join(CLASS_NAMES)})",
    )


def build_parser(prog: str = "hrnas kitti-eval") -> argparse.ArgumentParser:
    """The stand-alone argument parser."""
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n", 1)[0])
    add_arguments(parser)
    return parser


def _load(args: argparse.Namespace) -> tuple[list[KittiObjects], list[KittiObjects]]:
    label_dir: Path = args.label_dir
    result_dir: Path = args.result_dir
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: label folder not found")
    if not result_dir.is_dir():
        raise DatasetError(f"{result_dir}: result folder not found")
    ids = read_ids(args.ids) if args.ids is not None else sorted(p.stem for p in label_dir.glob("*.txt"))
    if not ids:
        raise DatasetError(f"{args.ids or label_dir}: no frames to evaluate")
    gts, dts = [], []
    for frame_id in ids:
        label_path = label_dir / f"{frame_id}.txt"
        if not label_path.is_file():
            raise DatasetError(f"{label_path}: label file not found")
        gts.append(read_label(label_path))
        result_path = result_dir / f"{frame_id}.txt"
        if result_path.is_file():
            dts.append(read_label(result_path, require_score=True))
        else:
            dts.append(KittiObjects.empty(with_score=True))
    return gts, dts


def run(args: argparse.Namespace) -> int:
    """Evaluate and print; returns 0. Bad input raises a one-line :class:`~hrnas.tasks.base.TaskError`
    (``--classes``) or :class:`~hrnas.data.errors.DatasetError` / ``OSError`` (label and result files), which
    ``hrnas`` (and :func:`main`) print as one line."""
    classes = tuple(c.strip() for c in str(args.classes).split(",") if c.strip())
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown or not classes:
        raise TaskError(f"--classes {args.classes}: unknown class {unknown} (known: {', '.join(CLASS_NAMES)})")
    gts, dts = _load(args)
    results = evaluate_kitti(gts, dts, classes)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_kitti_table(results), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` (default ``sys.argv[1:]``), evaluate, return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    try:
        return run(args)
    except (HrnasError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
