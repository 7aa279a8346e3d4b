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
    """

    num_classes: int = option(0, minimum=0)
    ignore_index: int = 255
    flip_test: bool = False
    eval_mode: str = option("whole", choices=("whole", "slide"))
    eval_crop: tuple[int, ...] | None = option(None, length=2, minimum=1)
    eval_scales: tuple[float, ...] = option((1.0,), minimum=0.0)

    def validate(self, cfg: Any, fail: Callable[[str, str], Exception]) -> None:
        if self.eval_mode == "slide" and self.eval_crop is None:
            raise fail("task.eval_crop", "is required when task.eval_mode is 'slide'")
        if not self.eval_scales:
            raise fail("task.eval_scales", "must list at least one scale")
