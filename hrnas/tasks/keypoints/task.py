"""Top-down keypoint estimation (spec §2.7 keypoint head, §5 "COCO keypoints"): heatmaps, OKS AP.

Data: COCO-format keypoint annotations (``data.format: coco_keypoints``) read by
:class:`hrnas.data.keypoints.CocoKeypoints`, one item per instance box:

- ``data.root`` holds everything; ``data.ann_file`` (default ``annotations/person_keypoints_{split}.json``)
  is relative to it, with ``{split}`` replaced by ``data.train_split`` / ``data.val_split``;
- images are looked up under ``{root}/{split}`` (COCO's ``train2017/``), ``{root}/images/{split}``,
  ``{root}/images`` or ``{root}`` itself — the first that holds the first image of the file;
- training uses the ground-truth boxes; evaluation uses them too unless ``data.det_file`` names a
  detection-results JSON (COCO result format, relative to the root);
- ``data.crop_size`` is the network input ``[h, w]`` (256×192 for COCO); heatmaps are 4× smaller, Gaussian
  with σ = ``task.heatmap_sigma`` heatmap pixels; ``data.scale_range [lo, hi]`` gives the scale jitter
  ``1 ± max(1 - lo, hi - 1)`` (HRNet's 0.35 for ``[0.65, 1.35]``).

The demo scenes (``hrnas.data.demo_scenes``, five keypoints per item) are generated under the root when
it holds no complete demo dataset and the annotation file asked for is a demo one
(``annotations/demo_keypoints_{split}.json``), or with ``data.format: demo``. Their training crops are
not rotated: the keypoints are extreme points of the items, which a rotation would move elsewhere.

Loss: HRNet's target-weighted heatmap MSE (:func:`~hrnas.tasks.pose_codec.keypoint_mse_loss`).
Evaluation: heatmaps (averaged with those of the mirrored input when ``task.flip_test``) are decoded to the
argmax with the quarter-pixel shift, mapped back to image pixels, rescored and OKS-NMS'd, then scored by
``COCOeval`` with the category's OKS sigmas (:func:`~hrnas.tasks.pose_eval.evaluate_coco_keypoints`).
Under several processes each one decodes its shard of the boxes; the results are gathered to rank 0 with
``torch.distributed.all_gather_object``, rank 0 runs ``COCOeval`` once over all of them and broadcasts the
metrics, so the AP is exactly that of a single-process evaluation.

References that ignore the pixels, scored by the same evaluator (``hrnas evaluate CKPT --baselines``): every
joint at its box centre (:func:`box_center_results`) and every joint at its mean place in the box, learnt
from the training annotations (:func:`mean_pose_results`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from hrnas.data.errors import DatasetError
from hrnas.data.keypoints import IMAGENET_MEAN, IMAGENET_STD, CocoKeypoints, KeypointCategory, box_to_center_scale
from hrnas.tasks.base import Task, TaskError, register_task
from hrnas.tasks.pose_codec import (
    decode_heatmaps,
    flip_heatmaps,
    get_affine_transform,
    keypoint_mse_loss,
    transform_preds,
)
from hrnas.tasks.pose_eval import evaluate_coco_keypoints, make_keypoint_results

DEFAULT_ANN_FILE = "annotations/person_keypoints_{split}.json"
DEMO_ANN_FILE = "annotations/demo_keypoints_{split}.json"
DEFAULT_DEMO_ROOT = "data/demo"
HEATMAP_STRIDE = 4
"""Input pixels per heatmap pixel: the keypoint head predicts at the resolution of branch 0 (1/4)."""
DEFAULT_ROTATION_PROB = 0.6
"""Probability of the rotation augmentation (HRNet); 0 for the demo scenes, whose top/bottom/left/right
keypoints are the extreme points of each item as pasted, which a rotated crop would no longer show."""
VIS_THRESH = 0.2
"""Joints whose heatmap peak is below this are not drawn by :meth:`KeypointsTask.predict_files`."""


def box_center_results(dataset: CocoKeypoints) -> list[dict[str, Any]]:
    """A reference prediction: every joint of every box at the box centre, confidence 1.

    Evaluated with :func:`~hrnas.tasks.pose_eval.evaluate_coco_keypoints`, it gives the AP that a
    network has to beat to show it localises joints at all. Results follow the COCO keypoint result
    format, one per record of ``dataset`` (its boxes: ground truth or detections).
    """
    offsets = np.zeros((dataset.category.num_joints, 2))
    return _box_relative_results(dataset, offsets)


def mean_pose_results(train: CocoKeypoints, dataset: CocoKeypoints) -> list[dict[str, Any]]:
    """A stronger reference that still ignores the pixels: each joint at its mean position in the box.

    The mean is taken over the labelled joints of ``train``'s records, as an offset from the box centre in
    units of the (enlarged) box size, and placed into each box of ``dataset`` the same way (confidence 1).
    A joint never labelled in ``train`` stays at the centre.
    """
    k = dataset.category.num_joints
    if train.category.num_joints != k:
        raise TaskError(
            f"mean pose: {train.ann_file} has {train.category.num_joints} keypoints, {dataset.ann_file} has {k}"
        )
    sums, counts = np.zeros((k, 2)), np.zeros((k, 1))
    for record in train.records:
        joints = np.asarray(record["joints"], dtype=np.float64)
        labelled = joints[:, 2:] > 0
        rel = (joints[:, :2] - np.asarray(record["center"], dtype=np.float64)) / np.asarray(record["scale"])
        sums += np.where(labelled, rel, 0.0)
        counts += labelled
    return _box_relative_results(dataset, sums / np.maximum(counts, 1))


def _box_relative_results(dataset: CocoKeypoints, offsets: np.ndarray) -> list[dict[str, Any]]:
    """Results placing joint ``j`` of every record at ``center + offsets[j] * scale`` (confidence 1)."""
    k = dataset.category.num_joints
    results = []
    for record in dataset.records:
        center = np.asarray(record["center"], dtype=np.float64)
        scale = np.asarray(record["scale"], dtype=np.float64)
        results += make_keypoint_results(
            (center + offsets * scale)[None],
            np.ones((1, k, 1)),
            [record["image_id"]],
            [record["score"]],
            [float(np.prod(scale))],
            dataset.category.id,
        )
    return results


def _unwrap(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


@register_task("keypoints")
class KeypointsTask(Task):
    """Keypoint head + heatmap MSE + COCO OKS AP.

    Batches are the dicts of :class:`~hrnas.data.keypoints.CocoKeypoints`, collated: ``image (B, 3, H, W)``,
    ``target (B, K, H/4, W/4)``, ``target_weight (B, K, 1)`` and ``meta``. The network output is heatmaps
    ``(B, K, H/4, W/4)``.
    """

    name = "keypoints"
    head_kinds = ("keypoints",)
    metric = "AP"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._datasets: dict[str, CocoKeypoints] = {}

    # --- configuration -----------------------------------------------------------------------------
    @property
    def is_demo(self) -> bool:
        """Whether the data are the generated demo scenes (``data.format: demo`` or a demo annotation file)."""
        fmt = self.cfg.data.format
        if fmt not in ("coco_keypoints", "demo"):
            raise TaskError(f"data.format: {fmt!r} is not a keypoint format (coco_keypoints, demo)")
        return fmt == "demo" or Path(self.ann_template).name == Path(DEMO_ANN_FILE).name

    @property
    def ann_template(self) -> str:
        """The annotation file, relative to the root, with ``{split}`` still in it."""
        if self.cfg.data.ann_file:
            return self.cfg.data.ann_file
        return DEMO_ANN_FILE if self.cfg.data.format == "demo" else DEFAULT_ANN_FILE

    @property
    def root(self) -> Path:
        """The dataset folder; the demo scenes are generated there first when they are asked for and missing."""
        root = self.cfg.data.root or (DEFAULT_DEMO_ROOT if self.cfg.data.format == "demo" else "")
        if not root:
            raise TaskError("data.root: not set (the folder holding the images and the annotation files)")
        path = Path(root)
        if self.is_demo:
            self._prepare_demo(path)
        return path

    def _prepare_demo(self, root: Path) -> None:
        from hrnas.data.demo_scenes import ensure_demo_scenes, read_demo_meta

        wanted = [
            root / self.ann_template.format(split=s) for s in (self.cfg.data.train_split, self.cfg.data.val_split)
        ]
        if all(p.is_file() for p in wanted) or read_demo_meta(root) is not None:
            return  # a complete demo dataset (of any size) or the user's own files: use them as they are
        ensure_demo_scenes(root)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the network input, from ``data.crop_size``; both divisible by 4."""
        h, w = (int(v) for v in self.cfg.data.crop_size)
        if h % HEATMAP_STRIDE or w % HEATMAP_STRIDE:
            raise TaskError(f"data.crop_size: [{h}, {w}] must be divisible by {HEATMAP_STRIDE} (heatmaps are 1/4)")
        return h, w

    @property
    def heatmap_size(self) -> tuple[int, int]:
        h, w = self.input_size
        return h // HEATMAP_STRIDE, w // HEATMAP_STRIDE

    # --- data --------------------------------------------------------------------------------------
    def _dataset(self, split: str, train: bool) -> CocoKeypoints:
        key = f"{split}:{'train' if train else 'eval'}"
        if key in self._datasets:
            return self._datasets[key]
        d = self.cfg.data
        lo, hi = d.scale_range
        boxes = "gt" if train or not d.det_file else d.det_file
        try:
            ann_file = self.ann_template.format(split=split)
        except (KeyError, IndexError, ValueError):
            raise TaskError(
                f"data.ann_file: {self.ann_template!r} may only contain the placeholder {{split}}"
            ) from None
        ds = CocoKeypoints(
            self.root,
            ann_file,
            split,
            split_is_train=train,
            input_size=self.input_size,
            heatmap_stride=HEATMAP_STRIDE,
            sigma=self.cfg.task.heatmap_sigma,
            boxes=boxes,
            scale_factor=max(1.0 - lo, hi - 1.0, 0.0),
            rotation_prob=0.0 if self.is_demo else DEFAULT_ROTATION_PROB,
        )
        ds.image_dir = self._image_dir(ds, split)
        # A box of one pixel becomes an empty crop region (scale 0), which no affine transform can map:
        # such instances (an item hidden but for one pixel) carry no usable joint information.
        ds.records = [r for r in ds.records if (np.asarray(r["scale"]) > 0).all()]
        if not ds.records:
            raise DatasetError(f"{ds.ann_file}: no instance with labelled keypoints (or detection) to use")
        self._datasets[key] = ds
        return ds

    def _image_dir(self, ds: CocoKeypoints, split: str) -> Path:
        """The folder the annotation's ``file_name`` entries are relative to (see the module docstring)."""
        candidates = [ds.root / split, ds.root / "images" / split, ds.root / "images", ds.root]
        if not ds.coco.imgs:
            return candidates[0]
        first = ds.coco.imgs[min(ds.coco.imgs)]["file_name"]
        for folder in candidates:
            if (folder / first).is_file():
                return folder
        raise DatasetError(f"{ds.ann_file}: image {first!r} not found under {', '.join(str(c) for c in candidates)}")

    def train_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.train_split, train=True)

    def val_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.val_split, train=False)

    def category(self) -> KeypointCategory:
        """The keypoint category (names, skeleton, flip pairs, OKS sigmas) of the validation annotations."""
        return self._dataset(self.cfg.data.val_split, train=False).category

    def num_outputs(self) -> int:
        """``task.num_classes`` when set (it must agree with the annotations), else the number of keypoints."""
        k = self.category().num_joints
        wanted = self.cfg.task.num_classes
        if wanted and wanted != k:
            raise TaskError(
                f"task.num_classes: {wanted}, but the annotations define {k} keypoints "
                "(set task.num_classes=0 to take the count from the annotations)"
            )
        return k

    # --- model -------------------------------------------------------------------------------------
    def inputs(self, batch: Any) -> Tensor:
        return batch["image"]

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        """Target-weighted heatmap MSE between ``output (B, K, h, w)`` and the batch's Gaussian targets."""
        target = batch["target"]
        if output.shape != target.shape:
            raise TaskError(
                f"the network predicts heatmaps {tuple(output.shape[1:])}, the targets are {tuple(target.shape[1:])}"
            )
        return keypoint_mse_loss(output.float(), target, batch["target_weight"])

    def predict_heatmaps(self, model: nn.Module, images: Tensor, flip_pairs: Sequence[Sequence[int]] | None) -> Tensor:
        """Heatmaps ``(B, K, h, w)`` of ``images (B, 3, H, W)``; averaged with the mirrored input's when
        ``task.flip_test`` is on and ``flip_pairs`` is given (``None`` disables the flip test)."""
        heatmaps = model(images).float()
        if self.cfg.task.flip_test and flip_pairs is not None:
            flipped = model(images.flip(3)).float()
            heatmaps = 0.5 * (heatmaps + flip_heatmaps(flipped, flip_pairs))
        return heatmaps

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        """COCO OKS AP/AR of ``model`` on the loader's boxes (the module docstring says how ranks combine).

        Returns ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` as fractions
        (``-1`` where the ground truth has no instance of an area range) and ``num_instances``.
        """
        import torch.distributed as dist

        from hrnas.utils.distributed import broadcast_object, get_rank, is_distributed
        from hrnas.utils.progress import progress as bar

        dataset = _unwrap(loader.dataset)
        if not isinstance(dataset, CocoKeypoints):
            dataset = self._dataset(self.cfg.data.val_split, train=False)
        category = dataset.category
        model.eval()
        hh, hw = self.heatmap_size
        results: list[dict[str, Any]] = []
        for batch in bar(loader, desc="evaluate", enabled=progress, leave=False):
            heatmaps = self.predict_heatmaps(model, batch["image"].to(device), category.flip_pairs)
            if heatmaps.shape[-2:] != (hh, hw):
                raise TaskError(f"the network predicts {tuple(heatmaps.shape[-2:])} heatmaps, expected {(hh, hw)}")
            coords, maxvals = decode_heatmaps(heatmaps)
            meta = batch["meta"]
            center, scale = meta["center"].numpy(), meta["scale"].numpy()
            preds = transform_preds(coords, center, scale, (hw, hh))
            results += make_keypoint_results(
                preds, maxvals, meta["image_id"].numpy(), meta["score"].numpy(), scale.prod(axis=1), category.id
            )
        if is_distributed():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        metrics = None
        if get_rank() == 0:
            metrics = evaluate_coco_keypoints(dataset.coco, results, category_id=category.id)
            metrics["num_instances"] = len(results)
        return broadcast_object(metrics)

    def baseline_metrics(self) -> dict[str, dict[str, float]]:
        """OKS metrics of the two image-blind references on the validation boxes (same evaluator as
        :meth:`evaluate`): ``box_centre`` (:func:`box_center_results`) and ``mean_pose``
        (:func:`mean_pose_results`, learnt from the training annotations; left out when they are absent)."""
        val = self._dataset(self.cfg.data.val_split, train=False)
        cat = val.category.id
        out = {"box_centre": evaluate_coco_keypoints(val.coco, box_center_results(val), category_id=cat)}
        try:
            train = self._dataset(self.cfg.data.train_split, train=True)
        except (DatasetError, OSError):
            return out
        out["mean_pose"] = evaluate_coco_keypoints(val.coco, mean_pose_results(train, val), category_id=cat)
        return out

    # --- prediction --------------------------------------------------------------------------------
    def _prediction_context(self) -> tuple[KeypointCategory | None, CocoKeypoints | None]:
        """The validation annotations when they are on this machine (boxes, skeleton, flip pairs), else None."""
        try:
            ds = self._dataset(self.cfg.data.val_split, train=False)
        except (DatasetError, TaskError, OSError):
            return None, None
        return ds.category, ds

    def _boxes_for(self, path: Path, image: np.ndarray, ds: CocoKeypoints | None) -> list[tuple[np.ndarray, ...]]:
        """``(center, scale, score, box)`` of the instances to read in ``image``: the annotation's boxes
        (or detections) of the image with the same file name, else the whole image."""
        h, w = self.input_size
        if ds is not None:
            ids = {i for i, info in ds.coco.imgs.items() if Path(info["file_name"]).name == path.name}
            found = [r for r in ds.records if r["image_id"] in ids]
            if found:
                return [(r["center"], r["scale"], np.float32(r["score"]), r["box"]) for r in found]
        box = np.array([0.0, 0.0, image.shape[1], image.shape[0]], dtype=np.float32)
        center, scale = box_to_center_scale(box, w / h, enlarge=1.0)
        return [(center, scale, np.float32(1.0), box)]

    @torch.no_grad()
    def predict_files(self, model: nn.Module, images: Sequence[str | Path], out_dir: Path) -> list[Path]:
        """Draw the predicted keypoints and skeleton on each image.

        Boxes are those of the validation annotations (or ``data.det_file``) for an image with the same
        file name, otherwise the whole image. Writes ``{stem}_keypoints.png`` per image and
        ``keypoints.json`` (a list of ``{"image", "instances": [{"box": [x, y, w, h], "score",
        "keypoints": [[x, y, confidence], ...]}]}``, image pixels); returns the files written.
        """
        from hrnas.tasks.predict import palette

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.eval()
        device = next(model.parameters()).device
        category, ds = self._prediction_context()
        pairs = category.flip_pairs if category is not None else None
        skeleton = category.skeleton if category is not None else ()
        h, w = self.input_size
        hh, hw = self.heatmap_size
        mean = np.array(IMAGENET_MEAN, dtype=np.float32)
        std = np.array(IMAGENET_STD, dtype=np.float32)
        written: list[Path] = []
        records = []
        for item in images:
            path = Path(item)
            if not path.is_file():
                raise DatasetError(f"{path}: no such image")
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if bgr is None:
                raise DatasetError(f"{path}: unreadable or corrupt image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            boxes = self._boxes_for(path, rgb, ds)
            crops = []
            for center, scale, _, _ in boxes:
                trans = get_affine_transform(center, scale, 0.0, (w, h))
                crop = cv2.warpAffine(rgb, trans, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32) / 255.0
                crops.append(torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).copy()))
            heatmaps = self.predict_heatmaps(model, torch.stack(crops).to(device), pairs)
            coords, maxvals = decode_heatmaps(heatmaps)
            centers = np.stack([np.asarray(b[0], dtype=np.float64) for b in boxes])
            scales = np.stack([np.asarray(b[1], dtype=np.float64) for b in boxes])
            preds = transform_preds(coords, centers, scales, (hw, hh))
            canvas = self._draw(rgb, preds, maxvals[..., 0], [b[3] for b in boxes], skeleton, palette)
            png = out_dir / f"{path.stem}_keypoints.png"
            tmp = png.with_name(f".{png.name}.tmp.png")
            cv2.imwrite(str(tmp), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
            tmp.replace(png)
            written.append(png)
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
        out = out_dir / "keypoints.json"
        tmp_json = out.with_name(f".{out.name}.tmp")
        tmp_json.write_text(json.dumps(records, indent=1) + "\n")
        tmp_json.replace(out)
        return [*written, out]

    @staticmethod
    def _draw(
        rgb: np.ndarray,
        preds: np.ndarray,
        conf: np.ndarray,
        boxes: Sequence[np.ndarray],
        skeleton: Sequence[tuple[int, int]],
        palette: Any,
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
