"""Image files shared by the tasks: decoding, the ImageNet normalisation, class colours and PNG writing.

Every loader that decodes an image file goes through :func:`load_image` (or :func:`read_image` /
:func:`read_image_array` on top of it), which applies the EXIF orientation tag the way photo viewers do:
a phone picture stored sideways with "rotate 90°" in its EXIF is returned upright, so a mask or
annotation drawn on the upright picture fits it. ``orient=False`` gives the pixels as stored.

Readers raise :class:`~hrnas.data.errors.DatasetError` naming the file; writers are atomic
(:mod:`hrnas.utils.atomic`), so a picture appears under its name complete or not at all.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors

from hrnas.data.errors import DatasetError
from hrnas.utils.atomic import atomic_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "exif_orientation",
    "load_image",
    "one_line",
    "oriented",
    "palette",
    "read_image",
    "read_image_array",
    "save_png",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, on the [0, 1] scale (= (123.675, 116.28, 103.53) / 255)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet, on the [0, 1] scale (= (58.395, 57.12, 57.375) / 255)."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when empty)."""
    return " ".join(str(error).split()) or type(error).__name__


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened image (1 = as stored, also when there is none; 2-8 flip and/or
    rotate)."""
    try:
        value = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):  # a corrupt EXIF block: the pixels are still usable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented(image: Image.Image) -> Image.Image:
    """``image`` as a viewer shows it: its EXIF orientation applied (the same object when there is none)."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def load_image(path: str | os.PathLike[str], *, orient: bool = True, what: str = "image") -> Image.Image:
    """Decode an image file completely (the file is closed on return), EXIF orientation applied.

    Args:
        path: the image file (any format PIL reads: PNG, JPEG, ...).
        orient: apply the EXIF orientation tag (``PIL.ImageOps.exif_transpose``), so the result is the
            upright picture a viewer shows; False keeps the stored pixel layout. The mode (``RGB``, ``L``,
            ``P`` with its palette, ``I;16``...) is kept either way.
        what: what the file is, for the error message (``image``, ``mask``).

    Raises:
        DatasetError: ``{path}: {what} file not found`` or ``{path}: cannot decode {what} (...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return oriented(image) if orient and exif_orientation(image) != 1 else image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{path}: cannot decode {what} ({one_line(error)})") from None


def read_image_array(path: str | os.PathLike[str], *, orient: bool = True) -> np.ndarray:
    """Decode an image file to an RGB uint8 ``(H, W, 3)`` array (EXIF orientation applied unless
    ``orient=False``); DatasetError naming the file if it cannot."""
    image = load_image(path, orient=orient)
    try:
        return np.array(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot decode image ({one_line(error)})") from None


def read_image(path: str | os.PathLike[str], *, orient: bool = True) -> tv_tensors.Image:
    """Decode an image file to RGB uint8 ``(3, H, W)`` (EXIF orientation applied unless ``orient=False``);
    DatasetError naming the file if it cannot."""
    pixels = read_image_array(path, orient=orient)
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
