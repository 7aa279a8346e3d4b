"""``hrnas predict``: run a trained network on image files and write what it sees.

Segmentation: ``{stem}_labels.png`` (uint8 label map, one value per class id) and ``{stem}_overlay.png``
(the image blended with a colour per class, with a legend of the classes present).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from hrnas.data.errors import DatasetError
from hrnas.data.seg_transforms import SegEvalTransform
from hrnas.data.segmentation import read_image
from hrnas.tasks.base import TaskError, get_task


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours; class 0 dark grey, the rest spread over the hue circle."""
    import colorsys

    colours = [(64, 64, 64)]
    for i in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours[:num_classes], dtype=np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)


def predict_segmentation(task: Any, model: nn.Module, images: Sequence[str | Path], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = SegEvalTransform()
    names = task.class_names() if hasattr(task, "class_names") else [str(i) for i in range(task.num_outputs())]
    colours = palette(len(names))
    written = []
    model.eval()
    for item in images:
        path = Path(item)
        if not path.is_file():
            raise DatasetError(f"{path}: no such image")
        raw = read_image(path)
        x, _ = transform(raw, None)
        with torch.no_grad():
            probs = task.predict_logits(model, x.unsqueeze(0))
        labels = probs.argmax(1)[0].to(torch.uint8).numpy()
        rgb = raw.permute(1, 2, 0).numpy()
        overlay = (0.5 * rgb + 0.5 * colours[labels]).astype(np.uint8)
        label_path = out_dir / f"{path.stem}_labels.png"
        overlay_path = out_dir / f"{path.stem}_overlay.png"
        _save_png(labels, label_path)
        _save_png(overlay, overlay_path)
        present = [names[i] for i in np.unique(labels)]
        print(f"{path}: {', '.join(present)}")
        written += [label_path, overlay_path]
    return written


def predict(
    cfg: Any, model: nn.Module, images: Sequence[str | Path], out_dir: Path, split: str | None = None
) -> list[Path]:
    """Write predictions for ``images`` (or, for a task reading a whole split such as KITTI, for the
    frames of ``split``, default the validation split) into ``out_dir``; returns the files written."""
    task = get_task(cfg)
    if hasattr(task, "predict_split"):
        if images:
            raise TaskError(f"predict: task {cfg.task.name!r} reads dataset frames; give --split NAME, not files")
        return task.predict_split(model, split or cfg.data.val_split, out_dir)
    if split is not None:
        raise TaskError(f"predict: --split is for KITTI; task {cfg.task.name!r} predicts the image files given")
    if not images:
        raise TaskError(f"predict: give the image files to run task {cfg.task.name!r} on")
    if cfg.task.name == "segmentation":
        return predict_segmentation(task, model, images, out_dir)
    if hasattr(task, "predict_files"):
        return task.predict_files(model, images, out_dir)
    raise TaskError(f"predict: not available for task {cfg.task.name!r}")
