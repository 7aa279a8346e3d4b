"""Semantic segmentation (spec §5): Cityscapes, ADE20K, a folder of pairs, or the demo scenes.

Loss: pixel cross-entropy with ignore index ``task.ignore_index`` on logits bilinearly upsampled to the
label size. Metric: mIoU from a confusion matrix (reduced over processes), plus pixel accuracy and per-class
IoU. The ``demo`` data format is the generated demo scenes (Cityscapes layout), generated under
``data.root`` (default ``data/demo``) when missing by the ``demo_scenes`` data generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from hrnas.data.generators import ensure_generated
from hrnas.tasks.base import Task, TaskError, register_task
from hrnas.tasks.segmentation.datasets import SegmentationDataset, build_segmentation_dataset
from hrnas.tasks.segmentation.inference import infer_multiscale
from hrnas.tasks.segmentation.metrics import ConfusionMatrix
from hrnas.tasks.segmentation.options import SegmentationOptions
from hrnas.tasks.segmentation.transforms import SegEvalTransform, SegTrainTransform
from hrnas.utils.progress import progress as bar

DEFAULT_DEMO_ROOT = "data/demo"
DEMO_GENERATOR = "demo_scenes"
"""The data generator (:mod:`hrnas.data.generators`) that writes the ``demo`` format."""


def balance_weights(frequency: Tensor, method: str) -> Tensor:
    """Class weights from pixel frequencies ``p`` (summing to 1): ``median_frequency`` = ``median(p) / p``
    over the classes present (absent classes get 1), ``enet`` = ``1 / ln(1.02 + p)``. float32."""
    p = frequency.double()
    if method == "median_frequency":
        present = p > 0
        median = torch.quantile(p[present], 0.5)
        weight = torch.where(present, median / p.clamp_min(1e-12), torch.ones_like(p))
    elif method == "enet":
        weight = 1.0 / torch.log(1.02 + p)
    else:
        raise ValueError(f"class balance {method!r}: expected median_frequency or enet")
    return weight.float()


def prepare_demo_data(root: str | Path, progress: bool = True) -> Path:
    """Generate the demo scenes under ``root`` when missing (deterministic; the ``demo_scenes`` generator).

    A complete demo data set already at ``root`` is used as it is, whatever its size and counts (``hrnas
    demo`` itself regenerates its own folder when the demo's settings change)."""
    return ensure_generated(DEMO_GENERATOR, root, any_size=True, progress=progress)


@register_task
class SegmentationTask(Task):
    """Segmentation head + pixel cross-entropy + mIoU.

    Batches are ``(images (B, 3, H, W) float, labels (B, H, W) int64)``; the network output is logits
    ``(B, C, H/4, W/4)``.
    """

    name = "segmentation"
    options = SegmentationOptions
    data_formats = ("cityscapes", "ade20k", "folder", "demo")
    head_kinds = ("segmentation",)
    metric = "miou"

    @property
    def data_format(self) -> str:
        """The reader of ``data.format`` (the demo scenes are read as Cityscapes)."""
        fmt = self.cfg.data.format
        if fmt not in self.data_formats:
            raise TaskError(f"data.format: {fmt!r} is not a segmentation format ({', '.join(self.data_formats)})")
        return "cityscapes" if fmt == "demo" else fmt

    @property
    def root(self) -> str:
        root = self.cfg.data.root or (DEFAULT_DEMO_ROOT if self.cfg.data.format == "demo" else "")
        if not root:
            raise TaskError("data.root: not set")
        if self.cfg.data.format == "demo":
            prepare_demo_data(root)
        return root

    def _dataset(self, split: str, transforms: Any) -> SegmentationDataset:
        return build_segmentation_dataset(self.data_format, self.root, split, transforms=transforms)

    def _cached(self, dataset: SegmentationDataset) -> SegmentationDataset:
        # only the training process's own reads hit the cache: worker processes live for one epoch and
        # read each sample once in it
        if self.cfg.data.workers == 0:
            dataset.keep_decoded(self.cfg.data.cache_mb * 2**20)
        return dataset

    def train_dataset(self) -> Dataset:
        d = self.cfg.data
        transform = SegTrainTransform(
            crop_size=tuple(d.crop_size),
            scale_range=tuple(d.scale_range),
            base_size=d.base_size,
            ignore_index=self.cfg.task.ignore_index,
        )
        dataset = self._cached(self._dataset(d.train_split, transform))
        _ = self.class_weights  # computed (and checked) before training starts, not inside its first step
        return dataset

    def val_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.val_split, SegEvalTransform())  # built anew for every evaluation

    @cached_property
    def _num_classes_from_data(self) -> int:
        return self._dataset(self.cfg.data.val_split, None).num_classes

    def class_names(self) -> list[str]:
        return list(self._dataset(self.cfg.data.val_split, None).classes)

    def num_outputs(self) -> int:
        return self.cfg.task.num_classes or self._num_classes_from_data

    def inputs(self, batch: Any) -> Tensor:
        return batch[0]

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        target = batch[1]
        logits = F.interpolate(output.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        weight = self.class_weights
        if weight is not None:
            weight = weight.to(logits.device)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.cfg.task.ignore_index)

    @cached_property
    def class_weights(self) -> Tensor | None:
        """The loss weight of each class (``task.class_weight``, or ``task.class_balance`` computed from the
        training labels), None for equal weights.

        Raises:
            TaskError: ``task.class_weight`` does not have one weight per class.
        """
        t = self.cfg.task
        n = self.num_outputs()
        if t.class_weight is not None:
            if len(t.class_weight) != n:
                raise TaskError(f"task.class_weight: {len(t.class_weight)} weights for {n} classes")
            return torch.tensor(t.class_weight, dtype=torch.float32)
        if t.class_balance == "none":
            return None
        frequency = self.label_frequencies()
        return balance_weights(frequency, t.class_balance)

    def label_frequencies(self) -> Tensor:
        """Share of the labelled training pixels of each class, (num_classes,) float64 (reads every mask
        once)."""
        dataset = self._dataset(self.cfg.data.train_split, None)
        n = self.num_outputs()
        counts = torch.zeros(n, dtype=torch.float64)
        for index in bar(range(len(dataset)), desc="class frequencies", enabled=len(dataset) > 200, leave=False):
            labels = torch.from_numpy(dataset.load_labels(index).astype(np.int64)).flatten()
            labels = labels[(labels >= 0) & (labels < n)]
            counts += torch.bincount(labels, minlength=n).double()
        total = counts.sum()
        if total == 0:
            raise TaskError(f"task.class_balance: the training labels under {self.root} hold no labelled pixel")
        return counts / total

    def predict_logits(self, model: nn.Module, images: Tensor) -> Tensor:
        """Class probabilities (B, C, H, W) at input size, with the configured inference mode."""
        t = self.cfg.task
        return infer_multiscale(
            model,
            images,
            scales=tuple(t.eval_scales),
            flip=t.flip_test,
            mode=t.eval_mode,
            crop=tuple(t.eval_crop) if t.eval_crop else None,
            stride=tuple(max(1, c * 2 // 3) for c in t.eval_crop) if t.eval_crop else None,
            num_classes=self.num_outputs(),
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        from hrnas.utils.progress import progress as bar

        model.eval()
        matrix = ConfusionMatrix(self.num_outputs(), ignore_index=self.cfg.task.ignore_index, device=device)
        for images, target in bar(loader, desc="evaluate", enabled=progress, leave=False):
            images, target = images.to(device), target.to(device)
            probs = self.predict_logits(model, images)
            if probs.shape[-2:] != target.shape[-2:]:
                probs = F.interpolate(probs, size=target.shape[-2:], mode="bilinear", align_corners=False)
            matrix.update(probs.argmax(1), target)
        matrix.all_reduce()
        result = matrix.compute()
        return {
            "miou": float(result["miou"]),
            "pixel_acc": float(result["pixel_acc"]),
            "mean_acc": float(result["mean_acc"]),
            "iou": [float(v) for v in result["iou"]],
        }

    def predict(self, model: nn.Module, inputs: Sequence[str], out_dir: Path, split: str | None = None) -> list[Path]:
        """Label maps and overlays of the image files ``inputs`` (:mod:`hrnas.tasks.segmentation.predict`)."""
        from hrnas.tasks.segmentation.predict import predict_segmentation

        return predict_segmentation(self, model, self.prediction_files(inputs, split), out_dir)
