"""The ``task:`` section of a segmentation run config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hrnas.tasks.options import TaskOptions, option


@dataclass(frozen=True)
class SegmentationOptions(TaskOptions):
    """What a segmentation run learns and how it is evaluated.

    Attributes:
        num_classes: output classes; 0 = take them from the dataset.
        ignore_index: label value excluded from the loss and the metric (255 in Cityscapes trainIds and in
            ADE20K after ``reduce_zero_label``).
        flip_test: average the class probabilities with those of the horizontally flipped image at evaluation.
        eval_mode: dense evaluation on the ``whole`` image or by ``slide`` window of ``eval_crop``.
        eval_crop: ``[h, w]`` window for ``slide`` evaluation; required then, ignored otherwise.
        eval_scales: image scales averaged at evaluation (``[1.0]`` = single scale).
        class_weight: weight of each class in the cross-entropy (one per class, in train-id order, as
            mmseg's ``class_weight``); null = every class 1. Overrides ``class_balance``.
        class_balance: weights computed from the training labels' pixel frequencies ``p_c`` (counted once
            at the start of a run): ``none``; ``median_frequency`` (``median(p) / p_c``, Eigen & Fergus
            2015); ``enet`` (``1 / ln(1.02 + p_c)``, Paszke et al. 2016, milder). For data where one
            class (e.g. background) covers most pixels and the loss learns to predict little else.
    """

    num_classes: int = option(0, minimum=0)
    ignore_index: int = 255
    flip_test: bool = False
    eval_mode: str = option("whole", choices=("whole", "slide"))
    eval_crop: tuple[int, ...] | None = option(None, length=2, minimum=1)
    eval_scales: tuple[float, ...] = option((1.0,), minimum=0.0)
    class_weight: tuple[float, ...] | None = option(None, minimum=0.0)
    class_balance: str = option("none", choices=("none", "median_frequency", "enet"))

    def validate(self, cfg: Any, fail: Callable[[str, str], Exception]) -> None:
        if self.eval_mode == "slide" and self.eval_crop is None:
            raise fail("task.eval_crop", "is required when task.eval_mode is 'slide'")
        if not self.eval_scales:
            raise fail("task.eval_scales", "must list at least one scale")
        if self.class_weight is not None and not sum(self.class_weight) > 0:
            raise fail("task.class_weight", "must have a weight above 0")
        if self.class_weight is not None and self.num_classes and len(self.class_weight) != self.num_classes:
            raise fail("task.class_weight", f"has {len(self.class_weight)} weights for {self.num_classes} classes")
