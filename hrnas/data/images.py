"""Image files shared by the tasks: decoding, the ImageNet normalisation, class colours and PNG writing.

Readers raise :class:`~hrnas.data.errors.DatasetError` naming the file; writers are atomic
(:mod:`hrnas.utils.atomic`), so a picture appears under its name complete or not at all.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from hrnas.data.errors import DatasetError
from hrnas.utils.atomic import atomic_path

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "one_line", "palette", "read_image", "save_png"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, on the [0, 1] scale (= (123.675, 116.28, 103.53) / 255)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet, on the [0, 1] scale (= (58.395, 57.12, 57.375) / 255)."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when empty)."""
    return " ".join(str(error).split()) or type(error).__name__


def read_image(path: Path) -> tv_tensors.Image:
    """Decode an image file to RGB uint8 ``(3, H, W)``; DatasetError naming the file if it cannot."""
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{path}: cannot decode image ({one_line(error)})") from None
    return tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours; class 0 dark grey, the rest spread over the hue circle."""
    colours = [(64, 64, 64)]
    for i in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours[:num_classes], dtype=np.uint8)


def save_png(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` (``(H, W)`` or ``(H, W, 3)`` uint8) as a PNG at ``path``, atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
