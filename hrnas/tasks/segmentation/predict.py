"""``hrnas predict`` for segmentation: run a trained network on image files and write what it sees.

For each image: ``{stem}_labels.png`` (uint8 label map, one value per class id) and ``{stem}_overlay.png``
(the image blended half and half with a colour per class); the classes present are printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from hrnas.data.errors import DatasetError
from hrnas.data.images import palette, read_image, save_png
from hrnas.tasks.segmentation.transforms import SegEvalTransform

if TYPE_CHECKING:
    from hrnas.tasks.segmentation.task import SegmentationTask


def predict_segmentation(
    task: SegmentationTask, model: nn.Module, images: Sequence[str | Path], out_dir: Path
) -> list[Path]:
    """Write the label map and the overlay of every image in ``images`` into ``out_dir`` (created), with
    the task's inference mode (:meth:`SegmentationTask.predict_logits`); return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = SegEvalTransform()
    names = task.class_names()
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
        label_path = save_png(labels, out_dir / f"{path.stem}_labels.png")
        overlay_path = save_png(overlay, out_dir / f"{path.stem}_overlay.png")
        present = [names[i] for i in np.unique(labels)]
        print(f"{path}: {', '.join(present)}")
        written += [label_path, overlay_path]
    return written
