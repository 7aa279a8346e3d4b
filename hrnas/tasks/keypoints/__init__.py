"""Top-down keypoint estimation (spec §2.7 keypoint head, §5 "COCO keypoints"): everything about the task.

Importing the package registers the ``keypoints`` task (:class:`~hrnas.tasks.keypoints.task.KeypointsTask`).

* configuration: :mod:`~hrnas.tasks.keypoints.options` (the ``task:`` section);
* data: :mod:`~hrnas.tasks.keypoints.dataset` (COCO keypoint annotations, any keypoint category, HRNet's
  augmentation) and :mod:`~hrnas.tasks.keypoints.codec` (affine crops, Gaussian heatmaps, decoding, loss);
* evaluation: :mod:`~hrnas.tasks.keypoints.eval` (OKS AP with HRNet's rescoring and OKS-NMS) and
  :mod:`~hrnas.tasks.keypoints.baselines` (references that ignore the pixels);
* output: :mod:`~hrnas.tasks.keypoints.predict` (joints and skeleton drawn for ``hrnas predict``).
"""

from hrnas.tasks.keypoints.baselines import box_center_results, mean_pose_results
from hrnas.tasks.keypoints.options import KeypointOptions
from hrnas.tasks.keypoints.task import KeypointsTask

__all__ = ["KeypointOptions", "KeypointsTask", "box_center_results", "mean_pose_results"]
