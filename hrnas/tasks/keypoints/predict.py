"""``hrnas predict`` for keypoints: draw the predicted joints and skeleton on image files.

For each image: ``{stem}_keypoints.png`` (boxes, limbs and joints drawn on the image), and for all of them
``keypoints.json``. Boxes are those of the validation annotations (or ``task.det_file``) for an image with
the same file name, otherwise the whole image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch import nn

from hrnas.data.errors import DatasetError
from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD, palette, read_image_array, save_png
from hrnas.tasks.keypoints.codec import decode_heatmaps, get_affine_transform, transform_preds
from hrnas.utils.atomic import atomic_write_text

if TYPE_CHECKING:
    from hrnas.tasks.keypoints.task import KeypointsTask

VIS_THRESH = 0.2
"""Joints whose heatmap peak is below this are not drawn."""


@torch.no_grad()
def predict_keypoints(task: KeypointsTask, model: nn.Module, images: Sequence[str | Path], out_dir: Path) -> list[Path]:
    """Draw the predicted keypoints and skeleton on each image.

    Boxes are those of the validation annotations (or ``task.det_file``) for an image with the same
    file name, otherwise the whole image. Writes ``{stem}_keypoints.png`` per image and
    ``keypoints.json`` (a list of ``{"image", "instances": [{"box": [x, y, w, h], "score",
    "keypoints": [[x, y, confidence], ...]}]}``, image pixels); returns the files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    device = next(model.parameters()).device
    category, ds = task.prediction_context()
    pairs = category.flip_pairs if category is not None else None
    skeleton = category.skeleton if category is not None else ()
    h, w = task.input_size
    hh, hw = task.heatmap_size
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)
    std = np.array(IMAGENET_STD, dtype=np.float32)
    written: list[Path] = []
    records = []
    for item in images:
        path = Path(item)
        if not path.is_file():
            raise DatasetError(f"{path}: no such image")
        rgb = read_image_array(path)
        boxes = task.boxes_for(path, rgb, ds)
        crops = []
        for center, scale, _, _ in boxes:
            trans = get_affine_transform(center, scale, 0.0, (w, h))
            crop = cv2.warpAffine(rgb, trans, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            crops.append(torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).copy()))
        heatmaps = task.predict_heatmaps(model, torch.stack(crops).to(device), pairs)
        coords, maxvals = decode_heatmaps(heatmaps)
        centers = np.stack([np.asarray(b[0], dtype=np.float64) for b in boxes])
        scales = np.stack([np.asarray(b[1], dtype=np.float64) for b in boxes])
        preds = transform_preds(coords, centers, scales, (hw, hh))
        canvas = draw_keypoints(rgb, preds, maxvals[..., 0], [b[3] for b in boxes], skeleton)
        written.append(save_png(canvas, out_dir / f"{path.stem}_keypoints.png"))
        instances = [
            {
                "box": [float(v) for v in boxes[i][3]],
                "score": float(boxes[i][2]),
                "keypoints": [
                    [float(x), float(y), float(c)] for (x, y), c in zip(preds[i], maxvals[i, :, 0], strict=True)
                ],
            }
            for i in range(len(boxes))
        ]
        records.append({"image": str(path), "instances": instances})
        print(f"{path}: {len(boxes)} instance(s), mean joint confidence {float(maxvals.mean()):.2f}")
    out = atomic_write_text(out_dir / "keypoints.json", json.dumps(records, indent=1) + "\n")
    return [*written, out]



def draw_keypoints(
    rgb: np.ndarray,
    preds: np.ndarray,
    conf: np.ndarray,
    boxes: Sequence[np.ndarray],
    skeleton: Sequence[tuple[int, int]],
) -> np.ndarray:
    """``rgb (H, W, 3) uint8`` with boxes, limbs (both ends above :data:`VIS_THRESH`) and joints drawn."""
    canvas = np.ascontiguousarray(rgb.copy())
    k = preds.shape[1]
    joint_colours = palette(k + 1)[1:]
    limb_colours = palette(len(skeleton) + 2)[2:]
    radius = max(2, round(min(canvas.shape[:2]) / 100))
    for i, box in enumerate(boxes):
        x, y, bw, bh = (int(round(float(v))) for v in box[:4])
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), (255, 255, 255), 1)
        for (a, b), colour in zip(skeleton, limb_colours, strict=True):
            if conf[i, a] > VIS_THRESH and conf[i, b] > VIS_THRESH:
                pa = tuple(int(round(v)) for v in preds[i, a])
                pb = tuple(int(round(v)) for v in preds[i, b])
                cv2.line(canvas, pa, pb, tuple(int(c) for c in colour), max(1, radius // 2), cv2.LINE_AA)
        for j in range(k):
            if conf[i, j] > VIS_THRESH:
                p = tuple(int(round(v)) for v in preds[i, j])
                cv2.circle(canvas, p, radius, tuple(int(c) for c in joint_colours[j]), -1, cv2.LINE_AA)
    return canvas
