"""COCO keypoint evaluation, and the whole GT → crop → heatmap → decode → image → OKS AP chain."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrnas.tasks.keypoints.codec import decode_heatmaps, transform_preds
from hrnas.tasks.keypoints.dataset import COCO_PERSON_KEYPOINTS, CocoKeypoints, load_coco
from hrnas.tasks.keypoints.eval import (
    KEYPOINT_METRICS,
    evaluate_coco_keypoints,
    make_keypoint_results,
    oks_iou,
    oks_nms,
)

PERSON_TEMPLATE = np.array(
    [
        [0.50, 0.10], [0.54, 0.07], [0.46, 0.07], [0.58, 0.09], [0.42, 0.09],
        [0.68, 0.22], [0.32, 0.22], [0.78, 0.38], [0.22, 0.38], [0.82, 0.52], [0.18, 0.52],
        [0.62, 0.55], [0.38, 0.55], [0.64, 0.75], [0.36, 0.75], [0.65, 0.95], [0.35, 0.95],
    ]
)  # fmt: skip
WIDGET_TEMPLATE = np.array([[0.5, 0.0], [0.5, 1.0], [0.0, 0.5], [1.0, 0.5], [0.5, 0.5]])
WIDGET_NAMES = ["top", "bottom", "left", "right", "center"]
IMAGE_W, IMAGE_H = 640, 480


def instance(ann_id, image_id, box, template, rng, category_id=1, hidden=()):
    x, y, w, h = box
    k = len(template)
    kps = np.zeros((k, 3))
    jitter = rng.uniform(-0.03, 0.03, size=(k, 2))
    kps[:, 0] = np.round(x + np.clip(template[:, 0] + jitter[:, 0], 0, 1) * w)
    kps[:, 1] = np.round(y + np.clip(template[:, 1] + jitter[:, 1], 0, 1) * h)
    kps[:, 2] = rng.choice([1, 2], size=k)
    kps[list(hidden)] = 0
    return {
        "id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [float(v) for v in box],
        "area": 0.6 * w * h, "iscrowd": 0, "num_keypoints": int((kps[:, 2] > 0).sum()),
        "keypoints": kps.reshape(-1).astype(int).tolist(),
    }  # fmt: skip


def write_dataset(root: Path, category: dict, template: np.ndarray) -> Path:
    """Three images, six labelled instances, one crowd region and one instance with no labelled joint."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in (1, 2, 3):
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 255, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": name, "width": IMAGE_W, "height": IMAGE_H})
    k = len(template)
    anns = [
        instance(1, 1, (40, 40, 150, 300), template, rng, hidden=(3,)),
        instance(2, 1, (300, 60, 170, 380), template, rng),
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [480, 300, 150, 170], "area": 20000.0, "iscrowd": 1,
         "num_keypoints": 0, "keypoints": [0] * (3 * k)},
        instance(4, 2, (100, 20, 200, 420), template, rng, hidden=(k - 1,)),
        instance(5, 2, (400, 100, 70, 140), template, rng),  # medium (area < 96²)
        {"id": 6, "image_id": 2, "category_id": 1, "bbox": [320, 300, 60, 100], "area": 4000.0, "iscrowd": 0,
         "num_keypoints": 0, "keypoints": [0] * (3 * k)},
        instance(7, 3, (200, 50, 220, 400), template, rng),
        instance(8, 3, (20, 200, 120, 250), template, rng),
    ]  # fmt: skip
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [category]}))
    return root / "ann.json"


PERSON = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_PERSON_KEYPOINTS),
          "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13]]}  # fmt: skip
WIDGET = {"id": 1, "name": "widget", "keypoints": WIDGET_NAMES, "skeleton": [[1, 5], [2, 5], [3, 5], [4, 5]]}


def predict_from_targets(ds: CocoKeypoints) -> list[dict]:
    """Pretend the network output the training targets: decode them and map back to the image."""
    samples = [ds[i] for i in range(len(ds))]
    heatmaps = np.stack([s["target"].numpy() for s in samples])
    coords, maxvals = decode_heatmaps(heatmaps)
    h, w = heatmaps.shape[2:]
    centers = np.stack([s["meta"]["center"].numpy() for s in samples])
    scales = np.stack([s["meta"]["scale"].numpy() for s in samples])
    preds = transform_preds(coords, centers, scales, (w, h))
    return make_keypoint_results(
        preds,
        maxvals,
        [s["meta"]["image_id"] for s in samples],
        [s["meta"]["score"] for s in samples],
        scales.prod(axis=1),
        ds.category.id,
    )


@pytest.mark.parametrize("category,template", [(PERSON, PERSON_TEMPLATE), (WIDGET, WIDGET_TEMPLATE)])
def test_gt_heatmaps_through_the_chain_score_full_ap(tmp_path, category, template):
    ann_file = write_dataset(tmp_path, category, template)
    ds = CocoKeypoints(tmp_path, "ann.json", "images", split_is_train=False)
    assert len(ds) == 6  # crowd and unlabelled instances have no item
    results = predict_from_targets(ds)
    metrics = evaluate_coco_keypoints(ann_file, results)
    assert set(metrics) == set(KEYPOINT_METRICS)
    assert metrics["AP"] >= 0.95, metrics
    assert metrics["APm"] >= 0.9 and metrics["APl"] >= 0.95, metrics  # both size ranges are populated
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AR50"] == pytest.approx(1.0)
    # the same through a loaded COCO object, which is left unmodified
    coco = load_coco(ann_file)
    before = json.dumps(coco.dataset, sort_keys=True)
    assert evaluate_coco_keypoints(coco, results) == metrics
    assert json.dumps(coco.dataset, sort_keys=True) == before
    # results survive a JSON round trip (the standard result-file format)
    assert evaluate_coco_keypoints(ann_file, json.loads(json.dumps(results))) == metrics


def test_empty_results_score_zero(tmp_path):
    ann_file = write_dataset(tmp_path, PERSON, PERSON_TEMPLATE)
    assert evaluate_coco_keypoints(ann_file, []) == dict.fromkeys(KEYPOINT_METRICS, 0.0)


def _shifted_results(coco, sigma, target_oks):
    """GT keypoints moved right by the distance that gives OKS ``target_oks`` under ``sigma``."""
    results = []
    for ann in coco.dataset["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        d = math.sqrt(-math.log(target_oks) * 2 * ann["area"] * (2 * sigma) ** 2)
        kps = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps[:, 0] += d
        kps[:, 2] = 1.0
        results.append({"image_id": ann["image_id"], "keypoints": kps.reshape(-1).tolist(), "score": 1.0})
    return results


def test_custom_category_sigmas_from_json_or_default(tmp_path):
    ann_file = write_dataset(tmp_path, {**WIDGET, "sigmas": [0.1] * 5}, WIDGET_TEMPLATE)
    results = _shifted_results(load_coco(ann_file), 0.1, 0.9)  # OKS 0.9 under sigma 0.1
    with_json = evaluate_coco_keypoints(ann_file, results)
    assert with_json["AP50"] == pytest.approx(1.0) and with_json["AP75"] == pytest.approx(1.0)
    # under the default sigma 0.05 the same predictions have OKS 0.9 ** 4 ≈ 0.66
    with_default = evaluate_coco_keypoints(ann_file, results, sigmas=[0.05] * 5)
    assert with_default["AP50"] == pytest.approx(1.0) and with_default["AP75"] == pytest.approx(0.0)
    write_dataset(tmp_path, WIDGET, WIDGET_TEMPLATE)  # no "sigmas": the default applies
    assert evaluate_coco_keypoints(ann_file, results) == with_default
    with pytest.raises(ValueError, match="sigmas has 17 values, category 'widget' defines 5"):
        evaluate_coco_keypoints(ann_file, results, sigmas=[0.05] * 17)


def test_rescoring_ranks_confident_instances_first(tmp_path):
    ann_file = write_dataset(tmp_path, PERSON, PERSON_TEMPLATE)
    coco = load_coco(ann_file)
    results = _shifted_results(coco, 0.1, 0.99)
    for r in results:
        r["score"] = 0.9
    # a confident box with unsure joints, far from every person of image 1
    junk = np.zeros((17, 3))
    junk[:, 0], junk[:, 1], junk[:, 2] = 600, 20, 0.3
    results.append({"image_id": 1, "keypoints": junk.reshape(-1).tolist(), "score": 1.0})
    assert evaluate_coco_keypoints(ann_file, results)["AP"] == pytest.approx(1.0)
    assert evaluate_coco_keypoints(ann_file, results, rescore=False)["AP"] < 0.95


def test_oks_nms_removes_duplicates(tmp_path):
    ann_file = write_dataset(tmp_path, PERSON, PERSON_TEMPLATE)
    results = _shifted_results(load_coco(ann_file), 0.1, 0.99)
    duplicate = dict(results[0], score=0.5)
    kept = evaluate_coco_keypoints(ann_file, results + [duplicate])
    assert kept == evaluate_coco_keypoints(ann_file, results)

    sigmas = np.full(2, 0.1)
    kpts = np.array([[10, 10, 1, 50, 50, 1], [11, 10, 1, 50, 51, 1], [200, 200, 1, 240, 240, 1]], dtype=float)
    areas = np.full(3, 1600.0)
    assert oks_iou(kpts[0], kpts[1:], 1600.0, areas[1:], sigmas)[0] > 0.9
    assert oks_nms(kpts, np.array([0.8, 0.9, 0.1]), areas, 0.9, sigmas) == [1, 2]
    assert oks_nms(kpts, np.array([0.8, 0.9, 0.1]), areas, 1.0, sigmas) == [1, 0, 2]


def test_bad_results_are_rejected(tmp_path):
    ann_file = write_dataset(tmp_path, PERSON, PERSON_TEMPLATE)
    with pytest.raises(ValueError, match="result 0: image 99 is not in the ground truth"):
        evaluate_coco_keypoints(ann_file, [{"image_id": 99, "keypoints": [0] * 51, "score": 1.0}])
    with pytest.raises(ValueError, match="result 0: 15 keypoint values, expected 51"):
        evaluate_coco_keypoints(ann_file, [{"image_id": 1, "keypoints": [0] * 15, "score": 1.0}])
