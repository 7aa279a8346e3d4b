"""Image classification data: ImageNet-layout folders, Fashion-MNIST, the HR-NAS ImageNet transforms.

The ImageNet recipe (spec §5, ``imagenet1k_mnas_bicubic``) is the MnasNet/TensorFlow one: a random
crop of 8–100 % of the image area (and at least 10 %, TF's ``min_object_covered``) with an aspect
ratio drawn *uniformly* from [3/4, 4/3], resized bicubic to 224, a horizontal flip and ImageNet
mean/std normalisation; evaluation takes a centre square of 224/256 of the short side and resizes it
bicubic to 224.  See :class:`TFRandomResizedCrop` for how this differs from TensorFlow and from
torchvision's ``RandomResizedCrop``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from hrnas.data.errors import DatasetError
from hrnas.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD, load_image

__all__ = [
    "CLASSIFICATION_FORMATS",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNISTClassification",
    "ImageFolderClassification",
    "TFCenterCrop",
    "TFRandomResizedCrop",
    "build_classification_dataset",
    "imagenet_eval_transform",
    "imagenet_train_transform",
    "topk_accuracy",
]

# Pixel statistics of the Fashion-MNIST training images, in [0, 1] units.
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


# ---------------------------------------------------------------------------- transforms
class TFCenterCrop:
    """Centre square of ``crop_pct`` × the short side (TF/MnasNet "padded" centre crop).

    With ``crop_pct = 224 / 256`` this is TensorFlow's ``_decode_and_center_crop`` (``CROP_PADDING
    = 32``): unlike torchvision's ``Resize(256) + CenterCrop(224)`` the crop is taken before resizing,
    so it does not depend on the resize rounding.  Input and output are PIL images.
    """

    def __init__(self, crop_pct: float = 0.875) -> None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.crop_pct = crop_pct

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        side = max(1, int(self.crop_pct * min(width, height)))
        return TF.center_crop(img, [side, side])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_pct={self.crop_pct})"


class TFRandomResizedCrop:
    """TensorFlow-style random resized crop (MnasNet/EfficientNet ``_decode_and_random_crop``).

    Up to ``max_attempts`` times: draw an aspect ratio ``w / h`` uniformly from ``ratio``, a height
    uniformly among the integers that keep the area within ``scale`` × the image area, round the width,
    and accept the box if it fits in the image and covers at least ``min_object_covered`` of it; the
    box position is uniform.  When every attempt fails, fall back to :class:`TFCenterCrop`
    (``size / (size + 32)`` of the short side).  The crop is resized to ``size`` with ``interpolation``.

    Differences from TensorFlow's ``sample_distorted_bounding_box`` pipeline: boxes are integer
    pixels sampled by Python's ``random`` module rather than TF's sampler (same constraints, different
    distribution details); resizing uses PIL's bicubic filter, which antialiases when shrinking, where
    ``tf.image.resize_bicubic`` does not; JPEG decoding is PIL's (not TF's DCT method).
    Differences from torchvision's ``RandomResizedCrop``: the aspect ratio is linear, not log-uniform;
    the minimum covered area (10 %) is enforced; the fallback is the padded centre crop instead of a
    ratio-clamped full crop.

    Args:
        size: output side in pixels (square output).
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio ``width / height``.
        min_object_covered: minimum crop area fraction.
        interpolation: resize filter.
        max_attempts: tries before the centre-crop fallback.
        rng: the ``random.Random`` drawn from; ``None`` uses the module-level ``random`` (which
            ``DataLoader`` seeds differently in every worker).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        min_object_covered: float = 0.1,
        interpolation: InterpolationMode = InterpolationMode.BICUBIC,
        max_attempts: int = 10,
        rng: random.Random | None = None,
    ) -> None:
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"bad crop ranges scale={scale}, ratio={ratio}")
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.min_object_covered = min_object_covered
        self.interpolation = interpolation
        self.max_attempts = max_attempts
        self.rng = rng
        self.fallback = TFCenterCrop(size / (size + 32))

    def get_params(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """A crop ``(top, left, h, w)`` for a ``width × height`` image, or ``None`` when all attempts fail."""
        rng = self.rng or random
        area = width * height
        min_area = max(self.scale[0], self.min_object_covered) * area
        max_area = self.scale[1] * area
        for _ in range(self.max_attempts):
            aspect = rng.uniform(*self.ratio)
            min_h = int(round(math.sqrt(min_area / aspect)))
            max_h = int(round(math.sqrt(max_area / aspect)))
            max_h = min(max_h, height, int((width + 0.5) / aspect))
            min_h = min(min_h, max_h)
            if max_h < 1:
                continue
            h = rng.randint(max(min_h, 1), max_h)
            w = int(round(h * aspect))
            # one-step fix of the rounding so that the area lands in range (as TF's sampler does)
            if w * h < min_area:
                h += 1
            elif w * h > max_area:
                h -= 1
            w = int(round(h * aspect))
            if not (min_area <= w * h <= max_area) or not (0 < w <= width and 0 < h <= height):
                continue
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        return None

    def __call__(self, img: Image.Image) -> Image.Image:
        params = self.get_params(*img.size)
        if params is None:
            return TF.resize(self.fallback(img), [self.size, self.size], self.interpolation)
        top, left, h, w = params
        return TF.resized_crop(img, top, left, h, w, [self.size, self.size], self.interpolation)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"min_object_covered={self.min_object_covered}, interpolation={self.interpolation.value})"
        )


def imagenet_train_transform(size: int = 224) -> Callable[[Image.Image], Tensor]:
    """HR-NAS ImageNet training transform: PIL RGB image → float ``(3, size, size)`` normalised.

    :class:`TFRandomResizedCrop` (area 0.08–1, linear ratio 3/4–4/3, ≥10 % covered, bicubic), random
    horizontal flip (p = 0.5), ``ToTensor`` and ImageNet mean/std.
    """
    return T.Compose(
        [
            TFRandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def imagenet_eval_transform(size: int = 224, crop_pct: float = 0.875) -> Callable[[Image.Image], Tensor]:
    """HR-NAS ImageNet evaluation transform: PIL RGB image → float ``(3, size, size)`` normalised.

    Centre square of ``crop_pct`` × the short side (:class:`TFCenterCrop`), bicubic resize to ``size``,
    ``ToTensor`` and ImageNet mean/std.
    """
    return T.Compose(
        [
            TFCenterCrop(crop_pct),
            T.Resize([size, size], InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


# ---------------------------------------------------------------------------- datasets
def _load_rgb(path: str) -> Image.Image:
    """Decode an image file to RGB, EXIF orientation applied (:func:`hrnas.data.images.load_image`), raising
    :class:`DatasetError` naming the file when it is missing or unreadable."""
    return load_image(path).convert("RGB")


def _has_image(folder: Path, extensions: tuple[str, ...]) -> bool:
    # same walk as ImageFolder's make_dataset, stopping at the first image
    for _, _, filenames in os.walk(folder, followlinks=True):
        if any(name.lower().endswith(extensions) for name in filenames):
            return True
    return False


class ImageFolderClassification(ImageFolder):
    """``{root}/{split}/{class_name}/*.jpg`` (ImageNet layout) as ``(image, label)`` pairs.

    Classes are the sub-folders of ``{root}/{split}`` in sorted order (``classes``,
    ``class_to_idx`` as torchvision's ``ImageFolder``).  Items are ``(transform(PIL RGB image),
    int label)``; with ``transform=None`` the PIL image itself.

    Raises:
        DatasetError: ``root`` or ``{root}/{split}`` missing, no class folders, or a class folder
            without any image (checked at construction); a corrupt or unreadable image (at item time).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        root = Path(root)
        folder = root / split
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        if not folder.is_dir():
            raise DatasetError(f"{folder}: split folder {split!r} not found")
        class_dirs = sorted(entry.path for entry in os.scandir(folder) if entry.is_dir())
        if not class_dirs:
            raise DatasetError(f"{folder}: no class folders (expected one folder of images per class)")
        extensions = tuple(IMG_EXTENSIONS)
        for class_dir in class_dirs:
            if not _has_image(Path(class_dir), extensions):
                raise DatasetError(f"{class_dir}: class folder holds no images ({', '.join(extensions)})")
        super().__init__(str(folder), transform=transform, loader=_load_rgb)
        self.split = split


class FashionMNISTClassification(Dataset):
    """Fashion-MNIST (official 60k train / 10k test split) for networks with RGB inputs.

    Each 28×28 grayscale image is scaled to [0, 1], brought to ``image_size``, repeated to 3
    channels and normalised with the Fashion-MNIST mean/std.  Sizes 28–32 are reached by zero padding
    (centred; 32 is the LeNet convention, the background of Fashion-MNIST is 0); any other size by
    bilinear resizing.

    Args:
        split: ``"train"`` or ``"test"``; ``"val"`` means ``"test"`` (there is no official validation
            split).
        root: folder with the IDX files (see :func:`hrnas.data.fashion_mnist.load_fashion_mnist`).
        image_size: output side ``S``.
        transform: applied to the normalised ``(3, S, S)`` tensor (e.g. tensor flips/crops).

    Items are ``(float32 tensor (3, S, S), int label)`` with labels indexing :attr:`classes`.
    """

    def __init__(
        self,
        split: str,
        root: str | os.PathLike[str] | None = None,
        image_size: int = 32,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if split not in ("train", "test", "val"):
            raise DatasetError(f"Fashion-MNIST split {split!r}: expected 'train', 'test' or 'val'")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.split = "test" if split == "val" else split
        self.images, self.labels = load_fashion_mnist(self.split, root)
        self.image_size = image_size
        self.transform = transform
        self.classes: tuple[str, ...] = FASHION_MNIST_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def _resize(self, x: Tensor) -> Tensor:
        size = self.image_size
        h, w = x.shape[-2:]
        if (h, w) == (size, size):
            return x
        if h <= size <= h + 4 and w <= size <= w + 4:
            top, left = (size - h) // 2, (size - w) // 2
            return F.pad(x, (left, size - w - left, top, size - h - top))
        return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = torch.from_numpy(np.array(self.images[index], dtype=np.float32)).div_(255.0)[None]
        x = self._resize(x)
        x = ((x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD).expand(3, -1, -1).contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])


# ---------------------------------------------------------------------------- factory, metric
def _build_imagefolder(
    root: str | os.PathLike[str] | None,
    split: str,
    transform: Callable[..., Any] | None,
    image_size: int | None,
) -> Dataset:
    if root is None:
        raise DatasetError("imagefolder: a dataset root folder is required")
    if transform is None:
        size = image_size or 224
        transform = imagenet_train_transform(size) if split == "train" else imagenet_eval_transform(size)
    return ImageFolderClassification(root, split, transform)


def _build_fashion_mnist(
    root: str | os.PathLike[str] | None,
    split: str,
    transform: Callable[..., Any] | None,
    image_size: int | None,
) -> Dataset:
    return FashionMNISTClassification(split, root, image_size or 32, transform)


CLASSIFICATION_FORMATS: dict[str, Callable[..., Dataset]] = {
    "imagefolder": _build_imagefolder,
    "fashion_mnist": _build_fashion_mnist,
}


def build_classification_dataset(
    format: str,
    root: str | os.PathLike[str] | None,
    split: str,
    transform: Callable[..., Any] | None = None,
    image_size: int | None = None,
) -> Dataset:
    """Build a classification dataset by format name.

    Args:
        format: ``"imagefolder"`` (``{root}/{split}/{class}/*``) or ``"fashion_mnist"``.
        root: dataset folder (``None`` lets Fashion-MNIST search its default places).
        split: ``"train"``/``"val"`` (imagefolder: any sub-folder name; Fashion-MNIST: also ``"test"``).
        transform: overrides the default transform; for imagefolder the default is
            :func:`imagenet_train_transform` for ``"train"`` and :func:`imagenet_eval_transform`
            otherwise.
        image_size: output side (default 224 for imagefolder, 32 for Fashion-MNIST).

    Raises:
        DatasetError: unknown format (the message lists the known ones) or a bad dataset.
    """
    builder = CLASSIFICATION_FORMATS.get(format)
    if builder is None:
        raise DatasetError(
            f"unknown classification dataset format {format!r}; known: {', '.join(sorted(CLASSIFICATION_FORMATS))}"
        )
    return builder(root, split, transform, image_size)


@torch.no_grad()
def topk_accuracy(logits: Tensor, target: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of a batch.

    Args:
        logits: ``(N, C)`` class scores.
        target: ``(N,)`` integer labels in ``[0, C)``.
        ks: the ``k`` values; each is clipped to ``C`` (top-5 of a 3-class problem is top-3).

    Returns:
        ``{"top{k}": fraction in [0, 1]}`` keyed by the requested ``k``; 0.0 for an empty batch.
    """
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}")
    n, c = logits.shape
    if n == 0:
        return {f"top{k}": 0.0 for k in ks}
    max_k = min(max(ks), c)
    pred = logits.topk(max_k, dim=1).indices
    hits = pred.eq(target.view(-1, 1))
    return {f"top{k}": hits[:, : min(k, c)].any(dim=1).float().mean().item() for k in ks}
