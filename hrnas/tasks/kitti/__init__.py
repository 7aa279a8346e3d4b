"""KITTI 3D object detection (HR-NAS §4, kitti-spec.md): everything about the task in one package.

Importing the package registers the ``kitti`` task (:class:`~hrnas.tasks.kitti.task.KittiTask`).

* real data: :mod:`~hrnas.tasks.kitti.formats` (``label_2``/result, ``calib``, ``velodyne``, id lists),
  :mod:`~hrnas.tasks.kitti.layout` (where a frame's files live), :mod:`~hrnas.tasks.kitti.boxes` (LiDAR <->
  camera boxes, projection), :mod:`~hrnas.tasks.kitti.dataset`, :mod:`~hrnas.tasks.kitti.augment` and
  :mod:`~hrnas.tasks.kitti.gt_database` (ground-truth sampling);
* the network: :mod:`~hrnas.tasks.kitti.pillars` (pillarization, PillarVFE, scatter),
  :mod:`~hrnas.tasks.kitti.head` (anchor head), :mod:`~hrnas.tasks.kitti.detector` (the whole detector and
  its exportable form), :mod:`~hrnas.tasks.kitti.cost` (its exact MACs and parameters);
* training and inference: :mod:`~hrnas.tasks.kitti.anchors` (anchors, target assignment, box coder),
  :mod:`~hrnas.tasks.kitti.losses`, :mod:`~hrnas.tasks.kitti.postprocess` (decoding, rotated NMS);
* evaluation and output: :mod:`~hrnas.tasks.kitti.iou` (rotated 2D/BEV/3D IoU),
  :mod:`~hrnas.tasks.kitti.eval` (the official protocol), :mod:`~hrnas.tasks.kitti.eval_cli`
  (``hrnas kitti-eval``), :mod:`~hrnas.tasks.kitti.vis` (BEV and camera pictures),
  :mod:`~hrnas.tasks.kitti.export` (ONNX export of the network part);
* configuration: :mod:`~hrnas.tasks.kitti.options` (the ``task:`` section of a KITTI run config).
"""

from hrnas.tasks.kitti.task import CLASSES, KittiTask, summary_metrics

__all__ = ["CLASSES", "KittiTask", "summary_metrics"]
