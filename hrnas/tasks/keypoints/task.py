"""Top-down keypoint estimation (spec §2.7 keypoint head, §5 "COCO keypoints"): heatmaps, OKS AP.

Data: COCO-format keypoint annotations (``data.format: coco_keypoints``) read by
:class:`hrnas.tasks.keypoints.dataset.CocoKeypoints`, one item per instance box:

- ``data.root`` holds everything; ``task.ann_file`` (default ``annotations/person_keypoints_{split}.json``)
  is relative to it, with ``{split}`` replaced by ``data.train_split`` / ``data.val_split``;
- images are looked up under ``{root}/{split}`` (COCO's ``train2017/``), ``{root}/images/{split}``,
  ``{root}/images`` or ``{root}`` itself — the first that holds the first image of the file;
- training uses the ground-truth boxes; evaluation uses them too unless ``task.det_file`` names a
  detection-results JSON (COCO result format, relative to the root);
- ``data.crop_size`` is the network input ``[h, w]`` (256×192 for COCO); heatmaps are 4× smaller, Gaussian
  with σ = ``task.heatmap_sigma`` heatmap pixels; ``data.scale_range [lo, hi]`` gives the scale jitter
  ``1 ± max(1 - lo, hi - 1)`` (HRNet's 0.35 for ``[0.65, 1.35]``).

The demo scenes (five keypoints per item; the ``demo_scenes`` data generator, :mod:`hrnas.data.generators`)
are generated under the root when it holds no complete demo dataset and the annotation file asked for is a
demo one (``annotations/demo_keypoints_{split}.json``), or with ``data.format: demo``. Their training crops are
not rotated: the keypoints are extreme points of the items, which a rotation would move elsewhere.

Loss: HRNet's target-weighted heatmap MSE (:func:`~hrnas.tasks.keypoints.codec.keypoint_mse_loss`).
Evaluation: heatmaps (averaged with those of the mirrored input when ``task.flip_test``) are decoded to the
argmax with the quarter-pixel shift, mapped back to image pixels, rescored and OKS-NMS'd, then scored by
``COCOeval`` with the category's OKS sigmas (:func:`~hrnas.tasks.keypoints.eval.evaluate_coco_keypoints`).
Under several processes each one decodes its shard of the boxes; the results are gathered to rank 0 with
``torch.distributed.all_gather_object``, rank 0 runs ``COCOeval`` once over all of them and broadcasts the
metrics, so the AP is exactly that of a single-process evaluation.

References that ignore the pixels, scored by the same evaluator (``hrnas evaluate CKPT --baselines``): every
joint at its box centre and every joint at its mean place in the box, learnt from the training annotations
(:mod:`hrnas.tasks.keypoints.baselines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from hrnas.data.errors import DatasetError
from hrnas.data.generators import ensure_generated
from hrnas.tasks.base import Task, TaskError, register_task
from hrnas.tasks.keypoints.baselines import box_center_results, mean_pose_results
from hrnas.tasks.keypoints.codec import decode_heatmaps, flip_heatmaps, keypoint_mse_loss, transform_preds
from hrnas.tasks.keypoints.dataset import CocoKeypoints, KeypointCategory, box_to_center_scale
from hrnas.tasks.keypoints.eval import evaluate_coco_keypoints, make_keypoint_results
from hrnas.tasks.keypoints.options import KeypointOptions

DEFAULT_ANN_FILE = "annotations/person_keypoints_{split}.json"
DEMO_ANN_FILE = "annotations/demo_keypoints_{split}.json"
DEFAULT_DEMO_ROOT = "data/demo"
HEATMAP_STRIDE = 4
"""Input pixels per heatmap pixel: the keypoint head predicts at the resolution of branch 0 (1/4)."""
DEFAULT_ROTATION_PROB = 0.6
"""Probability of the rotation augmentation (HRNet); 0 for the demo scenes, whose top/bottom/left/right
keypoints are the extreme points of each item as pasted, which a rotated crop would no longer show."""
DEMO_GENERATOR = "demo_scenes"
"""The data generator (:mod:`hrnas.data.generators`) that writes the demo scenes."""


def _unwrap(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


@register_task
class KeypointsTask(Task):
    """Keypoint head + heatmap MSE + COCO OKS AP.

    Batches are the dicts of :class:`~hrnas.tasks.keypoints.dataset.CocoKeypoints`, collated: ``image (B, 3, H, W)``,
    ``target (B, K, H/4, W/4)``, ``target_weight (B, K, 1)`` and ``meta``. The network output is heatmaps
    ``(B, K, H/4, W/4)``.
    """

    name = "keypoints"
    options = KeypointOptions
    data_formats = ("coco_keypoints", "demo")
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
        if fmt not in self.data_formats:
            raise TaskError(f"data.format: {fmt!r} is not a keypoint format ({', '.join(self.data_formats)})")
        return fmt == "demo" or Path(self.ann_template).name == Path(DEMO_ANN_FILE).name

    @property
    def ann_template(self) -> str:
        """The annotation file, relative to the root, with ``{split}`` still in it."""
        if self.cfg.task.ann_file:
            return self.cfg.task.ann_file
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
        wanted = [
            root / self.ann_template.format(split=s) for s in (self.cfg.data.train_split, self.cfg.data.val_split)
        ]
        if all(p.is_file() for p in wanted):
            return  # the annotation files are there (the user's own, or a demo set): use them as they are
        # a complete demo data set of any size is used as it is; otherwise the default one is generated
        ensure_generated(DEMO_GENERATOR, root, any_size=True)

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
        det_file = self.cfg.task.det_file
        boxes = "gt" if train or not det_file else det_file
        try:
            ann_file = self.ann_template.format(split=split)
        except (KeyError, IndexError, ValueError):
            raise TaskError(
                f"task.ann_file: {self.ann_template!r} may only contain the placeholder {{split}}"
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
        if boxes == "gt":
            annotated = sum(1 for a in ds.coco.dataset["annotations"] if a.get("category_id") == ds.category.id)
            ds.size_note = (
                f"(instances) after dropping {annotated - len(ds.records)} of its {annotated} annotations "
                "(crowd, no labelled joint, or a one-pixel box)"
            )
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
    def predict(self, model: nn.Module, inputs: Sequence[str], out_dir: Path, split: str | None = None) -> list[Path]:
        """Draw the predicted keypoints on the image files ``inputs`` (:mod:`hrnas.tasks.keypoints.predict`)."""
        from hrnas.tasks.keypoints.predict import predict_keypoints

        return predict_keypoints(self, model, self.prediction_files(inputs, split), out_dir)

    def prediction_context(self) -> tuple[KeypointCategory | None, CocoKeypoints | None]:
        """The validation annotations when they are on this machine (boxes, skeleton, flip pairs), else None."""
        try:
            ds = self._dataset(self.cfg.data.val_split, train=False)
        except (DatasetError, TaskError, OSError):
            return None, None
        return ds.category, ds

    def boxes_for(self, path: Path, image: np.ndarray, ds: CocoKeypoints | None) -> list[tuple[np.ndarray, ...]]:
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

