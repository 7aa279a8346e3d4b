"""A small segmentation and keypoint dataset built from real images, with exact labels.

Each scene is a crop of a real photograph or texture shipped with scikit-image (brick, grass,
gravel, coffee, rocket, ...), with 1–4 Fashion-MNIST items pasted on it at random sizes,
positions and small rotations, each tinted a random colour. An item's pixels are those whose
resized (and rotated) Fashion-MNIST intensity exceeds :data:`FOREGROUND_THRESHOLD`; they are
pasted opaquely, so the label map is exact: ``class id + 1`` of the last item pasted on a pixel,
0 = background, 11 classes in all. Train scenes draw items from the Fashion-MNIST train split,
val scenes from its test split.

The files follow the Cityscapes layout, so
:class:`hrnas.tasks.segmentation.datasets.CityscapesSegmentation` reads them unchanged (the segmentation
task's ``demo`` format), and the keypoints in COCO format, which the keypoint task reads::

    root/leftImg8bit/{train,val}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    root/gtFine/{train,val}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelTrainIds.png
    root/classes.json                      # class names in train-id order
    root/annotations/demo_keypoints_{train,val}.json   # COCO keypoint format
    root/meta.json, root/DONE              # generator version, seed, counts; completion marker

Every annotation is one visible item: COCO ``bbox``/``area``/RLE ``segmentation`` of its visible
pixels and five keypoints (see :func:`silhouette_keypoints`). Generation is deterministic: every
scene draws from its own ``numpy`` generator seeded by ``(seed, split, index)``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from hrnas.data.errors import DatasetError
from hrnas.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from hrnas.utils.atomic import atomic_folder
from hrnas.utils.errors import parse_json_text
from hrnas.utils.progress import progress as progress_bar

GENERATOR_VERSION = 1
GENERATOR_NAME = "hrnas.data.demo_scenes"
"""The generator's name in ``meta.json`` (the module's first home; kept so existing data sets stay valid)."""
DEMO_CLASSES: tuple[str, ...] = ("background", *FASHION_MNIST_CLASSES)
FOREGROUND_THRESHOLD = 40
"""An item pixel is foreground when its resized Fashion-MNIST intensity (0–255) is above this."""

KEYPOINT_NAMES: tuple[str, ...] = ("top", "bottom", "left", "right", "center")
SKELETON: list[list[int]] = [[1, 5], [2, 5], [3, 5], [4, 5]]
KEYPOINT_CATEGORY: dict[str, Any] = {
    "id": 1,
    "name": "item",
    "supercategory": "item",
    "keypoints": list(KEYPOINT_NAMES),
    "skeleton": SKELETON,
}
CITIES: dict[str, str] = {"train": "atelier", "val": "boutique"}
FASHION_SPLIT: dict[str, Literal["train", "test"]] = {"train": "train", "val": "test"}

# Real photographs and textures that ship inside the scikit-image wheel (no download needed).
BACKGROUND_SOURCES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "coffee",
    "rocket",
    "astronaut",
    "chelsea",
    "camera",
    "moon",
    "coins",
    "cell",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)

MAX_ITEMS = 4
MAX_ROTATION_DEG = 15.0
ITEM_SIZE_FRACTION = (24 / 128, 64 / 128)
"""Side of a resized item (before rotation) as a fraction of the scene side."""


@functools.lru_cache(maxsize=1)
def _background_images() -> tuple[np.ndarray, ...]:
    """The background sources as RGB uint8 ``(H, W, 3)`` arrays."""
    from skimage import data

    images = []
    for name in BACKGROUND_SOURCES:
        array = np.asarray(getattr(data, name)())
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        images.append(np.ascontiguousarray(array[:, :, :3].astype(np.uint8)))
    return tuple(images)


def _render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a random source, resized to ``(size, size, 3)`` float32, tinted."""
    sources = _background_images()
    source = sources[int(rng.integers(len(sources)))]
    height, width = source.shape[:2]
    short = min(height, width)
    side = int(rng.integers(min(short, max(size // 2, short // 4)), short + 1))
    top = int(rng.integers(height - side + 1))
    left = int(rng.integers(width - side + 1))
    crop = source[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (size, size), interpolation=interpolation).astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.6, 1.2, size=3).astype(np.float32)
    return crop * gain


def _render_item(rng: np.random.Generator, item: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize (and maybe rotate) one 28x28 item; returns its intensity and foreground mask, cropped tight."""
    low, high = (max(4, round(size * fraction)) for fraction in ITEM_SIZE_FRACTION)
    side = int(rng.integers(low, high + 1))
    intensity = cv2.resize(item, (side, side), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        pad = int(np.ceil(side * 0.21))  # room for the corners of a square rotated by up to 15 degrees
        intensity = np.pad(intensity, pad)
        centre = ((intensity.shape[1] - 1) / 2, (intensity.shape[0] - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        intensity = cv2.warpAffine(intensity, matrix, intensity.shape[::-1], flags=cv2.INTER_LINEAR, borderValue=0)
    mask = intensity > FOREGROUND_THRESHOLD
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return intensity[:0, :0], mask[:0, :0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return intensity[box], mask[box]


def silhouette_keypoints(mask: np.ndarray) -> list[tuple[float, float]]:
    """Five keypoints of a non-empty boolean mask ``(H, W)``, as ``(x, y)`` pixel indices.

    ``top``/``bottom`` are on the first/last row holding foreground, ``left``/``right`` on the
    first/last such column; ties along that row/column are broken by taking the middle foreground
    pixel (the lower-index one of an even count). ``center`` is the mean ``(x, y)`` of all foreground
    pixels (may fall outside the mask for a non-convex shape). Pixel ``(x, y)`` covers
    ``[x, x+1) x [y, y+1)``.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("silhouette_keypoints needs a non-empty mask")

    def middle(values: np.ndarray) -> int:
        ordered = np.sort(values)
        return int(ordered[(len(ordered) - 1) // 2])

    top, bottom, left, right = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return [
        (float(middle(xs[ys == top])), float(top)),
        (float(middle(xs[ys == bottom])), float(bottom)),
        (float(left), float(middle(ys[xs == left]))),
        (float(right), float(middle(ys[xs == right]))),
        (round(float(xs.mean()), 2), round(float(ys.mean()), 2)),
    ]


def render_scene(
    rng: np.random.Generator, items: np.ndarray, item_classes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Render one scene.

    Args:
        rng: the scene's own generator.
        items, item_classes: the Fashion-MNIST pool, uint8 ``(M, 28, 28)`` and int ``(M,)``.
        size: scene side in pixels.

    Returns:
        ``(image, label, instances)``: RGB uint8 ``(size, size, 3)``; uint8 ``(size, size)`` train ids
        (0 background, ``class + 1`` items); and, for each pasted item still at least partly visible,
        a dict with ``fashion_class``, ``visible`` (bool mask ``(size, size)``) and ``keypoints``
        (five ``(x, y, v)``: ``v`` = 2 when no later item covers the point, else 1).
    """
    image = _render_background(rng, size)
    label = np.zeros((size, size), np.uint8)
    owner = np.zeros((size, size), np.int32)  # 1-based paste order of the item on top, 0 = none
    pasted: list[tuple[int, int, np.ndarray]] = []  # (paste order, fashion class, full pasted mask)
    for order in range(1, int(rng.integers(1, MAX_ITEMS + 1)) + 1):
        index = int(rng.integers(len(items)))
        intensity, mask = _render_item(rng, items[index], size)
        height, width = mask.shape
        if height == 0 or height > size or width > size:
            continue
        top = int(rng.integers(size - height + 1))
        left = int(rng.integers(size - width + 1))
        tint = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        shade = 0.35 + 0.65 * intensity.astype(np.float32) / 255.0
        noise = rng.normal(0.0, 6.0, size=(height, width, 3)).astype(np.float32)
        colour = shade[:, :, None] * tint + noise
        window = (slice(top, top + height), slice(left, left + width))
        image[window][mask] = colour[mask]
        label[window][mask] = int(item_classes[index]) + 1
        owner[window][mask] = order
        full = np.zeros((size, size), bool)
        full[window] = mask
        pasted.append((order, int(item_classes[index]), full))

    instances = []
    for order, fashion_class, full in pasted:
        visible = owner == order
        if not visible.any():
            continue
        keypoints = []
        for x, y in silhouette_keypoints(full):
            hidden = owner[min(round(y), size - 1), min(round(x), size - 1)] > order
            keypoints.append((x, y, 1 if hidden else 2))
        instances.append({"fashion_class": fashion_class, "visible": visible, "keypoints": keypoints})
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, instances


def _coco_annotation(instance: dict[str, Any], annotation_id: int, image_id: int) -> dict[str, Any]:
    visible = instance["visible"]
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    flat_keypoints: list[float] = []
    for x, y, v in instance["keypoints"]:
        flat_keypoints += [x, y, v]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": KEYPOINT_CATEGORY["id"],
        "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)],
        "area": int(visible.sum()),
        "iscrowd": 0,
        "segmentation": {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "num_keypoints": sum(1 for _, _, v in instance["keypoints"] if v > 0),
        "keypoints": flat_keypoints,
        "fashion_class": instance["fashion_class"],
    }


def _write_split(
    staging: Path,
    split: str,
    count: int,
    size: int,
    seed: int,
    fashion_root: str | os.PathLike[str] | None,
    bar: tqdm,
) -> dict[str, int]:
    items, item_classes = load_fashion_mnist(FASHION_SPLIT[split], root=fashion_root)
    city = CITIES[split]
    image_dir = staging / "leftImg8bit" / split / city
    label_dir = staging / "gtFine" / split / city
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    split_code = list(CITIES).index(split)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, split_code, index])
        image, label, instances = render_scene(rng, items, item_classes, size)
        sequence, frame = divmod(index, 1_000_000)
        stem = f"{city}_{sequence:06d}_{frame:06d}"
        image_path = image_dir / f"{stem}_leftImg8bit.png"
        Image.fromarray(image).save(image_path)
        Image.fromarray(label).save(label_dir / f"{stem}_gtFine_labelTrainIds.png")
        image_id = index + 1
        images.append(
            {
                "id": image_id,
                "file_name": image_path.relative_to(staging).as_posix(),
                "width": size,
                "height": size,
            }
        )
        for instance in instances:
            annotations.append(_coco_annotation(instance, len(annotations) + 1, image_id))
        bar.update(1)
    coco = {
        "info": {"description": f"hrnas demo scenes ({split})", "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [KEYPOINT_CATEGORY],
    }
    annotation_dir = staging / "annotations"
    annotation_dir.mkdir(exist_ok=True)
    (annotation_dir / f"demo_keypoints_{split}.json").write_text(json.dumps(coco))
    return {"images": count, "instances": len(annotations)}


def _expected_meta(num_train: int, num_val: int, size: int, seed: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "num_train": num_train,
        "num_val": num_val,
    }


def _read_meta(root: Path) -> dict[str, Any] | None:
    try:
        meta = parse_json_text((root / "meta.json").read_text(), str(root / "meta.json"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR_NAME else None


def read_demo_meta(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meta.json`` of a complete demo dataset at ``root``, or None if absent or incomplete."""
    root = Path(root)
    return _read_meta(root) if (root / "DONE").is_file() else None


def _check_replaceable(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")
    if _read_meta(root) is None and any(root.iterdir()):
        raise DatasetError(f"{root}: exists and is not an hrnas demo dataset; refusing to replace it")


def generate_demo_scenes(
    root: str | os.PathLike[str],
    num_train: int = 2000,
    num_val: int = 300,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
    fashion_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the demo dataset to ``root`` (see the module docstring for the layout).

    Everything is written to a temporary folder beside ``root`` and moved into place with
    ``os.replace`` once complete, so ``root`` is either absent, a previous complete dataset, or the
    new one. A previous demo dataset at ``root`` is replaced; any other non-empty folder is refused.

    Args:
        root: destination folder.
        num_train, num_val: number of scenes per split (>= 1).
        size: scene side in pixels (>= 32); item sides span 24/128–64/128 of it.
        seed: same seed, counts and size give byte-identical files.
        progress: show a tqdm bar.
        fashion_root: folder of the Fashion-MNIST IDX files (see ``fashion_mnist_root``).

    Returns:
        ``root`` as a Path.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    root = Path(root)
    with atomic_folder(root, _check_replaceable) as staging:
        meta = _expected_meta(num_train, num_val, size, seed)
        counts = {}
        with progress_bar(num_train + num_val, desc="demo scenes", enabled=progress, unit="scene") as bar:
            for split, count in (("train", num_train), ("val", num_val)):
                counts[split] = _write_split(staging, split, count, size, seed, fashion_root, bar)
        meta.update(
            classes=list(DEMO_CLASSES),
            foreground_threshold=FOREGROUND_THRESHOLD,
            keypoints=list(KEYPOINT_NAMES),
            counts=counts,
        )
        (staging / "classes.json").write_text(json.dumps(list(DEMO_CLASSES), indent=1) + "\n")
        (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        (staging / "DONE").write_text("complete\n")
    return root


def ensure_demo_scenes(
    root: str | os.PathLike[str],
    num_train: int = 2000,
    num_val: int = 300,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
    fashion_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Return ``root``, generating the demo dataset first unless a complete one with the same
    generator version, seed, size and counts is already there. Arguments as in
    :func:`generate_demo_scenes`."""
    meta = read_demo_meta(root)
    expected = _expected_meta(num_train, num_val, size, seed)
    if meta is not None and all(meta.get(key) == value for key, value in expected.items()):
        return Path(root)
    return generate_demo_scenes(root, num_train, num_val, size, seed, progress, fashion_root)
