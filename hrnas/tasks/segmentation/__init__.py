"""Semantic segmentation (spec §5): everything about the task in one package.

Importing the package registers the ``segmentation`` task (:class:`~hrnas.tasks.segmentation.task.SegmentationTask`).

* configuration: :mod:`~hrnas.tasks.segmentation.options` (the ``task:`` section);
* data: :mod:`~hrnas.tasks.segmentation.datasets` (Cityscapes, ADE20K, a folder of image/mask pairs; the
  ``demo`` format is the generated demo scenes in the Cityscapes layout) and
  :mod:`~hrnas.tasks.segmentation.transforms` (mmseg's training and evaluation pipelines);
* evaluation: :mod:`~hrnas.tasks.segmentation.metrics` (confusion matrix, mIoU) and
  :mod:`~hrnas.tasks.segmentation.inference` (whole / sliding-window, multi-scale, flip);
* output: :mod:`~hrnas.tasks.segmentation.predict` (label maps and overlays for ``hrnas predict``).
"""

from hrnas.tasks.segmentation.options import SegmentationOptions
from hrnas.tasks.segmentation.task import SegmentationTask

__all__ = ["SegmentationOptions", "SegmentationTask"]
