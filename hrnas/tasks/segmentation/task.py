"""Semantic segmentation (spec §5): Cityscapes, ADE20K, a folder of pairs, or the demo scenes.

Loss: pixel cross-entropy with ignore index 255 on logits bilinearly upsampled to the label size.
Metric: mIoU from a confusion matrix (reduced over processes), plus pixel accuracy and per-class IoU.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from hrnas.data.seg_transforms import SegEvalTransform, SegTrainTransform
from hrnas.data.segmentation import SegmentationDataset, build_segmentation_dataset
from hrnas.tasks.base import Task, TaskError, register_task
from hrnas.tasks.seg_inference import infer_multiscale
from hrnas.tasks.seg_metrics import ConfusionMatrix

DEFAULT_DEMO_ROOT = "data/demo"


def prepare_demo_data(root: str | Path, progress: bool = True) -> Path:
    """Generate the demo scenes under ``root`` when missing (deterministic; see ``hrnas.data.demo_scenes``)."""
    from hrnas.data.demo_scenes import ensure_demo_scenes

    return ensure_demo_scenes(root, progress=progress)


@register_task("segmentation")
class SegmentationTask(Task):
    name = "segmentation"
    head_kinds = ("segmentation",)
    metric = "miou"

    @property
    def data_format(self) -> str:
        fmt = self.cfg.data.format
        if fmt not in ("cityscapes", "ade20k", "folder", "demo"):
            raise TaskError(f"data.format: {fmt!r} is not a segmentation format (cityscapes, ade20k, folder, demo)")
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

    def train_dataset(self) -> Dataset:
        d = self.cfg.data
        transform = SegTrainTransform(
            crop_size=tuple(d.crop_size),
            scale_range=tuple(d.scale_range),
            base_size=d.base_size,
            ignore_index=self.cfg.task.ignore_index,
        )
        return self._dataset(d.train_split, transform)

    def val_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.val_split, SegEvalTransform())

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
        return F.cross_entropy(logits, target, ignore_index=self.cfg.task.ignore_index)

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
