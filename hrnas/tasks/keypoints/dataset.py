"""Top-down COCO-format keypoint dataset (HRNet / SimpleBaseline pipeline, spec §5 "COCO keypoints").

Each item is one person (or, for custom categories, one object) cropped by a similarity transform
to the network input (256×192 by default) with Gaussian heatmap targets 4× smaller.

Boxes come from the ground truth (HRNet's ``USE_GT_BBOX=True``, what HR-NAS evaluates with) or from a
detection-results JSON in the standard COCO result format (``image_id``, ``category_id``, ``bbox``,
``score``).  A box ``(x, y, w, h)`` becomes a centre and a source region of the crop's aspect ratio,
enlarged ×1.25 (HRNet ``_box2cs``).

Training augmentation follows HRNet: half-body crop (probability 0.3 when more than 8 joints are
labelled, only for categories whose upper/lower-body joints are known — the standard COCO person),
scale ×clip(N(1, 0.35), 0.65, 1.35), rotation clip(N(0, 45°), ±90°) with probability 0.6, horizontal
flip with probability 0.5 that swaps the left/right joint pairs.

Any keypoint category is accepted: keypoint names, skeleton, flip pairs and per-joint OKS sigmas are
read from the JSON category (see :func:`keypoint_category`).  Coordinates follow
:mod:`hrnas.tasks.keypoints.codec`: ``(x, y)`` pixels, ``scale`` = source-region ``(width, height)`` in
image pixels.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from hrnas.data.errors import DatasetError
from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD, load_image, oriented
from hrnas.tasks.keypoints.codec import affine_points, get_affine_transform, render_heatmaps
from hrnas.utils.errors import parse_json_text, read_json

__all__ = [
    "COCO_PERSON_KEYPOINTS",
    "COCO_PERSON_SIGMAS",
    "DEFAULT_OKS_SIGMA",
    "CocoKeypoints",
    "KeypointCategory",
    "box_to_center_scale",
    "derive_flip_pairs",
    "keypoint_category",
    "load_coco",
]

COCO_PERSON_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
# Per-joint OKS constants of the COCO keypoint challenge (pycocotools ``kpt_oks_sigmas``).
COCO_PERSON_SIGMAS: tuple[float, ...] = tuple(
    s / 10.0
    for s in (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
)
# HRNet's half-body split of the COCO person: joints 0-10 (head, arms) are the upper body.
COCO_PERSON_UPPER_BODY: tuple[int, ...] = tuple(range(11))
# OKS sigma for a joint of a custom category whose JSON gives no "sigmas" (between the COCO
# person's wrists, 0.062, and hips, 0.107 — i.e. a moderately precise joint).
DEFAULT_OKS_SIGMA = 0.05


@dataclass(frozen=True)
class KeypointCategory:
    """A COCO category that defines keypoints, as read from the annotation JSON.

    Attributes:
        id: the category id.
        name: the category name.
        keypoint_names: ``K`` joint names, in annotation order.
        skeleton: limbs as 0-based joint index pairs (the JSON's ``skeleton`` is 1-based).
        flip_pairs: joint index pairs swapped by a horizontal flip.
        sigmas: ``K`` per-joint OKS sigmas (pycocotools ``kpt_oks_sigmas`` units).
        upper_body: joint indices of the upper body for the half-body crop; ``None`` when unknown
            (the half-body augmentation is then skipped).
    """

    id: int
    name: str
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    upper_body: tuple[int, ...] | None

    @property
    def num_joints(self) -> int:
        """``K``, the number of keypoints."""
        return len(self.keypoint_names)

    @property
    def is_coco_person(self) -> bool:
        """Whether this is the standard 17-joint COCO person."""
        return self.name == "person" and self.keypoint_names == COCO_PERSON_KEYPOINTS


def derive_flip_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Left/right joint pairs found by name.

    A name containing ``left`` (any of ``left``/``Left``/``LEFT``) pairs with the name obtained by
    replacing it with ``right`` in the same case, when that name exists: ``left_eye``/``right_eye``,
    ``LeftHand``/``RightHand``, or bare ``left``/``right`` (extreme points of an object also swap under
    a mirror).  Names without such a partner get no pair; pass explicit pairs for other schemes.

    Returns:
        ``(left_index, right_index)`` pairs in the order of the left joints.
    """
    index = {name: i for i, name in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        for left, right in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
            if left in name:
                j = index.get(name.replace(left, right))
                if j is not None and j != i:
                    pairs.append((i, j))
                    break
    return tuple(pairs)


def _resolve_flip_pairs(
    flip_pairs: Sequence[Sequence[int | str]], names: Sequence[str], where: str
) -> tuple[tuple[int, int], ...]:
    index = {name: i for i, name in enumerate(names)}
    seen: set[int] = set()
    out = []
    for pair in flip_pairs:
        if len(pair) != 2:
            raise DatasetError(f"{where}: flip pair {list(pair)} must have two joints")
        resolved = []
        for joint in pair:
            if isinstance(joint, str):
                if joint not in index:
                    raise DatasetError(f"{where}: flip pair joint {joint!r} is not one of {list(names)}")
                resolved.append(index[joint])
            elif 0 <= int(joint) < len(names):
                resolved.append(int(joint))
            else:
                raise DatasetError(f"{where}: flip pair joint {joint} is outside the {len(names)} keypoints")
        a, b = resolved
        if a == b or a in seen or b in seen:
            raise DatasetError(f"{where}: joint of flip pair {list(pair)} is repeated")
        seen.update((a, b))
        out.append((a, b))
    return tuple(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_coco_lists(path: Path, data: Any) -> None:
    """The structure pycocotools assumes without checking: the three lists, unique integer ids, image sizes."""
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a COCO annotation file (a JSON {type(data).__name__}, expected an object)")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path}: not a COCO annotation file (no {key!r} list)")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: {key!r} is a {type(data[key]).__name__}, expected a list")
    for key, singular in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        seen: set[int] = set()
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or isinstance(entry["id"], bool):
                shown = entry.get("id") if isinstance(entry, dict) else entry
                raise DatasetError(f"{path}: {key}[{index}] has id {shown!r}, expected an integer {singular} id")
            if entry["id"] in seen:
                raise DatasetError(f"{path}: {singular} id {entry['id']} is given twice ({key}[{index}])")
            seen.add(entry["id"])
    for index, image in enumerate(data["images"]):
        for side in ("width", "height"):
            value = image.get(side)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise DatasetError(
                    f"{path}: image {image['id']} (images[{index}]) {side} {value!r}, expected a positive integer"
                )
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise DatasetError(f"{path}: image {image['id']} (images[{index}]) has no file_name")
    for index, ann in enumerate(data["annotations"]):
        for key in ("image_id", "category_id"):
            if key not in ann:
                raise DatasetError(f"{path}: annotation {ann['id']} (annotations[{index}]) has no {key!r}")


def load_coco(ann_file: str | os.PathLike[str]) -> COCO:
    """Load a COCO annotation JSON and index it with pycocotools (silencing its prints).

    The JSON is read by :func:`hrnas.utils.errors.parse_json_text`, which refuses a key given twice (JSON
    would keep the last value); the lists, ids and image sizes pycocotools relies on are checked first.

    Raises:
        DatasetError: naming the file: missing, not valid JSON (with the line), a key given twice, not a
            COCO annotation file (a list missing or not a list), an id that is not an integer or is given
            twice (``instances.json: annotation id 7 is given twice (annotations[3])``), an image without
            a positive width/height or a file name, an annotation without ``image_id``/``category_id``.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a text JSON file (byte {err.start} is not UTF-8)") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read annotation file ({err.strerror})") from None
    data = parse_json_text(text, str(path), DatasetError)
    _check_coco_lists(path, data)
    coco = COCO()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.dataset = data
            coco.createIndex()
    except (KeyError, TypeError, AssertionError) as err:
        raise DatasetError(f"{path}: not a COCO annotation file ({type(err).__name__}: {err})") from None
    return coco


def keypoint_category(
    coco: COCO,
    category_id: int | None = None,
    flip_pairs: Sequence[Sequence[int | str]] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> KeypointCategory:
    """Read the keypoint category of a COCO annotation set.

    OKS sigmas are, in order of preference: the category's own ``"sigmas"`` list (an hrnas extension
    of the format, ``K`` positive numbers); the standard COCO values for the standard person (name
    ``person`` with the 17 COCO joint names); :data:`DEFAULT_OKS_SIGMA` for every joint otherwise.

    Args:
        coco: the loaded annotations.
        category_id: which category to use when several define keypoints.
        flip_pairs: explicit pairs of joint indices or names; default :func:`derive_flip_pairs`.
        source: file name used in error messages (default: "annotations").

    Raises:
        DatasetError: no (or an ambiguous) keypoint category, or malformed sigmas/skeleton/pairs.
    """
    where = str(source) if source is not None else "annotations"
    categories = [c for c in coco.dataset.get("categories", []) if c.get("keypoints")]
    if category_id is not None:
        categories = [c for c in categories if c.get("id") == category_id]
        if not categories:
            raise DatasetError(f"{where}: category {category_id} does not exist or defines no keypoints")
    if not categories:
        raise DatasetError(f"{where}: no category defines 'keypoints', so it is not a keypoint annotation file")
    if len(categories) > 1:
        listed = ", ".join(f"{c['id']} ({c.get('name')})" for c in categories)
        raise DatasetError(f"{where}: several categories define keypoints ({listed}); pass category_id")
    cat = categories[0]
    names = tuple(str(n) for n in cat["keypoints"])
    name = str(cat.get("name", cat["id"]))
    k = len(names)
    standard_person = name == "person" and names == COCO_PERSON_KEYPOINTS

    if "sigmas" in cat:
        sigmas = cat["sigmas"]
        if (
            not isinstance(sigmas, list)
            or len(sigmas) != k
            or not all(isinstance(s, (int, float)) and s > 0 for s in sigmas)
        ):
            raise DatasetError(f"{where}: category {name!r} 'sigmas' must be {k} positive numbers, got {sigmas!r}")
        sigma_values = tuple(float(s) for s in sigmas)
    elif standard_person:
        sigma_values = COCO_PERSON_SIGMAS
    else:
        sigma_values = (DEFAULT_OKS_SIGMA,) * k

    skeleton = []
    for limb in cat.get("skeleton", []) or []:
        if len(limb) != 2 or not all(isinstance(j, int) and 1 <= j <= k for j in limb):
            raise DatasetError(f"{where}: category {name!r} skeleton limb {limb!r} is not two joints in 1..{k}")
        skeleton.append((limb[0] - 1, limb[1] - 1))

    pairs = _resolve_flip_pairs(flip_pairs, names, where) if flip_pairs is not None else derive_flip_pairs(names)
    return KeypointCategory(
        id=int(cat["id"]),
        name=name,
        keypoint_names=names,
        skeleton=tuple(skeleton),
        flip_pairs=pairs,
        sigmas=sigma_values,
        upper_body=COCO_PERSON_UPPER_BODY if standard_person else None,
    )


def box_to_center_scale(
    box: Sequence[float], aspect_ratio: float, enlarge: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet ``_box2cs``: a COCO box ``(x, y, w, h)`` → ``(center, scale)`` of aspect ``aspect_ratio``.

    The shorter side (relative to ``aspect_ratio = width / height`` of the crop) is extended so the
    region has the crop's aspect ratio, then both sides are multiplied by ``enlarge``.

    Returns:
        float32 ``center (2,)`` and ``scale (2,) = (width, height)``, image pixels.
    """
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w, h], dtype=np.float32) * enlarge
    return center, scale


def _clean_box(box: Sequence[float], width: int, height: int) -> list[float] | None:
    """Clip ``(x, y, w, h)`` to the image (inclusive pixel bounds); ``None`` when nothing is left."""
    x, y, w, h = (float(v) for v in box[:4])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y + max(0.0, h - 1.0))
    if x2 < x1 or y2 < y1:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


class CocoKeypoints(Dataset):
    """One item per instance box of a COCO-format keypoint annotation set.

    Args:
        root: dataset folder; relative ``ann_file``, ``image_dir`` and ``boxes`` paths are under it.
        ann_file: COCO keypoint annotation JSON (e.g. ``annotations/person_keypoints_val2017.json``).
        image_dir: folder holding the images named by ``file_name`` (e.g. ``val2017``).
        split_is_train: apply training augmentation (and refuse detection boxes).
        input_size: ``(height, width)`` of the network input.
        heatmap_stride: input pixels per heatmap pixel; heatmaps are ``input_size / heatmap_stride``.
        sigma: target Gaussian σ in heatmap pixels.
        boxes: ``"gt"`` for ground-truth boxes, or a detection-results JSON path.
        det_score_thresh: detections scoring below this are dropped.
        flip_pairs: explicit flip pairs (indices or names); default derived from left/right names.
        category_id: the keypoint category to use when the file has several.
        box_enlarge: enlargement of every box (HRNet: 1.25).
        scale_factor: σ of the scale jitter; the factor is clipped to ``1 ± scale_factor``.
        rotation_factor: σ of the rotation in degrees; clipped to ``±2 rotation_factor``.
        rotation_prob: probability of rotating at all.
        flip_prob: probability of a horizontal flip.
        half_body_prob: probability of the half-body crop.
        half_body_min_joints: the half-body crop needs more labelled joints than this.
        generator: torch RNG for the augmentation; ``None`` uses torch's default generator, which
            ``DataLoader`` reseeds differently in every worker.

    Items are dicts:
        ``image``: float32 ``(3, H, W)``, RGB normalised with the ImageNet mean/std.
        ``target``: float32 ``(K, H / stride, W / stride)`` Gaussian heatmaps.
        ``target_weight``: float32 ``(K, 1)``, 1 for a labelled joint whose Gaussian lands on the map.
        ``meta``: ``center (2,)``, ``scale (2,)`` (after augmentation, image pixels), ``rotation``
        (degrees), ``image_id``, ``ann_id`` (−1 for detections), ``score`` (1 for GT boxes),
        ``box (4,)`` (the original ``x, y, w, h``), ``flipped`` (bool), ``joints (K, 3)`` (x, y,
        visible on the input crop) — all tensors or numbers, so the default collate batches them.
        Coordinates in ``center`` refer to the (possibly flipped) image the crop was taken from.

    Raises:
        DatasetError: missing or malformed annotation/detection file, no keypoint category,
            an annotation whose keypoint count differs from the category, a box entirely outside its
            image; at item time, a missing or unreadable image file.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        image_dir: str | os.PathLike[str],
        split_is_train: bool,
        input_size: tuple[int, int] = (256, 192),
        heatmap_stride: int = 4,
        sigma: float = 2.0,
        boxes: str | os.PathLike[str] = "gt",
        det_score_thresh: float = 0.0,
        flip_pairs: Sequence[Sequence[int | str]] | None = None,
        category_id: int | None = None,
        box_enlarge: float = 1.25,
        scale_factor: float = 0.35,
        rotation_factor: float = 45.0,
        rotation_prob: float = 0.6,
        flip_prob: float = 0.5,
        half_body_prob: float = 0.3,
        half_body_min_joints: int = 8,
        generator: torch.Generator | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        self.ann_file = self.root / ann_file
        self.image_dir = self.root / image_dir
        self.split_is_train = split_is_train
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if self.input_size[0] % heatmap_stride or self.input_size[1] % heatmap_stride:
            raise ValueError(f"input_size {self.input_size} is not divisible by heatmap_stride {heatmap_stride}")
        self.heatmap_stride = heatmap_stride
        self.heatmap_size = (self.input_size[0] // heatmap_stride, self.input_size[1] // heatmap_stride)
        self.aspect_ratio = self.input_size[1] / self.input_size[0]
        self.sigma = sigma
        self.box_enlarge = box_enlarge
        self.scale_factor = scale_factor
        self.rotation_factor = rotation_factor
        self.rotation_prob = rotation_prob
        self.flip_prob = flip_prob
        self.half_body_prob = half_body_prob
        self.half_body_min_joints = half_body_min_joints
        self.generator = generator

        self.source = self.ann_file
        """The annotation file, named by errors about the whole set (e.g. too few instances for a batch)."""
        self.size_note = ""
        """What the reader left out, for those errors (the keypoint task fills it in)."""
        self.coco = load_coco(self.ann_file)
        self.category = keypoint_category(self.coco, category_id, flip_pairs, source=self.ann_file)
        self._check_annotations()
        if isinstance(boxes, str) and boxes == "gt":
            self.records = self._gt_records()
        else:
            if split_is_train:
                raise ValueError("detection boxes are for evaluation; training uses boxes='gt'")
            self.records = self._detection_records(self.root / boxes, det_score_thresh)

    # ------------------------------------------------------------------ loading
    def _check_annotations(self) -> None:
        """Every annotation of the keypoint category, before any is used: a box ``[x, y, w, h]`` of four
        numbers with positive width and height, ``3 K`` keypoint numbers with visibility flags 0/1/2, a
        ``num_keypoints`` equal to its labelled joints (v > 0), a known image."""
        k = self.category.num_joints
        where = self.ann_file
        for ann in self.coco.dataset["annotations"]:
            if ann.get("category_id") != self.category.id:
                continue
            ann_id = ann.get("id")
            if ann.get("image_id") not in self.coco.imgs:
                raise DatasetError(f"{where}: annotation {ann_id} names unknown image {ann.get('image_id')}")
            box = ann.get("bbox")
            if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
                raise DatasetError(f"{where}: annotation {ann_id} bbox {box!r} is not [x, y, width, height] numbers")
            for side, value in (("width", box[2]), ("height", box[3])):
                if value <= 0:
                    raise DatasetError(
                        f"{where}: annotation {ann_id} bbox {side} {value} must be positive (bbox {box})"
                    )
            kps = ann.get("keypoints")
            if kps is None:
                continue
            if not isinstance(kps, list) or len(kps) != 3 * k:
                size = len(kps) if isinstance(kps, list) else type(kps).__name__
                count = f"{size // 3}" if isinstance(size, int) and size % 3 == 0 else f"{size} values instead of 3 per"
                raise DatasetError(
                    f"{where}: annotation {ann_id} has {count} keypoints, category {self.category.name!r} defines {k}"
                )
            bad = next((i for i, v in enumerate(kps) if not _is_number(v)), None)
            if bad is not None:
                raise DatasetError(f"{where}: annotation {ann_id} keypoints[{bad}] is {kps[bad]!r}, not a number")
            flags = kps[2::3]
            bad = next((j for j, v in enumerate(flags) if v not in (0, 1, 2)), None)
            if bad is not None:
                raise DatasetError(
                    f"{where}: annotation {ann_id} joint {bad} has visibility {flags[bad]}, expected 0, 1 or 2"
                )
            labelled = sum(1 for v in flags if v > 0)
            stated = ann.get("num_keypoints")
            if stated is not None and stated != labelled:
                raise DatasetError(
                    f"{where}: annotation {ann_id} has num_keypoints {stated} but {labelled} labelled joints "
                    "(v > 0) in its keypoints"
                )

    def _image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _gt_records(self) -> list[dict[str, Any]]:
        k = self.category.num_joints
        records = []
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            ann_ids = self.coco.getAnnIds(imgIds=[image_id], catIds=[self.category.id], iscrowd=False)
            for ann in self.coco.loadAnns(ann_ids):
                kps = ann.get("keypoints")
                if ann.get("iscrowd", 0) or not kps or max(kps[2::3]) <= 0:
                    continue  # crowds and unlabelled instances carry no joint targets
                box = _clean_box(ann["bbox"], int(info["width"]), int(info["height"]))
                if box is None:
                    raise DatasetError(
                        f"{self.ann_file}: annotation {ann['id']} box {ann['bbox']} lies entirely outside "
                        f"its {info['width']}x{info['height']} image {image_id}"
                    )
                joints = np.array(kps, dtype=np.float32).reshape(k, 3)
                joints[:, 2] = (joints[:, 2] > 0).astype(np.float32)
                center, scale = box_to_center_scale(box, self.aspect_ratio, self.box_enlarge)
                records.append(
                    dict(
                        image_id=int(image_id),
                        ann_id=int(ann["id"]),
                        center=center,
                        scale=scale,
                        joints=joints,
                        score=1.0,
                        box=np.array(ann["bbox"], dtype=np.float32),
                    )
                )
        return records

    def _detection_records(self, det_file: Path, thresh: float) -> list[dict[str, Any]]:
        if not det_file.is_file():
            raise DatasetError(f"{det_file}: detection results file not found")
        detections = read_json(det_file, DatasetError, "detection results file")
        if not isinstance(detections, list):
            raise DatasetError(f"{det_file}: expected a list of detections (COCO result format)")
        k = self.category.num_joints
        records = []
        for i, det in enumerate(detections):
            if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= det.keys():
                raise DatasetError(f"{det_file}: detection {i} lacks image_id, bbox or score")
            if det.get("category_id", self.category.id) != self.category.id:
                continue
            box = det["bbox"]
            if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
                raise DatasetError(f"{det_file}: detection {i} bbox {box!r} is not [x, y, width, height] numbers")
            if box[2] < 0 or box[3] < 0:
                raise DatasetError(f"{det_file}: detection {i} bbox {box} has a negative width or height")
            if not _is_number(det["score"]):
                raise DatasetError(f"{det_file}: detection {i} score {det['score']!r} is not a number")
            score = float(det["score"])
            if score < thresh:
                continue
            image_id = det["image_id"]
            info = self.coco.imgs.get(image_id)
            if info is None:
                raise DatasetError(f"{det_file}: detection {i} names image {image_id}, not in {self.ann_file.name}")
            if _clean_box(det["bbox"], int(info["width"]), int(info["height"])) is None:
                raise DatasetError(
                    f"{det_file}: detection {i} box {det['bbox']} lies entirely outside its "
                    f"{info['width']}x{info['height']} image {image_id}"
                )
            center, scale = box_to_center_scale(det["bbox"], self.aspect_ratio, self.box_enlarge)
            records.append(
                dict(
                    image_id=int(image_id),
                    ann_id=-1,
                    center=center,
                    scale=scale,
                    joints=np.zeros((k, 3), dtype=np.float32),
                    score=score,
                    box=np.array(det["bbox"], dtype=np.float32),
                )
            )
        return records

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.records)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _normal(self) -> float:
        return float(torch.randn((), generator=self.generator))

    def _read_image(self, record: dict[str, Any]) -> np.ndarray:
        """The RGB ``(H, W, 3)`` pixels the annotations of ``record``'s image refer to.

        The EXIF orientation is applied (:func:`hrnas.data.images.load_image`) unless the annotation file
        records the stored size and not the upright one (a set annotated on the pixels as stored, as
        COCO was); a size that fits neither is refused, since the boxes and joints would not fit it.
        """
        image_id = record["image_id"]
        path = self._image_path(image_id)
        where = f"annotation {record['ann_id']}" if record["ann_id"] >= 0 else "a detection"
        if not path.is_file():
            raise DatasetError(f"{path}: image file not found (image {image_id}, {where})")
        try:
            stored = load_image(path, orient=False)
        except DatasetError as err:
            raise DatasetError(f"{err} (image {image_id}, {where})") from None
        upright = oriented(stored)
        info = self.coco.imgs[image_id]
        recorded = (int(info["width"]), int(info["height"]))
        if upright.size != recorded:
            if stored.size != recorded:
                raise DatasetError(
                    f"{path}: image is {upright.size[0]}x{upright.size[1]} but {self.ann_file.name} records "
                    f"width {recorded[0]}, height {recorded[1]} for image {image_id}"
                )
            upright = stored
        return np.array(upright.convert("RGB"))

    def _half_body(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """HRNet ``half_body_transform``: a box around the upper or the lower labelled joints."""
        upper_ids = set(self.category.upper_body or ())
        visible = joints[:, 2] > 0
        upper = [joints[j, :2] for j in range(len(joints)) if visible[j] and j in upper_ids]
        lower = [joints[j, :2] for j in range(len(joints)) if visible[j] and j not in upper_ids]
        # HRNet draws this choice with randn (~69 % upper); a fair coin is what it means.
        if self._uniform() < 0.5 and len(upper) > 2:
            selected = upper
        else:
            selected = lower if len(lower) > 2 else upper
        if len(selected) < 2:
            return None
        pts = np.array(selected, dtype=np.float32)
        center = pts.mean(axis=0)
        w, h = pts.max(axis=0) - pts.min(axis=0)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        elif w < self.aspect_ratio * h:
            w = h * self.aspect_ratio
        return center.astype(np.float32), np.array([w, h], dtype=np.float32) * 1.5

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self._read_image(record)
        joints = record["joints"].copy()
        center = record["center"].copy()
        scale = record["scale"].copy()
        rotation = 0.0
        flipped = False

        if self.split_is_train:
            if (
                self.category.upper_body is not None
                and joints[:, 2].sum() > self.half_body_min_joints
                and self._uniform() < self.half_body_prob
            ):
                half = self._half_body(joints)
                if half is not None:
                    center, scale = half
            sf, rf = self.scale_factor, self.rotation_factor
            scale = scale * float(np.clip(self._normal() * sf + 1, 1 - sf, 1 + sf))
            if self._uniform() < self.rotation_prob:
                rotation = float(np.clip(self._normal() * rf, -2 * rf, 2 * rf))
            if self._uniform() < self.flip_prob:
                flipped = True
                width = image.shape[1]
                image = cv2.flip(image, 1)
                joints[:, 0] = width - 1 - joints[:, 0]
                for a, b in self.category.flip_pairs:
                    joints[[a, b]] = joints[[b, a]]
                center[0] = width - 1 - center[0]

        out_h, out_w = self.input_size
        trans = get_affine_transform(center, scale, rotation, (out_w, out_h))
        crop = cv2.warpAffine(image, trans, (out_w, out_h), flags=cv2.INTER_LINEAR)
        visible = joints[:, 2] > 0
        joints[visible, :2] = affine_points(joints[visible, :2], trans).astype(np.float32)
        joints[~visible, :2] = 0.0
        target, target_weight = render_heatmaps(joints, self.heatmap_size, self.heatmap_stride, self.sigma)

        tensor = torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        tensor = (tensor - mean) / std
        meta = {
            "center": torch.from_numpy(np.asarray(center, dtype=np.float32)),
            "scale": torch.from_numpy(np.asarray(scale, dtype=np.float32)),
            "rotation": rotation,
            "image_id": record["image_id"],
            "ann_id": record["ann_id"],
            "score": float(record["score"]),
            "box": torch.from_numpy(record["box"].copy()),
            "flipped": flipped,
            "joints": torch.from_numpy(joints),
        }
        return {
            "image": tensor,
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(target_weight),
            "meta": meta,
        }

    def __repr__(self) -> str:
        kind = "train" if self.split_is_train else "eval"
        return (
            f"{type(self).__name__}({self.ann_file}, {kind}, {len(self)} instances, "
            f"category {self.category.name!r} with {self.category.num_joints} keypoints)"
        )
