"""COCO keypoint evaluation (OKS AP) with HRNet's rescoring and OKS-NMS (spec §5, "COCO keypoints").

Pipeline, as in HRNet's ``COCODataset.evaluate``: every instance's score becomes its box score times
the mean confidence of its joints above 0.2; within each image, instances whose OKS with a
higher-scored one exceeds 0.9 are suppressed; the rest are scored by ``pycocotools``'
``COCOeval(iouType="keypoints")`` with the category's per-joint OKS sigmas, so custom keypoint sets
(any ``K``) are evaluated with their own constants.

A result is a dict in the COCO keypoint result format::

    {"image_id": int, "keypoints": [x1, y1, c1, ..., xK, yK, cK], "score": float,
     "category_id": int (optional, default: the keypoint category),
     "area": float (optional: the instance area in image pixels² used by OKS-NMS)}

with ``(x, y)`` in original-image pixels and ``c`` the joint confidence (heatmap peak); ``keypoints``
may also be a ``(K, 3)`` array.  :func:`make_keypoint_results` builds them from decoded predictions.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnas.tasks.keypoints.dataset import keypoint_category, load_coco

__all__ = [
    "KEYPOINT_METRICS",
    "evaluate_coco_keypoints",
    "make_keypoint_results",
    "oks_iou",
    "oks_nms",
]

# Order of ``COCOeval.stats`` for iouType="keypoints".
KEYPOINT_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def make_keypoint_results(
    coords: np.ndarray,
    maxvals: np.ndarray,
    image_ids: Sequence[int] | np.ndarray,
    box_scores: Sequence[float] | np.ndarray,
    areas: Sequence[float] | np.ndarray,
    category_id: int,
) -> list[dict[str, Any]]:
    """Pack predictions of ``N`` instances into COCO keypoint result dicts.

    Args:
        coords: ``(N, K, 2)`` joint ``(x, y)`` in original-image pixels.
        maxvals: ``(N, K, 1)`` or ``(N, K)`` joint confidences.
        image_ids: ``(N,)`` COCO image ids.
        box_scores: ``(N,)`` box scores (1 for ground-truth boxes).
        areas: ``(N,)`` instance areas in image pixels² (HRNet: crop ``scale_w * scale_h``).
        category_id: the keypoint category id.
    """
    coords = np.asarray(coords, dtype=np.float64)
    conf = np.asarray(maxvals, dtype=np.float64).reshape(coords.shape[0], coords.shape[1], 1)
    kpts = np.concatenate([coords, conf], axis=2)
    return [
        {
            "image_id": int(image_ids[i]),
            "category_id": int(category_id),
            "keypoints": kpts[i].reshape(-1).tolist(),
            "score": float(box_scores[i]),
            "area": float(areas[i]),
        }
        for i in range(kpts.shape[0])
    ]


def oks_iou(g: np.ndarray, d: np.ndarray, area_g: float, area_d: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS between one instance and several (HRNet ``oks_iou`` without a visibility threshold).

    Args:
        g: ``(3K,)`` keypoints ``x, y, c`` of the reference instance.
        d: ``(M, 3K)`` keypoints of the others.
        area_g: reference area (pixels²).
        area_d: ``(M,)`` areas of the others.
        sigmas: ``(K,)`` per-joint OKS sigmas.

    Returns:
        ``(M,)`` OKS values in ``[0, 1]``, using the mean of the two areas as the scale.
    """
    variances = (2 * sigmas) ** 2
    dx = d[:, 0::3] - g[0::3]
    dy = d[:, 1::3] - g[1::3]
    scale = (area_g + np.asarray(area_d, dtype=np.float64)) / 2 + np.spacing(1)
    e = (dx**2 + dy**2) / variances / scale[:, None] / 2
    return np.exp(-e).mean(axis=1)


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, thresh: float, sigmas: np.ndarray) -> list[int]:
    """Greedy OKS non-maximum suppression (HRNet ``oks_nms``).

    Args:
        kpts: ``(M, 3K)`` keypoints of one image's instances.
        scores: ``(M,)`` scores; higher is kept first.
        areas: ``(M,)`` areas (pixels²).
        thresh: instances with OKS above this against a kept one are dropped.
        sigmas: ``(K,)`` OKS sigmas.

    Returns:
        Indices of the kept instances, by decreasing score.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        overlap = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas)
        order = order[1:][overlap <= thresh]
    return keep


def _prepare_gt(coco_gt: COCO) -> None:
    """Fill the fields ``COCOeval`` needs but custom files may omit (``area``, ``num_keypoints``)."""
    for ann in coco_gt.dataset.get("annotations", []):
        if "area" not in ann and "bbox" in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        if "num_keypoints" not in ann and "keypoints" in ann:
            ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"][2::3]) > 0))


def _keypoint_box_area(kpts: np.ndarray) -> float:
    xs, ys = kpts[0::3], kpts[1::3]
    return float((xs.max() - xs.min()) * (ys.max() - ys.min()))


def evaluate_coco_keypoints(
    coco_gt: COCO | str | os.PathLike[str],
    results: Sequence[dict[str, Any]],
    sigmas: Sequence[float] | np.ndarray | None = None,
    rescore: bool = True,
    oks_nms_thresh: float | None = 0.9,
    in_vis_thresh: float = 0.2,
    category_id: int | None = None,
) -> dict[str, float]:
    """COCO OKS AP/AR of keypoint ``results`` against ``coco_gt``.

    Args:
        coco_gt: the ground truth, loaded or as a file path.  Annotations lacking ``area`` or
            ``num_keypoints`` get them filled in (box area; count of labelled joints).
        results: result dicts (module docstring); they are not modified.
        sigmas: ``K`` OKS sigmas; default from the keypoint category (see
            :func:`hrnas.tasks.keypoints.dataset.keypoint_category`).
        rescore: multiply each score by the mean confidence of the joints above ``in_vis_thresh``
            (0 when none is) — HRNet's rescoring.
        oks_nms_thresh: OKS-NMS threshold per image; ``None`` disables the NMS.
        in_vis_thresh: confidence a joint needs to count in the rescoring.
        category_id: the keypoint category when the file has several.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` as fractions in
        ``[0, 1]``; ``-1.0`` where pycocotools finds no ground truth in an area range; all ``0.0`` for an
        empty ``results``.

    Raises:
        ValueError: a result names an image that is not in ``coco_gt`` or has the wrong number of
            keypoint values.
    """
    source = None
    if not isinstance(coco_gt, COCO):
        source = coco_gt
        coco_gt = load_coco(coco_gt)
    category = keypoint_category(coco_gt, category_id, source=source)
    k = category.num_joints
    sigma_array = np.asarray(category.sigmas if sigmas is None else sigmas, dtype=np.float64)
    if sigma_array.shape != (k,):
        raise ValueError(f"sigmas has {sigma_array.size} values, category {category.name!r} defines {k} keypoints")
    if len(results) == 0:
        return dict.fromkeys(KEYPOINT_METRICS, 0.0)

    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for i, res in enumerate(results):
        image_id = int(res["image_id"])
        if image_id not in coco_gt.imgs:
            raise ValueError(f"result {i}: image {image_id} is not in the ground truth")
        kpts = np.asarray(res["keypoints"], dtype=np.float64).reshape(-1)
        if kpts.size != 3 * k:
            raise ValueError(f"result {i}: {kpts.size} keypoint values, expected {3 * k} (x, y, score per joint)")
        score = float(res["score"])
        if rescore:
            conf = kpts[2::3]
            valid = conf > in_vis_thresh
            score *= float(conf[valid].mean()) if valid.any() else 0.0
        area = float(res["area"]) if "area" in res else _keypoint_box_area(kpts)
        per_image[image_id].append(
            {
                "image_id": image_id,
                "category_id": int(res.get("category_id", category.id)),
                "keypoints": kpts,
                "score": score,
                "area": area,
            }
        )

    dets = []
    for image_dets in per_image.values():
        if oks_nms_thresh is not None:
            keep = oks_nms(
                np.stack([d["keypoints"] for d in image_dets]),
                np.array([d["score"] for d in image_dets]),
                np.array([d["area"] for d in image_dets]),
                oks_nms_thresh,
                sigma_array,
            )
            image_dets = [image_dets[i] for i in keep]
        for d in image_dets:
            dets.append(
                {
                    "image_id": d["image_id"],
                    "category_id": d["category_id"],
                    "keypoints": d["keypoints"].tolist(),
                    "score": d["score"],
                }
            )

    # pycocotools adds "ignore" flags to the ground truth; keep the caller's object untouched.
    gt = copy.copy(coco_gt)
    gt.dataset = copy.deepcopy(coco_gt.dataset)
    _prepare_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_dt = gt.loadRes(dets)
        evaluator = COCOeval(gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = sigma_array
        evaluator.params.catIds = [category.id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(KEYPOINT_METRICS, evaluator.stats, strict=True)}
