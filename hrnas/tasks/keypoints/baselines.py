"""References that ignore the pixels, scored by the same evaluator as the network (``hrnas evaluate
--baselines``): every joint at its box centre, and every joint at its mean place in the box learnt from the
training annotations. A network has to beat them to show it localises joints at all."""

from __future__ import annotations

from typing import Any

import numpy as np

from hrnas.tasks.base import TaskError
from hrnas.tasks.keypoints.dataset import CocoKeypoints
from hrnas.tasks.keypoints.eval import make_keypoint_results

__all__ = ["box_center_results", "mean_pose_results"]


def box_center_results(dataset: CocoKeypoints) -> list[dict[str, Any]]:
    """A reference prediction: every joint of every box at the box centre, confidence 1.

    Evaluated with :func:`~hrnas.tasks.keypoints.eval.evaluate_coco_keypoints`, it gives the AP that a
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
