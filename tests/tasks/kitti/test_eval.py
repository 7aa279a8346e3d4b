"""The official KITTI evaluation: AP rules, ignore rules, hand-computed curves, and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from hrnas.tasks.kitti.boxes import alpha_from_camera_boxes, box3d_to_2d_clipped
from hrnas.tasks.kitti.eval import (
    LOOSE_IOU,
    MAX_OCCLUSION,
    MAX_TRUNCATION,
    MIN_HEIGHT,
    N_SAMPLE_PTS,
    STRICT_IOU,
    ap_r11,
    ap_r40,
    evaluate_kitti,
    format_kitti_table,
    recall_thresholds,
)
from hrnas.tasks.kitti.eval_cli import main
from hrnas.tasks.kitti.formats import KittiObjects, parse_calib, read_label, write_label
from hrnas.tasks.kitti.iou import bev_iou_camera, box_iou_2d, iou3d_camera

# P2, R0_rect and Tr_velo_to_cam of calib/000000.txt.
CALIB = parse_calib(
    [
        "P2: 7.070493e+02 0 6.040814e+02 4.575831e+01 0 7.070493e+02 1.805066e+02 -3.454157e-01 0 0 1 4.981016e-03",
        "R0_rect: 9.999128e-01 1.009263e-02 -8.511932e-03 -1.012729e-02 9.999406e-01 -4.037671e-03 "
        "8.470675e-03 4.123522e-03 9.999556e-01",
        "Tr_velo_to_cam: 6.927964e-03 -9.999722e-01 -2.757829e-03 -2.457729e-02 -1.162982e-03 2.749836e-03 "
        "-9.999955e-01 -6.127237e-02 9.999753e-01 6.931141e-03 -1.143899e-03 -3.321029e-01",
    ]
)
IMAGE_SHAPE = (375, 1242)
SIZES = {  # h, w, l
    "Car": (1.52, 1.63, 3.88),
    "Van": (2.2, 1.9, 5.1),
    "Truck": (3.2, 2.6, 10.0),
    "Pedestrian": (1.76, 0.66, 0.84),
    "Person_sitting": (1.27, 0.59, 0.8),
    "Cyclist": (1.74, 0.6, 1.76),
    "Misc": (1.9, 1.5, 3.0),
}


def _objects(rows: list[dict], scores: list[float] | None = None) -> KittiObjects:
    """Objects from rows ``{name, bbox, box (camera x y z l h w ry), truncated, occluded, alpha}``."""
    if not rows:
        return KittiObjects.empty(with_score=scores is not None)
    boxes = np.array([r["box"] for r in rows], dtype=np.float64).reshape(-1, 7)
    return KittiObjects(
        name=[r["name"] for r in rows],
        truncated=[r.get("truncated", 0.0) for r in rows],
        occluded=[r.get("occluded", 0) for r in rows],
        alpha=[r.get("alpha", a) for r, a in zip(rows, alpha_from_camera_boxes(boxes), strict=True)],
        bbox=[r["bbox"] for r in rows],
        dimensions=boxes[:, [4, 5, 3]],
        location=boxes[:, :3],
        rotation_y=boxes[:, 6],
        score=scores,
    )


def _row(name: str, x: float, z: float, ry: float = 0.0, **extra: object) -> dict:
    """An object on the ground (y = 1.65) with its 2D box projected with 000000's calibration."""
    h, w, l = SIZES[name]
    box = [x, 1.65, z, l, h, w, ry]
    bbox = box3d_to_2d_clipped(np.array([box]), CALIB, IMAGE_SHAPE)[0].tolist()
    return {"name": name, "box": box, "bbox": bbox, **extra}


def _dontcare(bbox: list[float]) -> dict:
    return {
        "name": "DontCare",
        "box": [-1000, -1000, -1000, -1, -1, -1, -10],
        "bbox": bbox,
        "truncated": -1,
        "occluded": -1,
        "alpha": -10,
    }


def _values(results: dict, cls: str, loose: bool = False) -> dict[str, list[float]]:
    res = results[cls]["loose"] if loose else results[cls]
    return {f"{m}/{k}": res[m][k] for m in ("bbox", "bev", "3d", "aos") for k in ("R40", "R11")}


def _perfect_frames(n: int, name: str = "Car", ry: float = 0.3) -> tuple[list, list]:
    """``n`` frames with one easy object each, detected exactly, scores 1 - i/1000."""
    gts, dts = [], []
    for i in range(n):
        row = _row(name, x=-2.0 + 0.05 * i, z=12.0 + 0.1 * i, ry=ry)
        gts.append(_objects([row]))
        dts.append(_objects([row], scores=[1.0 - i / 1000]))
    return gts, dts


# ------------------------------------------------------------------------------------ AP sampling


def test_recall_thresholds_rule():
    # Fewer counted objects than steps: every true positive becomes a threshold.
    np.testing.assert_array_equal(recall_thresholds(np.array([0.5, 0.9, 0.7]), 4), [0.9, 0.7, 0.5])
    # 80 counted: the steps are 1/40 apart, every other recall 1/80: scores 0, 1, 3, 5, ..., 77, 79 kept.
    scores = 1.0 - np.arange(80) / 100
    kept = recall_thresholds(scores[::-1].copy(), 80)
    expected_idx = [0] + [2 * k - 1 for k in range(1, 40)] + [79]
    np.testing.assert_allclose(kept, scores[expected_idx])
    assert len(kept) == N_SAMPLE_PTS
    assert recall_thresholds(np.zeros(0), 10).shape == (0,)


def test_ap_sampling():
    p = np.zeros(41)
    p[:3] = [1.0, 2 / 3, 0.6]
    assert ap_r40(p) == pytest.approx(2.5 * (2 / 3 + 0.6))
    assert ap_r11(p) == pytest.approx(100 / 11)
    assert ap_r40(np.ones(41)) == pytest.approx(100.0) and ap_r11(np.ones(41)) == pytest.approx(100.0)


# ------------------------------------------------------------------------ ground truth as results


def test_ground_truth_as_predictions_gives_100_everywhere():
    rng = np.random.default_rng(0)
    gts, dts = [], []
    score = 1.0
    for name in ("Car", "Pedestrian", "Cyclist"):
        for i in range(75):
            # 50 easy objects, then moderate-only (occluded 1 or truncated 0.2) and hard-only ones.
            extra = {}
            if 50 <= i < 65:
                extra = {"occluded": 1} if i % 2 else {"truncated": 0.2}
            elif i >= 65:
                extra = {"occluded": 2} if i % 2 else {"truncated": 0.45}
            ry = float(rng.uniform(-np.pi, np.pi))
            rows = [_row(name, x=float(rng.uniform(-4, -2)), z=float(rng.uniform(8, 16)), ry=ry, **extra)]
            # Neighbours that must not disturb: a Van / Person_sitting / Truck / Misc, a far small car
            # (ignored everywhere) and a DontCare region, all on the other side of the image.
            other = ("Van", "Person_sitting", "Truck", "Misc")[i % 4]
            rows.append(_row(other, x=float(rng.uniform(4, 6)), z=float(rng.uniform(10, 20)), ry=ry))
            rows.append(_row("Car", x=20.0, z=60.0, ry=ry))
            gt = _objects([*rows, _dontcare([1100.0, 150.0, 1200.0, 200.0])])
            gts.append(gt)
            dt_scores = [score - 0.001 * k for k in range(3)]
            score -= 0.004
            dts.append(_objects(rows, scores=dt_scores))
    assert len({s for d in dts for s in d.score}) == sum(len(d) for d in dts)  # distinct scores
    results = evaluate_kitti(gts, dts)
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for loose in (False, True):
            for key, vals in _values(results, cls, loose).items():
                np.testing.assert_allclose(vals, [100.0] * 3, atol=1e-9, err_msg=f"{cls} {key} loose={loose}")
    assert results["Car"]["3d"]["iou"] == 0.7 and results["Car"]["loose"]["3d"]["iou"] == 0.5
    assert results["Pedestrian"]["loose"]["bev"]["iou"] == 0.25


def test_aos_follows_alpha():
    gts, dts = _perfect_frames(50)
    for d in dts:
        d.alpha = d.alpha + np.pi / 2  # half the similarity: (1 + cos(pi/2)) / 2
    res = evaluate_kitti(gts, dts, classes=("Car",))["Car"]
    np.testing.assert_allclose(res["3d"]["R40"], [100.0] * 3)
    np.testing.assert_allclose(res["aos"]["R40"], [50.0] * 3, atol=1e-9)
    for d in dts:
        d.alpha[:] = -10.0  # no alpha: no AOS
    assert evaluate_kitti(gts, dts, classes=("Car",))["Car"]["aos"] is None


# ------------------------------------------------------------------------- hand-computed curves


def _car_row(k: int, bbox_x: float) -> dict:
    return {
        "name": "Car",
        "box": [-8.0 + 4.0 * k, 1.65, 20.0, 3.9, 1.5, 1.6, 0.0],
        "bbox": [bbox_x, 150.0, bbox_x + 60.0, 250.0],  # 100 px tall: easy
    }


def test_hand_computed_small_case():
    # One frame, 4 counted cars; detections by score: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 TP; one car missed.
    cars = [_car_row(k, 100.0 + 200.0 * k) for k in range(4)]
    fp = [_car_row(k, 100.0 + 200.0 * k) for k in (5, 6)]  # other place, other pixels: no overlap
    gt = _objects(cars)
    dt = _objects([cars[0], fp[0], cars[1], fp[1], cars[2]], scores=[0.9, 0.8, 0.7, 0.6, 0.5])
    res = evaluate_kitti([gt], [dt], classes=("Car",))["Car"]
    # n_gt = 4 < 41, so each of the 3 TP scores is a threshold (recalls 1/4, 2/4, 3/4):
    #   t=0.9: TP 1, FP 0 -> 1;  t=0.7: TP 2, FP 1 -> 2/3;  t=0.5: TP 3, FP 2 -> 3/5; slots 3..40 = 0.
    # Monotone already. R40 = 100/40 * (2/3 + 3/5) = 3.1667 (slot 0 excluded); R11 = 100/11 * 1 (slot 0).
    r40 = 2.5 * (2 / 3 + 3 / 5)
    r11 = 100 / 11
    for metric in ("bbox", "bev", "3d", "aos"):
        np.testing.assert_allclose(res[metric]["R40"], [r40] * 3, atol=1e-9, err_msg=metric)
        np.testing.assert_allclose(res[metric]["R11"], [r11] * 3, atol=1e-9, err_msg=metric)


def test_hand_computed_case_with_recall_sampling():
    # 80 counted cars (one per frame), all detected (scores 0.99, 0.98, ..., 0.20) plus one false positive
    # scored 0.595, between the 40th and the 41st true positive.
    gts, dts = [], []
    for i in range(80):
        car = _car_row(0, 300.0)
        gts.append(_objects([car]))
        rows, scores = [car], [0.99 - 0.01 * i]
        if i == 0:
            rows.append(_car_row(3, 900.0))
            scores.append(0.595)
        dts.append(_objects(rows, scores=scores))
    res = evaluate_kitti(gts, dts, classes=("Car",))["Car"]
    # Thresholds (see test_recall_thresholds_rule): slot 0 = 1st TP, slot s = the (2s)-th TP (s = 1..39),
    # slot 40 = the 80th. Precision: 1 up to 40 TPs, i.e. slots 0..20; 2s / (2s + 1) for s = 21..39;
    # 80/81 at slot 40. Made monotone (max over the later slots): slots 21..40 all become 80/81.
    #   R40 = 100/40 * (20 * 1 + 20 * 80/81) = 99.3827
    #   R11 = 100/11 * (slots 0,4,..,20: 6 * 1 + slots 24,..,40: 5 * 80/81) = 99.4388
    r40 = 2.5 * (20 + 20 * 80 / 81)
    r11 = 100 / 11 * (6 + 5 * 80 / 81)
    assert r40 == pytest.approx(99.3827, abs=1e-4) and r11 == pytest.approx(99.4388, abs=1e-4)
    for metric in ("bbox", "bev", "3d", "aos"):
        np.testing.assert_allclose(res[metric]["R40"], [r40] * 3, atol=1e-9, err_msg=metric)
        np.testing.assert_allclose(res[metric]["R11"], [r11] * 3, atol=1e-9, err_msg=metric)


def test_few_ground_truths_cap_r40():
    # 10 counted cars detected perfectly: only 10 thresholds exist, slots 0..9 have precision 1 and the
    # rest 0, so R40 = 9/40 = 22.5 and R11 = 3/11 (slots 0, 4, 8), whatever the detector.
    gts, dts = _perfect_frames(10)
    res = evaluate_kitti(gts, dts, classes=("Car",))["Car"]
    np.testing.assert_allclose(res["3d"]["R40"], [22.5] * 3)
    np.testing.assert_allclose(res["3d"]["R11"], [300 / 11] * 3)


# ------------------------------------------------------------------------------ matching rules


def _shifted_frames(dx: float = 0.0, dy: float = 0.0) -> tuple[list, list]:
    """50 cars (l = 4, w = 1.6, h = 1.5, ry = 0) and detections moved by ``dx`` along their length
    and ``dy`` down; the 2D box is kept, so only BEV/3D change."""
    gts, dts = [], []
    for i in range(50):
        car = {"name": "Car", "box": [1.0, 1.6, 15.0 + 0.2 * i, 4.0, 1.5, 1.6, 0.0], "bbox": [500, 150, 700, 250]}
        moved = dict(car, box=[1.0 + dx, 1.6 + dy, 15.0 + 0.2 * i, 4.0, 1.5, 1.6, 0.0])
        gts.append(_objects([car]))
        dts.append(_objects([moved], scores=[1.0 - 0.01 * i]))
    return gts, dts


@pytest.mark.parametrize(
    ("dx", "dy", "bev", "d3"),
    [
        (0.700, 0.0, 100.0, 100.0),  # IoU (4 - 0.7) / (4 + 0.7) = 0.7021 > 0.7: TP
        (0.712, 0.0, 0.0, 0.0),  # IoU (4 - 0.712) / (4 + 0.712) = 0.6978: FP (and the car a FN)
        (0.0, 0.26, 100.0, 100.0),  # height overlap (1.5 - 0.26) / (1.5 + 0.26) = 0.7045: TP
        (0.0, 0.27, 100.0, 0.0),  # (1.5 - 0.27) / (1.5 + 0.27) = 0.6949: BEV still TP, 3D FP
    ],
)
def test_iou_threshold_flips_tp_to_fp(dx: float, dy: float, bev: float, d3: float):
    gts, dts = _shifted_frames(dx, dy)
    gt_box, dt_box = gts[0].camera_boxes(), dts[0].camera_boxes()
    assert (bev_iou_camera(dt_box, gt_box)[0, 0] > 0.7) == (bev > 0)
    assert (iou3d_camera(dt_box, gt_box)[0, 0] > 0.7) == (d3 > 0)
    res = evaluate_kitti(gts, dts, classes=("Car",))["Car"]
    np.testing.assert_allclose(res["bbox"]["R40"], [100.0] * 3)
    np.testing.assert_allclose(res["bev"]["R40"], [bev] * 3)
    np.testing.assert_allclose(res["3d"]["R40"], [d3] * 3)
    np.testing.assert_allclose(res["loose"]["3d"]["R40"], [100.0] * 3)  # all above 0.5


def _with_extra(extra_gt: list[dict], extra_dt: list[dict], score: float = 2.0) -> dict:
    """Evaluate 50 perfectly detected cars plus extra objects in the first frame (the extra detections
    get the top score, so a false positive among them costs precision at every recall)."""
    gts, dts = _perfect_frames(50, ry=0.0)
    first_gt, first_dt = gts[0], dts[0]
    rows_gt = [
        {"name": str(first_gt.name[0]), "box": first_gt.camera_boxes()[0].tolist(), "bbox": first_gt.bbox[0].tolist()}
    ]
    gts[0] = _objects(rows_gt + extra_gt)
    dts[0] = _objects(rows_gt + extra_dt, scores=[float(first_dt.score[0])] + [score] * len(extra_dt))
    return evaluate_kitti(gts, dts, classes=("Car",))["Car"]


def test_small_2d_boxes_are_ignored_even_for_bev_and_3d():
    far = {"name": "Car", "box": [-6.0, 1.65, 30.0, 3.9, 1.5, 1.6, 0.0], "bbox": [100.0, 180.0, 140.0, 200.0]}
    res = _with_extra([], [far])  # a 20 px tall false positive with the top score: ignored everywhere
    for metric in ("bbox", "bev", "3d"):
        np.testing.assert_allclose(res[metric]["R40"], [100.0] * 3, err_msg=metric)
    mid = dict(far, bbox=[100.0, 170.0, 140.0, 200.0])  # 30 px: ignored for easy (< 40), FP otherwise
    res = _with_extra([], [mid])
    for metric in ("bbox", "bev", "3d"):
        assert res[metric]["R40"][0] == pytest.approx(100.0)
        assert res[metric]["R40"][1] < 99.0 and res[metric]["R40"][2] < 99.0

    # Perfect 3D boxes with implausible 2D boxes (< 25 px) give no true positive at all.
    gts, dts = _perfect_frames(50)
    for d in dts:
        d.bbox[:, 3] = d.bbox[:, 1] + 20.0
    res = evaluate_kitti(gts, dts, classes=("Car",))["Car"]
    for metric in ("bev", "3d"):
        np.testing.assert_allclose(res[metric]["R40"], [0.0] * 3)


def test_dontcare_masks_false_positives_for_2d_only():
    fp = {"name": "Car", "box": [-6.0, 1.65, 25.0, 3.9, 1.5, 1.6, 0.0], "bbox": [100.0, 150.0, 160.0, 250.0]}
    inside = _dontcare([90.0, 140.0, 170.0, 260.0])
    res = _with_extra([inside], [fp])
    np.testing.assert_allclose(res["bbox"]["R40"], [100.0] * 3)
    for metric in ("bev", "3d"):
        assert max(res[metric]["R40"]) < 99.0
    # A DontCare region covering only part of the detection (below the 0.7 threshold) does not mask it.
    partial = _dontcare([130.0, 140.0, 170.0, 260.0])  # covers 30 of 60 px
    res = _with_extra([partial], [fp])
    assert max(res["bbox"]["R40"]) < 99.0


def test_van_absorbs_car_detections_but_truck_does_not():
    van = _row("Van", x=-6.0, z=20.0)
    det_on_van = dict(van, name="Car")
    res = _with_extra([van], [det_on_van])
    for metric in ("bbox", "bev", "3d"):
        np.testing.assert_allclose(res[metric]["R40"], [100.0] * 3, err_msg=metric)
    truck = _row("Truck", x=-6.0, z=20.0)
    res = _with_extra([truck], [dict(truck, name="Car")])
    for metric in ("bbox", "bev", "3d"):
        assert max(res[metric]["R40"]) < 99.0


def test_person_sitting_is_ignored_for_pedestrians():
    gts, dts = _perfect_frames(45, name="Pedestrian")
    sitting = _row("Person_sitting", x=-5.0, z=10.0)
    gts[0] = _objects(
        [{"name": "Pedestrian", "box": gts[0].camera_boxes()[0].tolist(), "bbox": gts[0].bbox[0].tolist()}, sitting]
    )
    dts[0] = _objects(
        [{"name": "Pedestrian", "box": gts[0].camera_boxes()[0].tolist(), "bbox": gts[0].bbox[0].tolist()}]
        + [dict(sitting, name="Pedestrian")],
        scores=[float(dts[0].score[0]), 5.0],
    )
    res = evaluate_kitti(gts, dts, classes=("Pedestrian",))["Pedestrian"]
    np.testing.assert_allclose(res["3d"]["R40"], [100.0] * 3)


def test_missing_detections_lower_recall():
    gts, dts = _perfect_frames(80)
    for i in range(40, 80):
        dts[i] = KittiObjects.empty(with_score=True)
    res = evaluate_kitti(gts, dts, classes=("Car",))["Car"]
    # Recall reaches 1/2: precision 1 up to slot 20, then 0. R40 = 20/40, R11 = 6/11.
    np.testing.assert_allclose(res["3d"]["R40"], [50.0] * 3)
    np.testing.assert_allclose(res["3d"]["R11"], [600 / 11] * 3)


# ---------------------------------------------------- cross-check against a per-object loop reference


def _loop_reference(gts: list, dts: list, cls: str, diff: int, metric: int, thr: float) -> np.ndarray:
    """The devkit rules written as plain loops over frames, ground truths and detections (slow)."""
    name = cls.lower()
    neighbour = {"car": "van", "pedestrian": "person_sitting"}.get(name)
    frames = []
    n_gt = 0
    for gt, dt in zip(gts, dts, strict=True):
        ig, idt = [], []
        for i in range(len(gt)):
            g = gt.name[i].lower()
            valid = 1 if g == name else 0 if g == neighbour else -1
            ignore = (
                gt.occluded[i] > MAX_OCCLUSION[diff]
                or gt.truncated[i] > MAX_TRUNCATION[diff]
                or gt.bbox[i, 3] - gt.bbox[i, 1] <= MIN_HEIGHT[diff]
            )
            ig.append(0 if valid == 1 and not ignore else 1 if valid == 0 or valid == 1 else -1)
            n_gt += ig[-1] == 0
        for j in range(len(dt)):
            small = abs(dt.bbox[j, 3] - dt.bbox[j, 1]) < MIN_HEIGHT[diff]
            idt.append(1 if small else 0 if dt.name[j].lower() == name else -1)
        keep = [i for i in range(len(gt)) if gt.name[i] != "DontCare"]
        ov = np.zeros((len(dt), len(gt)))
        if len(dt) and keep:
            fn = (box_iou_2d, bev_iou_camera, iou3d_camera)[metric]
            a, b = (dt.bbox, gt.bbox[keep]) if metric == 0 else (dt.camera_boxes(), gt.camera_boxes()[keep])
            ov[:, keep] = fn(a, b)
        dc = gt.bbox[gt.name == "DontCare"]
        frames.append((gt, dt, ig, idt, ov, dc))

    def match(frame: tuple, thresh: float, pr: bool) -> tuple[int, int, list[float]]:
        gt, dt, ig, idt, ov, dc = frame
        assigned = [False] * len(dt)
        live = [(not pr) or dt.score[j] >= thresh for j in range(len(dt))]
        tp, tps = 0, []
        for i in range(len(gt)):
            if ig[i] == -1:
                continue
            best, best_key, best_is_ignored = -1, None, False
            for j in range(len(dt)):
                if idt[j] == -1 or assigned[j] or not live[j] or not ov[j, i] > thr:
                    continue
                if not pr:
                    if best_key is None or dt.score[j] > best_key:
                        best, best_key = j, dt.score[j]
                elif idt[j] == 0 and (best_key is None or best_is_ignored or ov[j, i] > best_key):
                    best, best_key, best_is_ignored = j, ov[j, i], False
                elif idt[j] == 1 and best_key is None:
                    best, best_key, best_is_ignored = j, 0.0, True
            if best >= 0:
                assigned[best] = True
                if ig[i] == 0 and idt[best] == 0:
                    tp += 1
                    tps.append(float(dt.score[best]))
        fp = 0
        for j in range(len(dt)):
            if assigned[j] or idt[j] != 0 or not live[j]:
                continue
            if metric == 0 and len(dc) and box_iou_2d(dt.bbox[j : j + 1], dc, criterion="a").max() > thr:
                continue
            fp += 1
        return tp, fp, tps

    precision = np.zeros(N_SAMPLE_PTS)
    if n_gt == 0:
        return precision
    scores = [s for f in frames for s in match(f, 0.0, False)[2]]
    for k, t in enumerate(recall_thresholds(np.array(scores), n_gt)):
        tp = fp = 0
        for f in frames:
            a, b, _ = match(f, t, True)
            tp, fp = tp + a, fp + b
        precision[k] = tp / (tp + fp) if tp + fp else 0.0
    return np.maximum.accumulate(precision[::-1])[::-1]


def _random_scenes(rng: np.random.Generator, n_frames: int, ties: bool) -> tuple[list, list]:
    names = list(SIZES)
    gts, dts = [], []
    for _ in range(n_frames):
        rows = []
        for _ in range(int(rng.integers(0, 9))):
            rows.append(
                _row(
                    str(rng.choice(names, p=[0.4, 0.08, 0.04, 0.2, 0.06, 0.16, 0.06])),
                    x=float(rng.uniform(-10, 10)),
                    z=float(rng.uniform(6, 45)),
                    ry=float(rng.uniform(-np.pi, np.pi)),
                    truncated=float(rng.choice([0.0, 0.0, 0.1, 0.25, 0.4, 0.7])),
                    occluded=int(rng.choice([0, 0, 1, 2, 3])),
                )
            )
        dets = []
        for r in rows:
            if rng.uniform() < 0.15:
                continue
            box = np.array(r["box"]) + np.concatenate([rng.normal(0, [0.12, 0.08, 0.15]), [0, 0, 0], [0]])
            box[3:6] *= rng.uniform(0.95, 1.05, 3)
            box[6] += rng.normal(0, 0.05)
            name = r["name"] if rng.uniform() > 0.1 else str(rng.choice(["Car", "Pedestrian", "Cyclist"]))
            bbox = (np.array(r["bbox"]) + rng.normal(0, 1.5, 4)).tolist()
            dets.append({"name": name, "box": box.tolist(), "bbox": bbox})
        for _ in range(int(rng.integers(0, 4))):
            dets.append(_row(str(rng.choice(["Car", "Pedestrian", "Cyclist"])), float(rng.uniform(-10, 10)), 20.0))
        if rng.uniform() < 0.5:
            x1, y1 = rng.uniform(0, 1100), rng.uniform(120, 220)
            rows.append(_dontcare([x1, y1, x1 + rng.uniform(20, 140), y1 + rng.uniform(15, 80)]))
        scores = rng.integers(0, 6, len(dets)) / 6 if ties else rng.uniform(size=len(dets))
        gts.append(_objects(rows))
        dts.append(_objects(dets, scores=list(scores)))
    return gts, dts


@pytest.mark.parametrize("ties", [False, True])
def test_matches_loop_reference_on_random_scenes(ties: bool):
    gts, dts = _random_scenes(np.random.default_rng(7 + ties), 30, ties)
    results = evaluate_kitti(gts, dts)
    checked = 0
    for cls in ("Car", "Pedestrian"):
        for m, metric in enumerate(("bbox", "bev", "3d")):
            for diff in range(3):
                for table, res in ((STRICT_IOU, results[cls]), (LOOSE_IOU, results[cls]["loose"])):
                    if table is LOOSE_IOU and metric == "bbox":
                        continue
                    ref = _loop_reference(gts, dts, cls, diff, m, table[cls][m])
                    assert res[metric]["R40"][diff] == pytest.approx(ap_r40(ref), abs=1e-9)
                    assert res[metric]["R11"][diff] == pytest.approx(ap_r11(ref), abs=1e-9)
                    checked += ref.max() > 0
    assert checked > 20  # the scenes produce non-trivial curves


def test_empty_inputs_give_zero():
    gts, _ = _perfect_frames(5)
    no_dets = [KittiObjects.empty(with_score=True) for _ in gts]
    for g, d in ((gts, no_dets), ([], []), ([KittiObjects.empty()] * 5, _perfect_frames(5)[1])):
        res = evaluate_kitti(g, d, classes=("Car",))["Car"]
        assert res["3d"]["R40"] == [0.0, 0.0, 0.0] and res["bbox"]["R11"] == [0.0, 0.0, 0.0]
    assert "loose" not in evaluate_kitti(gts, no_dets, loose=False)["Car"]


def test_validation_sized_input_is_fast():
    gts, dts = _random_scenes(np.random.default_rng(3), 400, ties=False)
    # Plus 20 scattered low-score false positives per frame, as a real detector emits.
    xs, zs = np.linspace(-15, 15, 20), np.linspace(8, 60, 20)
    fp = _objects([_row("Car", x=float(x), z=float(z)) for x, z in zip(xs, zs, strict=True)], scores=[0.05] * 20)
    fields = ("name", "truncated", "occluded", "alpha", "bbox", "dimensions", "location", "rotation_y", "score")
    for d in dts:
        for field in fields:
            setattr(d, field, np.concatenate([getattr(d, field), getattr(fp, field)]))
    start = time.perf_counter()
    evaluate_kitti(gts, dts)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"{len(gts)} frames took {elapsed:.1f} s"


def test_input_validation():
    gts, dts = _perfect_frames(2)
    with pytest.raises(ValueError, match="unknown class 'Bus'"):
        evaluate_kitti(gts, dts, classes=("Bus",))
    with pytest.raises(ValueError, match="2 ground-truth frames but 1"):
        evaluate_kitti(gts, dts[:1])
    dts[1].score = None
    with pytest.raises(ValueError, match="no scores"):
        evaluate_kitti(gts, dts)


def test_annotation_dicts_are_accepted():
    gts, dts = _perfect_frames(45)

    def annos(o: KittiObjects) -> dict:
        return {
            "name": o.name,
            "truncated": o.truncated,
            "occluded": o.occluded,
            "alpha": o.alpha,
            "bbox": o.bbox,
            "dimensions": o.dimensions[:, [2, 0, 1]],  # l, h, w as in OpenPCDet infos
            "location": o.location,
            "rotation_y": o.rotation_y,
            "score": o.score,
        }

    res = evaluate_kitti([annos(g) for g in gts], [annos(d) for d in dts], classes=("Car",))
    np.testing.assert_allclose(res["Car"]["3d"]["R40"], [100.0] * 3)


def test_table_format():
    gts, dts = _perfect_frames(45)
    table = format_kitti_table(evaluate_kitti(gts, dts, classes=("Car",)))
    lines = table.splitlines()
    assert lines[:5] == [
        "Car AP@0.70, 0.70, 0.70:",
        "bbox AP:100.0000, 100.0000, 100.0000",
        "bev  AP:100.0000, 100.0000, 100.0000",
        "3d   AP:100.0000, 100.0000, 100.0000",
        "aos  AP:100.00, 100.00, 100.00",
    ]
    assert "Car AP_R40@0.70, 0.70, 0.70:" in lines and "Car AP_R40@0.70, 0.50, 0.50:" in lines


# ------------------------------------------------------------------------------------------ CLI


def _write_split(root: Path, n: int) -> tuple[Path, Path]:
    labels, results = root / "label_2", root / "results"
    labels.mkdir()
    results.mkdir()
    gts, dts = _perfect_frames(n)
    for i, (gt, dt) in enumerate(zip(gts, dts, strict=True)):
        # Two decimals, as in the files: round the geometry so that labels and results stay identical.
        for o in (gt, dt):
            for field in ("alpha", "bbox", "dimensions", "location", "rotation_y"):
                setattr(o, field, np.round(getattr(o, field), 2))
        write_label(labels / f"{i:06d}.txt", gt)
        write_label(results / f"{i:06d}.txt", dt)
    return labels, results


def test_cli_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    labels, results = _write_split(tmp_path, 60)
    assert main([str(labels), str(results), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out["Car"]["3d"]["R40"], [100.0] * 3)
    assert out["Pedestrian"]["3d"]["R40"] == [0.0, 0.0, 0.0]  # no pedestrians at all
    assert main([str(labels), str(results)]) == 0
    assert "Car AP_R40@0.70, 0.70, 0.70:" in capsys.readouterr().out

    # A missing result file means no detections for that frame; --ids picks the frames.
    (results / "000000.txt").unlink()
    ids = tmp_path / "val.txt"
    ids.write_text("\n".join(f"{i:06d}" for i in range(50)))
    assert main([str(labels), str(results), "--ids", str(ids), "--json", "--classes", "Car"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"Car"}
    # 49 of 50 found (the best-scored car is missed): thresholds at recalls 1/50 .. 49/50.
    assert 90.0 < out["Car"]["3d"]["R40"][1] < 100.0
    assert read_label(labels / "000001.txt").name.tolist() == ["Car"]


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    labels, results = _write_split(tmp_path, 3)
    bad = results / "000001.txt"
    bad.write_text(bad.read_text() + "Car 0 0 0 1 2 3 4 5 6 7 8 9 10 11\n")  # 15 fields, no score
    assert main([str(labels), str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}:2: expected 16 fields, got 15"
    bad.unlink()
    ids = tmp_path / "ids.txt"
    ids.write_text("000000\n000009\n")
    assert main([str(labels), str(results), "--ids", str(ids)]) == 2
    assert "000009.txt: label file not found" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), str(results)]) == 2
    assert main([str(labels), str(results), "--classes", "Bus"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_kitti_eval_is_an_hrnas_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from hrnas.cli import main as hrnas_main

    labels, results = _write_split(tmp_path, 5)
    assert hrnas_main(["kitti-eval", str(labels), str(results), "--json", "--classes", "Car"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"Car"} and out["Car"]["3d"]["R40"][1] > 0
