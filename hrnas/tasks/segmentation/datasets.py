"""Semantic-segmentation datasets in their published on-disk layouts (spec §5: Cityscapes, ADE20K, and a
folder of image/mask pairs); the generated demo scenes are written in the Cityscapes layout.

Every dataset yields ``(image, mask)`` pairs, passed through an optional joint ``transforms``
callable ``transforms(image, mask) -> (image, mask)`` (e.g. :mod:`hrnas.tasks.segmentation.transforms`).
Without one, ``image`` is a ``tv_tensors.Image`` uint8 ``(3, H, W)`` RGB and ``mask`` a
``tv_tensors.Mask`` int64 ``(H, W)`` of train ids in ``[0, num_classes)`` with 255 = ignore.

Folder structure and file lists are checked when a dataset is built; each mask's labels, its size
against the image's, and the decodability of both files are checked when the sample is loaded.
All problems raise :class:`~hrnas.data.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from hrnas.data.cache import SampleCache
from hrnas.data.errors import DatasetError
from hrnas.data.images import load_image, one_line, read_image
from hrnas.utils.errors import parse_json_text

IGNORE_INDEX = 255

JointTransform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# labelId -> trainId from cityscapesScripts (helpers/labels.py); every other labelId -> 255.
CITYSCAPES_LABEL_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33; license plate (-1) is stored as 255 in the PNGs

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip

_MASK_MODES = ("L", "P", "I;16", "I")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} folder not found")
    return path


def read_mask(path: Path) -> np.ndarray:
    """Decode a single-channel label PNG to its raw integer values ``(H, W)`` (palette indices for
    mode ``P``), with its EXIF orientation applied as for the images (:func:`~hrnas.data.images.load_image`);
    DatasetError naming the file if it is unreadable or has colour channels."""
    mask = load_image(path, what="mask")
    if mask.mode not in _MASK_MODES:
        raise DatasetError(f"{path}: mask must be single-channel, got PIL mode {mask.mode} (expected L, P, I;16 or I)")
    return np.asarray(mask)


def load_class_names(path: Path) -> list[str]:
    """Class names from ``classes.json`` (a JSON list of strings) or ``classes.txt`` (one per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read class names ({one_line(error)})") from None
    if path.suffix == ".json":
        names = parse_json_text(text, str(path), DatasetError)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{path}: expected a non-empty list of class names")
    return _checked_classes(names, path)


def _checked_classes(names: Sequence[str], where: object) -> list[str]:
    names = list(names)
    if not 1 <= len(names) <= IGNORE_INDEX:
        raise DatasetError(f"{where}: {len(names)} classes; between 1 and {IGNORE_INDEX} are supported")
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"{where}: class name {duplicate!r} appears twice")
    return names


class SegmentationDataset(Dataset):
    """A list of ``(image_path, mask_path)`` pairs with a class list; subclasses decode the masks.

    Attributes:
        classes: class names in train-id order; ``num_classes = len(classes)``.
        samples: the ``(image_path, mask_path)`` pairs, sorted by image path.
        ignore_index: 255, the label excluded from loss and metrics.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        classes: Sequence[str],
        transforms: JointTransform | None = None,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.transforms = transforms
        self.cache: SampleCache | None = None

    def keep_decoded(self, budget_bytes: int) -> None:
        """Keep decoded samples in memory up to ``budget_bytes`` (0: decode on every read); see
        :mod:`hrnas.data.cache`. Masks are kept as uint8 where their labels fit."""
        self.cache = SampleCache(budget_bytes) if budget_bytes > 0 else None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map raw mask values to train ids; the default keeps them as they are."""
        return raw

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Sample ``index`` before transforms: RGB uint8 ``(3, H, W)`` and int64 train ids ``(H, W)``."""
        if self.cache is None:
            return self._decode(index)
        image, labels = self.cache.get(index, lambda: self._compact(*self._decode(index)))
        return image, tv_tensors.Mask(labels.long())

    @staticmethod
    def _compact(image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, torch.Tensor]:
        labels = mask.as_subclass(torch.Tensor)
        if labels.numel() and labels.min() >= 0 and labels.max() <= 255:
            labels = labels.to(torch.uint8)
        return image, labels

    def load_labels(self, index: int) -> np.ndarray:
        """The train ids ``(H, W)`` of sample ``index`` (its mask only; the image is not read)."""
        _, mask_path = self.samples[index]
        return self.decode_mask(read_mask(mask_path), mask_path)

    def _decode(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        labels = self.load_labels(index).astype(np.int64)
        if tuple(labels.shape) != tuple(image.shape[-2:]):
            raise DatasetError(
                f"{mask_path}: mask is {labels.shape[1]}x{labels.shape[0]} but image {image_path.name} "
                f"is {image.shape[-1]}x{image.shape[-2]} (width x height, EXIF orientation applied); "
                "a mask must have its image's size"
            )
        self._check_labels(labels, mask_path)
        return image, tv_tensors.Mask(torch.from_numpy(labels))

    def _check_labels(self, labels: np.ndarray, path: Path) -> None:
        if labels.size == 0 or (labels.min() >= 0 and labels.max() < self.num_classes):
            return
        bad = labels[((labels < 0) | (labels >= self.num_classes)) & (labels != self.ignore_index)]
        if bad.size:
            raise DatasetError(
                f"{path}: mask label {int(bad.max())} is outside the {self.num_classes} classes "
                f"(expected 0-{self.num_classes - 1}, or {self.ignore_index} = ignore)"
            )

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.load(index)
        if self.transforms is None:
            return image, mask
        return self.transforms(image, mask)


class CityscapesSegmentation(SegmentationDataset):
    """Cityscapes fine annotations (19 train ids) or anything written in its layout.

    Layout: ``root/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` with
    ``root/gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png`` (train ids, 255 ignore) or
    ``..._gtFine_labelIds.png`` (label ids 0–33, mapped with the cityscapesScripts table).
    ``label_type='auto'`` uses labelTrainIds when the first image has one, else labelIds.
    A ``root/classes.json`` (e.g. written by the demo scenes, :mod:`hrnas.demos.scenes`) replaces the 19
    names and requires labelTrainIds.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        transforms: JointTransform | None = None,
        label_type: Literal["auto", "labelIds", "trainIds"] = "auto",
    ) -> None:
        if label_type not in ("auto", "labelIds", "trainIds"):
            raise ValueError(f"label_type {label_type!r}: expected 'auto', 'labelIds' or 'trainIds'")
        self.root = _require_dir(Path(root), "dataset root")
        image_dir = _require_dir(self.root / "leftImg8bit" / split, f"{split!r} image")
        label_dir = _require_dir(self.root / "gtFine" / split, f"{split!r} label")
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetError(f"{image_dir}: no {{city}}/*_leftImg8bit.png images")

        def mask_for(image: Path, kind: str) -> Path:
            stem = image.name[: -len("_leftImg8bit.png")]
            return label_dir / image.parent.name / f"{stem}_gtFine_{kind}.png"

        if label_type == "auto":
            label_type = "trainIds" if mask_for(images[0], "labelTrainIds").is_file() else "labelIds"
        self.label_type = label_type
        kind = "labelTrainIds" if label_type == "trainIds" else "labelIds"
        samples = []
        for image in images:
            mask = mask_for(image, kind)
            if not mask.is_file():
                raise DatasetError(f"{image}: no mask {mask}")
            samples.append((image, mask))

        classes_file = self.root / "classes.json"
        if classes_file.is_file():
            if label_type == "labelIds":
                raise DatasetError(f"{classes_file}: custom classes need *_gtFine_labelTrainIds.png masks")
            classes = load_class_names(classes_file)
        else:
            classes = list(CITYSCAPES_CLASSES)
        lookup = np.full(256, IGNORE_INDEX, np.uint8)
        for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN_ID.items():
            lookup[label_id] = train_id
        self._lookup = lookup
        super().__init__(samples, classes, transforms)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.label_type == "trainIds":
            return raw
        invalid = ((raw < 0) | (raw >= CITYSCAPES_NUM_LABEL_IDS)) & (raw != IGNORE_INDEX)
        if invalid.any():
            raise DatasetError(f"{path}: label id {int(raw[invalid].max())} is not a Cityscapes label id (0-33)")
        return self._lookup[raw]


ADE20K_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


class ADE20KSegmentation(SegmentationDataset):
    """ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

    Layout: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with
    ``ADEChallengeData2016/annotations/{training,validation}/{stem}.png`` holding 0 = other and
    1–150 = classes. As mmseg's ``reduce_zero_label``: 0 -> 255 (ignore), k -> k - 1.
    ``root`` is either the ``ADEChallengeData2016`` folder or the folder containing it;
    ``split`` is ``train``/``val`` (or ``training``/``validation``).
    """

    def __init__(self, root: str | os.PathLike[str], split: str, transforms: JointTransform | None = None) -> None:
        if split not in ADE20K_SPLITS:
            raise DatasetError(f"split {split!r}: expected one of {sorted(ADE20K_SPLITS)}")
        root = _require_dir(Path(root), "dataset root")
        self.root = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        folder = ADE20K_SPLITS[split]
        image_dir = _require_dir(self.root / "images" / folder, f"{split!r} image")
        mask_dir = _require_dir(self.root / "annotations" / folder, f"{split!r} annotation")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise DatasetError(f"{image_dir}: no *.jpg images")
        samples = []
        for image in images:
            mask = mask_dir / f"{image.stem}.png"
            if not mask.is_file():
                raise DatasetError(f"{image}: no mask {mask}")
            samples.append((image, mask))
        super().__init__(samples, ADE20K_CLASSES, transforms)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        labels = raw.astype(np.int64)
        invalid = (labels > len(ADE20K_CLASSES)) & (labels != IGNORE_INDEX)
        if invalid.any():
            raise DatasetError(
                f"{path}: mask label {int(labels[invalid].max())} is outside the 150 classes (1-150, 0 = other)"
            )
        reduced = labels - 1
        reduced[(labels == 0) | (labels == IGNORE_INDEX)] = IGNORE_INDEX
        return reduced


FOLDER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class FolderSegmentation(SegmentationDataset):
    """Your own data: ``root/{split}/images/*.{png,jpg,jpeg}`` with ``root/{split}/masks/{stem}.png``.

    Masks are single-channel PNGs (8- or 16-bit, or palette indices) of train ids, 255 = ignore.
    ``classes`` is a list of names, or None to read ``root/classes.json`` or ``root/classes.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        classes: Sequence[str] | None = None,
        transforms: JointTransform | None = None,
    ) -> None:
        self.root = _require_dir(Path(root), "dataset root")
        if classes is None:
            for name in ("classes.json", "classes.txt"):
                if (self.root / name).is_file():
                    classes = load_class_names(self.root / name)
                    break
            else:
                raise DatasetError(f"{self.root}: no classes given and no classes.json or classes.txt")
        else:
            classes = _checked_classes(classes, "classes argument")
        split_dir = _require_dir(self.root / split, f"split {split!r}")
        image_dir = _require_dir(split_dir / "images", "images")
        mask_dir = _require_dir(split_dir / "masks", "masks")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in FOLDER_IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{image_dir}: no .png/.jpg images")
        samples, seen = [], {}
        for image in images:
            if image.stem in seen:
                raise DatasetError(f"{image}: same stem as {seen[image.stem].name}, masks would be ambiguous")
            seen[image.stem] = image
            mask = mask_dir / f"{image.stem}.png"
            if not mask.is_file():
                raise DatasetError(f"{image}: no mask {mask}")
            samples.append((image, mask))
        super().__init__(samples, classes, transforms)


SEGMENTATION_FORMATS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": CityscapesSegmentation,
    "ade20k": ADE20KSegmentation,
    "folder": FolderSegmentation,
}


def build_segmentation_dataset(
    format: str,
    root: str | os.PathLike[str],
    split: str,
    transforms: JointTransform | None = None,
    classes: Sequence[str] | None = None,
) -> SegmentationDataset:
    """Build a dataset by format name: ``cityscapes``, ``ade20k`` or ``folder``.

    ``classes`` applies to ``folder`` only (None: read ``classes.json``/``classes.txt``).

    Raises:
        DatasetError: unknown format (the message lists the known ones), or ``classes`` given for a
            format that defines its own.
    """
    if format not in SEGMENTATION_FORMATS:
        raise DatasetError(
            f"segmentation format {format!r}: unknown, expected one of {', '.join(SEGMENTATION_FORMATS)}"
        )
    if format == "folder":
        return FolderSegmentation(root, split, classes=classes, transforms=transforms)
    if classes is not None:
        raise DatasetError(f"segmentation format {format!r}: defines its own classes, do not pass classes")
    return SEGMENTATION_FORMATS[format](root, split, transforms=transforms)
