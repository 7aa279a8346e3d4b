"""Image classification (spec §2.7 classification head, §5 ImageNet recipe): ImageNet folders or Fashion-MNIST.

Training loss: cross-entropy with label smoothing ε = ``task.label_smoothing`` (0.1 in the ImageNet
recipes). Evaluation: plain cross-entropy and top-1 / top-5 accuracy (fractions in [0, 1]) of the whole
validation set, counted per process and summed over processes, so every image counts exactly once.

Data formats:

- ``imagefolder``: ``{data.root}/{split}/{class}/*.jpg`` (ImageNet layout, torchvision ``ImageFolder``).
  Training: TF-style random-resized crop to ``data.crop_size`` over an area fraction ``data.scale_range``
  (0.08–1 for ImageNet), bicubic, horizontal flip, ImageNet mean/std. Evaluation: centre square of
  ``crop / data.base_size`` of the short side (224/256 for ImageNet; 0.875 when ``base_size`` is null),
  resized bicubic to the crop. Classes are the sorted class folders of the training split; the
  validation split must have the same folders.
- ``fashion_mnist``: the official 60k training / 10k test split, the test split serving as validation
  (``data.val_split: val`` or ``test``). Images are brought to ``data.crop_size`` (28–32 by zero
  padding), repeated to 3 channels and normalised; training adds a horizontal flip and a random shift
  of up to ``SHIFT_PIXELS`` pixels. ``data.root`` "" looks in the usual places and fetches the Debian
  package when missing (``hrnas.data.fashion_mnist``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import transforms as T

from hrnas.data.errors import DatasetError
from hrnas.data.fashion_mnist import FASHION_MNIST_CLASSES
from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD, load_image
from hrnas.tasks.base import Task, TaskError, register_task
from hrnas.tasks.classification.datasets import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FashionMNISTClassification,
    ImageFolderClassification,
    TFRandomResizedCrop,
    imagenet_eval_transform,
    topk_accuracy,
)
from hrnas.tasks.classification.options import ClassificationOptions
from hrnas.utils.atomic import atomic_write_text

FORMATS = ("imagefolder", "fashion_mnist")
SHIFT_PIXELS = 2
"""Largest random translation, in pixels, of the Fashion-MNIST training augmentation."""
TOP_K = 5


class RandomShiftFlip:
    """Training augmentation for small images already normalised: ``(C, H, W)`` → ``(C, H, W)``.

    Flips horizontally with probability 0.5, then shifts the image by up to ``pad`` pixels in x and
    y (uniform integers), filling the uncovered border with ``fill`` (the normalised background value, so
    a shifted Fashion-MNIST item stays on a black background). Draws from torch's global RNG, which the
    engine seeds per sample.
    """

    def __init__(self, pad: int, fill: float) -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = pad
        self.fill = fill

    def __call__(self, x: Tensor) -> Tensor:
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.pad == 0:
            return x
        h, w = x.shape[-2:]
        padded = F.pad(x, (self.pad,) * 4, value=self.fill)
        top, left = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        return padded[..., top : top + h, left : left + w].contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pad={self.pad}, fill={self.fill:.4f})"


class TorchRandom(random.Random):
    """A ``random.Random`` whose draws come from torch's global RNG.

    :class:`~hrnas.tasks.classification.datasets.TFRandomResizedCrop` draws from a ``random.Random``; giving it
    this one makes its crops follow the per-sample torch seeds of the engine (``hrnas.engine.data``), so
    ImageNet batches are reproducible and resumable like every other task's.
    """

    def random(self) -> float:
        return float(torch.rand((), dtype=torch.float64))


def _class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` (torchvision ``ImageFolder`` order)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


@register_task
class ClassificationTask(Task):
    """Classification head + (label-smoothed) cross-entropy + top-1/top-5 accuracy.

    Batches are ``(images (B, 3, S, S) float, labels (B,) int64)``; the network output is logits
    ``(B, num_classes)``.
    """

    name = "classification"
    options = ClassificationOptions
    data_formats = FORMATS
    head_kinds = ("classification",)
    metric = "top1"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._datasets: dict[str, Dataset] = {}

    # --- configuration -----------------------------------------------------------------------------
    @property
    def data_format(self) -> str:
        fmt = self.cfg.data.format
        if fmt not in FORMATS:
            raise TaskError(f"data.format: {fmt!r} is not a classification format ({', '.join(FORMATS)})")
        return fmt

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square network input, from ``data.crop_size``."""
        h, w = self.cfg.data.crop_size
        if h != w:
            raise TaskError(f"data.crop_size: classification uses square inputs, got [{h}, {w}]")
        return int(h)

    def _root(self) -> Path:
        root = self.cfg.data.root
        if not root:
            raise TaskError("data.root: not set (the folder holding the split folders)")
        return Path(root)

    def _fashion_root(self) -> str | None:
        return self.cfg.data.root or None

    # --- classes -----------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        """Class names in label order: the training split's class folders, or the Fashion-MNIST names.

        For ``imagefolder`` the validation split's folders are used when the training split is absent
        (evaluating a checkpoint on a machine that only holds the validation images).
        """
        if self.data_format == "fashion_mnist":
            return list(FASHION_MNIST_CLASSES)
        root = self._root()
        for split in (self.cfg.data.train_split, self.cfg.data.val_split):
            if (root / split).is_dir():
                names = _class_folders(root / split)
                if names:
                    return names
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        raise DatasetError(
            f"{root}: no class folders in {self.cfg.data.train_split!r} or {self.cfg.data.val_split!r} "
            "(expected {root}/{split}/{class}/*.jpg)"
        )

    def num_outputs(self) -> int:
        """``task.num_classes`` when set (it must agree with the data), else the number of classes."""
        n = len(self.class_names())
        wanted = self.cfg.task.num_classes
        if wanted and wanted != n:
            raise TaskError(
                f"task.num_classes: {wanted}, but the {self.data_format} data has {n} classes "
                "(set task.num_classes=0 to take the count from the data)"
            )
        return n

    # --- data --------------------------------------------------------------------------------------
    def _train_transform(self) -> Callable[[Any], Tensor]:
        if self.data_format == "fashion_mnist":
            return RandomShiftFlip(SHIFT_PIXELS, fill=-FASHION_MNIST_MEAN / FASHION_MNIST_STD)
        lo, hi = self.cfg.data.scale_range
        if not 0 < lo <= hi <= 1:
            raise TaskError(
                f"data.scale_range: [{lo}, {hi}] is not a crop area fraction range within (0, 1] "
                "(ImageNet: [0.08, 1.0])"
            )
        return T.Compose(
            [
                TFRandomResizedCrop(self.image_size, scale=(lo, hi), rng=TorchRandom()),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def _eval_transform(self) -> Callable[[Image.Image], Tensor]:
        size = self.image_size
        base = self.cfg.data.base_size
        crop_pct = min(1.0, size / base) if base else 0.875
        return imagenet_eval_transform(size, crop_pct)

    def _dataset(self, split: str, train: bool) -> Dataset:
        key = f"{split}:{'train' if train else 'eval'}"
        if key in self._datasets:
            return self._datasets[key]
        if self.data_format == "fashion_mnist":
            transform = self._train_transform() if train else None
            ds: Dataset = FashionMNISTClassification(split, self._fashion_root(), self.image_size, transform)
        else:
            transform = self._train_transform() if train else self._eval_transform()
            folder = ImageFolderClassification(self._root(), split, transform)
            expected = self.class_names()
            if list(folder.classes) != expected:
                extra = sorted(set(folder.classes) - set(expected))
                missing = sorted(set(expected) - set(folder.classes))
                raise DatasetError(
                    f"{self._root() / split}: class folders differ from the training split's "
                    f"(extra: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})"
                )
            ds = folder
        self._datasets[key] = ds
        return ds

    def train_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.train_split, train=True)

    def val_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.val_split, train=False)

    # --- model -------------------------------------------------------------------------------------
    def inputs(self, batch: Any) -> Tensor:
        return batch[0]

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        """Label-smoothed cross-entropy of logits ``(B, C)`` against labels ``(B,)`` (mean over the batch)."""
        return F.cross_entropy(output.float(), batch[1], label_smoothing=self.cfg.task.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        """Top-1/top-5 accuracy and plain cross-entropy over the loader, summed over processes.

        Returns ``{"top1", "top5", "top1_error", "loss", "num_samples"}``; accuracies are fractions in
        [0, 1] (top-5 of fewer than 5 classes is top-C), ``loss`` is the mean cross-entropy (nats).
        """
        from hrnas.utils.distributed import all_reduce_sum_
        from hrnas.utils.progress import progress as bar

        model.eval()
        # [samples, top-1 hits, top-5 hits, summed cross-entropy]; float64 keeps the counts exact.
        totals = torch.zeros(4, dtype=torch.float64, device=device)
        for images, labels in bar(loader, desc="evaluate", enabled=progress, leave=False):
            images, labels = images.to(device), labels.to(device)
            logits = model(images).float()
            n = labels.numel()
            acc = topk_accuracy(logits, labels, (1, TOP_K))
            totals[0] += n
            totals[1] += round(acc["top1"] * n)
            totals[2] += round(acc[f"top{TOP_K}"] * n)
            totals[3] += F.cross_entropy(logits, labels, reduction="sum").double()
        all_reduce_sum_(totals)
        n, top1, top5, loss = totals.tolist()
        if n == 0:
            raise TaskError("evaluate: the validation set is empty")
        return {
            "top1": top1 / n,
            "top5": top5 / n,
            "top1_error": 1.0 - top1 / n,
            "loss": loss / n,
            "num_samples": int(n),
        }

    # --- prediction --------------------------------------------------------------------------------
    def _load_for_prediction(self, path: Path) -> Tensor:
        """One image file → the network input ``(3, S, S)``, prepared as the validation images are."""
        image = load_image(path)
        if self.data_format == "imagefolder":
            return self._eval_transform()(image.convert("RGB"))
        # Fashion-MNIST items are light objects on a black background, 28×28, padded to the input size.
        grey = image.convert("L").resize((28, 28), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None]
        size = self.image_size
        if 28 <= size <= 32:
            top = (size - 28) // 2
            x = F.pad(x, (top, size - 28 - top, top, size - 28 - top))
        else:
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        x = (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        return x.expand(3, -1, -1).contiguous()

    def _names_for_prediction(self, num_classes: int) -> list[str]:
        try:
            names = self.class_names()
        except (DatasetError, TaskError, OSError):
            names = []
        if len(names) != num_classes:  # the data is not on this machine: fall back to class indices
            names = [f"class {i}" for i in range(num_classes)]
        return names

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[str], out_dir: Path, split: str | None = None) -> list[Path]:
        """Print the top-5 classes of each image file in ``inputs`` and write them to ``out_dir/predictions.json``.

        The JSON is a list of ``{"image": path, "top5": [{"class": name, "index": int, "probability":
        float}, ...]}`` in the order of ``inputs``. Class names come from the dataset named by the
        config (class indices when it is not available). Returns ``[predictions.json]``.
        """
        inputs = self.prediction_files(inputs, split)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.eval()
        device = next(model.parameters()).device
        names: list[str] | None = None
        records = []
        for item in inputs:
            path = Path(item)
            x = self._load_for_prediction(path).unsqueeze(0).to(device)
            probs = model(x).float().softmax(dim=1)[0].cpu()
            if names is None:
                names = self._names_for_prediction(probs.numel())
            k = min(TOP_K, probs.numel())
            top = probs.topk(k)
            ranked = [
                {"class": names[i], "index": int(i), "probability": float(p)}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
            print(f"{path}: " + ", ".join(f"{r['class']} {100 * r['probability']:.1f}%" for r in ranked))
            records.append({"image": str(path), "top5": ranked})
        return [atomic_write_text(out_dir / "predictions.json", json.dumps(records, indent=1) + "\n")]
