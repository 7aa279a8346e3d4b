"""The ``task:`` section of a keypoint run config."""

from __future__ import annotations

from dataclasses import dataclass

from hrnas.tasks.options import TaskOptions, option


@dataclass(frozen=True)
class KeypointOptions(TaskOptions):
    """What a keypoint run learns, from which annotations, and how it is evaluated.

    Attributes:
        num_classes: keypoints (joints) per instance; 0 = take them from the annotations (a value given
            must agree with them).
        heatmap_sigma: standard deviation, in heatmap pixels, of the Gaussian keypoint targets.
        flip_test: average the heatmaps with those of the horizontally flipped input at evaluation (swapped
            left/right and shifted by one pixel).
        ann_file: annotation file (COCO keypoint format), relative to ``data.root`` unless absolute;
            ``{split}`` is replaced by the split name (``annotations/person_keypoints_{split}.json``);
            null = ``annotations/person_keypoints_{split}.json`` (``annotations/demo_keypoints_{split}.json``
            for ``data.format: demo``).
        det_file: person detections used for evaluation (COCO result format, relative to ``data.root``
            unless absolute); null = the ground-truth boxes.
    """

    num_classes: int = option(0, minimum=0)
    heatmap_sigma: float = option(2.0, minimum=0.0)
    flip_test: bool = False
    ann_file: str | None = None
    det_file: str | None = None

    legacy_keys = {
        "data.ann_file": "moved to task.ann_file (the keypoint task's section)",
        "data.det_file": "moved to task.det_file (the keypoint task's section)",
    }
