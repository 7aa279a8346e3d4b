"""The official KITTI 3D object detection evaluation (2D bbox, BEV, 3D and AOS; AP R11 and R40), on CPU.

Follows the KITTI devkit ``evaluate_object.cpp`` as ported to Python in ``kitti_object_eval_python``
(the evaluator of SECOND, OpenPCDet and mmdet3d), rule for rule:

* **Difficulties** (cumulative): easy / moderate / hard = 2D box height > 40 / 25 / 25 px, occlusion
  <= 0 / 1 / 2, truncation <= 0.15 / 0.30 / 0.50.
* **Ground truth**: an object of the evaluated class is *counted* when it passes the difficulty, else
  *ignored* (may absorb a detection, never a false negative); Van is ignored for Car and
  Person_sitting for Pedestrian; all other types are skipped. DontCare boxes are DontCare regions.
* **Detections**: a detection whose 2D box is lower than the difficulty's minimum height (strict ``<``) is
  ignored, whatever its class and metric; otherwise detections of other classes are skipped.
* **Matching**, per frame, ground truths in file order, greedy: an overlap must be strictly greater than
  the threshold. The recall thresholds come from a pass that takes the highest-scoring detection per
  ground truth; the precision pass takes, at each score threshold, the unassigned detection of largest
  overlap (ignored detections only when no other matches). For the 2D metric, unmatched detections
  covering a DontCare region by more than the threshold (intersection over detection area) are not false
  positives.
* **AP**: score thresholds are picked from the true positives at 41 recall steps (``recall_thresholds``);
  precision is made monotone (suffix maximum), unfilled slots stay 0; R11 averages slots 0, 4, ..., 40 and
  R40 slots 1..40. AOS uses the 2D matching and ``(1 + cos(alpha_gt - alpha_det)) / 2`` per true positive,
  and is only computed when detections carry an alpha (the first detection of the first non-empty frame
  is not -10).

Unlike the public Python port, the rotated BEV/3D IoUs are exact in float64 (:mod:`hrnas.tasks.kitti.iou`),
so a detection identical to its ground truth has IoU 1 (the port gets about 0 for rotated boxes). One
further difference: a score threshold at which every detection is absorbed by ignored ground truth gives
precision 0 instead of NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrnas.tasks.kitti.formats import KittiObjects
from hrnas.tasks.kitti.iou import bev_iou_camera_pairs, box_iou_2d_pairs, iou3d_camera_pairs

__all__ = [
    "CLASS_NAMES",
    "DIFFICULTIES",
    "LOOSE_IOU",
    "MAX_OCCLUSION",
    "MAX_TRUNCATION",
    "METRICS",
    "MIN_HEIGHT",
    "N_SAMPLE_PTS",
    "STRICT_IOU",
    "ap_r11",
    "ap_r40",
    "evaluate_kitti",
    "format_kitti_table",
    "recall_thresholds",
]

CLASS_NAMES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist", "Van", "Person_sitting", "Truck")
"""Classes the evaluation knows (those of the Python port); the benchmark uses the first three."""
DIFFICULTIES: tuple[str, ...] = ("easy", "moderate", "hard")
METRICS: tuple[str, ...] = ("bbox", "bev", "3d")
MIN_HEIGHT: tuple[float, ...] = (40.0, 25.0, 25.0)
"""Minimum 2D box height in pixels per difficulty."""
MAX_OCCLUSION: tuple[int, ...] = (0, 1, 2)
MAX_TRUNCATION: tuple[float, ...] = (0.15, 0.3, 0.5)
N_SAMPLE_PTS = 41

STRICT_IOU: dict[str, tuple[float, float, float]] = {
    "Car": (0.7, 0.7, 0.7),
    "Pedestrian": (0.5, 0.5, 0.5),
    "Cyclist": (0.5, 0.5, 0.5),
    "Van": (0.7, 0.7, 0.7),
    "Person_sitting": (0.5, 0.5, 0.5),
    "Truck": (0.7, 0.7, 0.7),
}
"""Official IoU thresholds ``(bbox, bev, 3d)`` per class."""
LOOSE_IOU: dict[str, tuple[float, float, float]] = {
    "Car": (0.7, 0.5, 0.5),
    "Pedestrian": (0.5, 0.25, 0.25),
    "Cyclist": (0.5, 0.25, 0.25),
    "Van": (0.7, 0.5, 0.5),
    "Person_sitting": (0.5, 0.25, 0.25),
    "Truck": (0.5, 0.5, 0.5),
}
"""The second ("loose") threshold set ``(bbox, bev, 3d)`` printed by the Python port."""

_NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
_FRAME_BLOCK = 512  # frames matched at once (bounds the (frames, thresholds, detections) arrays)
_PAIR_CHUNK = 1 << 20  # detection/ground-truth pairs whose IoUs are computed at once


# --------------------------------------------------------------------------------------------------
# AP from precision samples
# --------------------------------------------------------------------------------------------------


def recall_thresholds(scores: np.ndarray, num_gt: int, num_sample_pts: int = N_SAMPLE_PTS) -> np.ndarray:
    """Score thresholds at (about) evenly spaced recall steps (devkit ``getThresholds``).

    Args:
        scores: ``(K,)`` scores of the true positives of the highest-score matching pass.
        num_gt: number of counted ground truths (``> 0`` when ``scores`` is not empty).

    Returns:
        Descending thresholds, at most ``num_sample_pts``: walking the sorted scores, score ``i`` is kept
        when its recall ``(i + 1) / num_gt`` is the nearest to the next recall step (or it is the last),
        and each kept score moves the step on by ``1 / (num_sample_pts - 1)``.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))[::-1]
    kept: list[float] = []
    current = 0.0
    n = s.shape[0]
    for i in range(n):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < n - 1:
            continue
        kept.append(float(s[i]))
        current += 1.0 / (num_sample_pts - 1.0)
    return np.asarray(kept[:num_sample_pts], dtype=np.float64)


def ap_r11(precision: np.ndarray) -> float:
    """AP in percent from the 41 monotone precision samples: mean of slots 0, 4, ..., 40."""
    p = np.asarray(precision, dtype=np.float64)
    return float(p[0::4].sum() / 11.0 * 100.0)


def ap_r40(precision: np.ndarray) -> float:
    """AP in percent from the 41 monotone precision samples: mean of slots 1..40 (slot 0 excluded)."""
    p = np.asarray(precision, dtype=np.float64)
    return float(p[1:].sum() / 40.0 * 100.0)


# --------------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------------


@dataclass
class _Flat:
    """All objects of all frames, concatenated in frame then file order."""

    frame: np.ndarray  # (n,) int64
    name: np.ndarray  # (n,) lower-case str
    raw_name: np.ndarray  # (n,) str as in the file
    bbox: np.ndarray  # (n, 4)
    alpha: np.ndarray  # (n,)
    boxes: np.ndarray  # (n, 7) camera [x, y, z, l, h, w, ry]
    truncated: np.ndarray  # (n,)
    occluded: np.ndarray  # (n,)
    score: np.ndarray  # (n,); zeros for ground truth


def _as_objects(item: KittiObjects | Mapping[str, Any], what: str, index: int) -> KittiObjects:
    if isinstance(item, KittiObjects):
        return item
    if isinstance(item, Mapping):
        return KittiObjects.from_annos(item)
    raise TypeError(f"{what}[{index}] must be KittiObjects or an annotation dict, got {type(item).__name__}")


def _flatten(frames: Sequence[KittiObjects], need_score: bool, what: str) -> _Flat:
    if need_score:
        for i, f in enumerate(frames):
            if f.score is None and len(f) > 0:
                raise ValueError(f"{what}[{i}] has no scores; detections need one per object")
    counts = [len(f) for f in frames]
    frame = np.repeat(np.arange(len(frames), dtype=np.int64), counts)

    def cat(get: Any, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        parts = [np.asarray(get(f), dtype=dtype).reshape(-1, *shape) for f in frames if len(f)]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, *shape), dtype=dtype)

    raw = cat(lambda f: f.name, (), np.str_) if any(counts) else np.zeros(0, dtype=np.str_)
    return _Flat(
        frame=frame,
        name=np.char.lower(raw.astype(np.str_)),
        raw_name=raw,
        bbox=cat(lambda f: f.bbox, (4,)),
        alpha=cat(lambda f: f.alpha, ()),
        boxes=cat(lambda f: f.camera_boxes(), (7,)),
        truncated=cat(lambda f: f.truncated, ()),
        occluded=cat(lambda f: f.occluded, ()),
        score=cat(lambda f: f.score if f.score is not None else np.zeros(len(f)), ()),
    )


def _frame_pairs(frame_a: np.ndarray, frame_b: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``frame_a[i] == frame_b[j]``; both inputs sorted by frame."""
    count_b = np.bincount(frame_b, minlength=n_frames)
    start_b = np.concatenate([[0], np.cumsum(count_b)[:-1]])
    reps = count_b[frame_a]
    total = int(reps.sum())
    ia = np.repeat(np.arange(frame_a.shape[0]), reps)
    block_start = np.cumsum(reps) - reps
    offset = np.arange(total) - np.repeat(block_start, reps)
    ib = start_b[frame_a[ia]] + offset
    return ia, ib


@dataclass
class _Pairs:
    """Detection/ground-truth pairs (same frame) with a positive overlap under one metric."""

    det: np.ndarray  # (P,) global detection index
    gt: np.ndarray  # (P,) global ground-truth index
    iou: np.ndarray  # (P,)


def _overlaps(gt: _Flat, dt: _Flat, gt_rows: np.ndarray, dt_rows: np.ndarray, n_frames: int) -> dict[str, _Pairs]:
    """Positive overlaps of every (detection, ground truth) pair of a frame for the three metrics."""
    ia, ib = _frame_pairs(dt.frame[dt_rows], gt.frame[gt_rows], n_frames)
    d_all, g_all = dt_rows[ia], gt_rows[ib]
    found: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {m: [] for m in METRICS}
    for start in range(0, d_all.shape[0], _PAIR_CHUNK):
        d = d_all[start : start + _PAIR_CHUNK]
        g = g_all[start : start + _PAIR_CHUNK]
        iou2d = box_iou_2d_pairs(dt.bbox[d], gt.bbox[g])
        keep = iou2d > 0
        found["bbox"].append((d[keep], g[keep], iou2d[keep]))
        # BEV and 3D only where the BEV circumscribed circles meet.
        bd, bg = dt.boxes[d], gt.boxes[g]
        dist2 = (bd[:, 0] - bg[:, 0]) ** 2 + (bd[:, 2] - bg[:, 2]) ** 2
        reach = 0.5 * (np.hypot(bd[:, 3], bd[:, 5]) + np.hypot(bg[:, 3], bg[:, 5]))
        near = np.flatnonzero(dist2 <= reach**2)
        d, g, bd, bg = d[near], g[near], bd[near], bg[near]
        bev = bev_iou_camera_pairs(bd, bg)
        keep = bev > 0
        found["bev"].append((d[keep], g[keep], bev[keep]))
        d3 = iou3d_camera_pairs(bd[keep], bg[keep])
        keep3 = d3 > 0
        found["3d"].append((d[keep][keep3], g[keep][keep3], d3[keep3]))
    out = {}
    for metric, parts in found.items():
        if parts:
            out[metric] = _Pairs(*(np.concatenate([p[k] for p in parts]) for k in range(3)))
        else:
            empty = np.zeros(0, dtype=np.int64)
            out[metric] = _Pairs(empty, empty, np.zeros(0))
    return out


def _dontcare_max(gt: _Flat, dt: _Flat, n_frames: int) -> np.ndarray:
    """``(n_dt,)`` largest DontCare coverage of each detection (intersection / detection area)."""
    out = np.zeros(dt.frame.shape[0])
    dc_rows = np.flatnonzero(gt.raw_name == "DontCare")
    if dc_rows.size == 0 or out.size == 0:
        return out
    ia, ib = _frame_pairs(dt.frame, gt.frame[dc_rows], n_frames)
    cover = box_iou_2d_pairs(dt.bbox[ia], gt.bbox[dc_rows[ib]], criterion="a")
    np.maximum.at(out, ia, cover)
    return out


# --------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------


@dataclass
class _Labels:
    """Per-object states of one (class, difficulty): -1 skipped, 0 counted/valid, 1 ignored."""

    gt_ign: np.ndarray
    det_ign: np.ndarray
    num_gt: int


def _labels(gt: _Flat, dt: _Flat, cls: str, difficulty: int) -> _Labels:
    name = cls.lower()
    neighbour = _NEIGHBOUR.get(name)
    valid = np.where(gt.name == name, 1, np.where(gt.name == neighbour, 0, -1))
    height = gt.bbox[:, 3] - gt.bbox[:, 1]
    ignore = (
        (gt.occluded > MAX_OCCLUSION[difficulty])
        | (gt.truncated > MAX_TRUNCATION[difficulty])
        | (height <= MIN_HEIGHT[difficulty])
    )
    gt_ign = np.full(valid.shape[0], -1, dtype=np.int64)
    gt_ign[(valid == 0) | ((valid == 1) & ignore)] = 1
    gt_ign[(valid == 1) & ~ignore] = 0
    det_height = np.abs(dt.bbox[:, 3] - dt.bbox[:, 1])
    det_ign = np.where(det_height < MIN_HEIGHT[difficulty], 1, np.where(dt.name == name, 0, -1))
    return _Labels(gt_ign=gt_ign, det_ign=det_ign.astype(np.int64), num_gt=int((gt_ign == 0).sum()))


@dataclass
class _Block:
    """Frames with candidate matches, padded to ``(F, G, D)`` (G ground truths, D detections)."""

    ov: np.ndarray  # (F, G, D) overlap, 0 where no candidate
    ok: np.ndarray  # (F, G, D) candidate (overlap above threshold, neither object skipped)
    gt_ign: np.ndarray  # (F, G), -1 for padding
    gt_alpha: np.ndarray  # (F, G)
    det_ign: np.ndarray  # (F, D), -1 for padding
    det_score: np.ndarray  # (F, D), -inf for padding
    det_alpha: np.ndarray  # (F, D)
    det_global: np.ndarray  # (F, D) global detection index, -1 for padding


def _blocks(pairs: _Pairs, thr: float, lab: _Labels, gt: _Flat, dt: _Flat) -> list[_Block]:
    sel = (pairs.iou > thr) & (lab.gt_ign[pairs.gt] != -1) & (lab.det_ign[pairs.det] != -1)
    pd, pg, v = pairs.det[sel], pairs.gt[sel], pairs.iou[sel]
    if pd.size == 0:
        return []
    ug, g_of_pair = np.unique(pg, return_inverse=True)
    ud, d_of_pair = np.unique(pd, return_inverse=True)
    frames, g_frame = np.unique(gt.frame[ug], return_inverse=True)
    d_frame = np.searchsorted(frames, dt.frame[ud])
    g_rank = np.arange(ug.shape[0]) - np.searchsorted(g_frame, g_frame, side="left")
    d_rank = np.arange(ud.shape[0]) - np.searchsorted(d_frame, d_frame, side="left")
    p_frame = g_frame[g_of_pair]
    out = []
    for f0 in range(0, frames.shape[0], _FRAME_BLOCK):
        f1 = min(f0 + _FRAME_BLOCK, frames.shape[0])
        gsel = (g_frame >= f0) & (g_frame < f1)
        dsel = (d_frame >= f0) & (d_frame < f1)
        psel = (p_frame >= f0) & (p_frame < f1)
        n_f = f1 - f0
        n_g = int(g_rank[gsel].max()) + 1
        n_d = int(d_rank[dsel].max()) + 1
        ov = np.zeros((n_f, n_g, n_d))
        ok = np.zeros((n_f, n_g, n_d), dtype=bool)
        pi = (p_frame[psel] - f0, g_rank[g_of_pair[psel]], d_rank[d_of_pair[psel]])
        ov[pi] = v[psel]
        ok[pi] = True
        gi = (g_frame[gsel] - f0, g_rank[gsel])
        di = (d_frame[dsel] - f0, d_rank[dsel])
        gt_ign = np.full((n_f, n_g), -1, dtype=np.int64)
        gt_ign[gi] = lab.gt_ign[ug[gsel]]
        gt_alpha = np.zeros((n_f, n_g))
        gt_alpha[gi] = gt.alpha[ug[gsel]]
        det_ign = np.full((n_f, n_d), -1, dtype=np.int64)
        det_ign[di] = lab.det_ign[ud[dsel]]
        det_score = np.full((n_f, n_d), -np.inf)
        det_score[di] = dt.score[ud[dsel]]
        det_alpha = np.zeros((n_f, n_d))
        det_alpha[di] = dt.alpha[ud[dsel]]
        det_global = np.full((n_f, n_d), -1, dtype=np.int64)
        det_global[di] = ud[dsel]
        out.append(_Block(ov, ok, gt_ign, gt_alpha, det_ign, det_score, det_alpha, det_global))
    return out


def _tp_scores(blocks: list[_Block]) -> np.ndarray:
    """Scores of the true positives of the threshold pass (highest-score matching, no score cut)."""
    found = []
    for b in blocks:
        n_f, n_g, _ = b.ov.shape
        rows = np.arange(n_f)
        assigned = np.zeros(b.det_score.shape, dtype=bool)
        for k in range(n_g):
            cand = b.ok[:, k, :] & ~assigned
            has = cand.any(axis=1) & (b.gt_ign[:, k] != -1)
            j = np.argmax(np.where(cand, b.det_score, -np.inf), axis=1)
            assigned[rows[has], j[has]] = True
            tp = has & (b.gt_ign[:, k] == 0) & (b.det_ign[rows, j] == 0)
            found.append(b.det_score[rows[tp], j[tp]])
    return np.concatenate(found) if found else np.zeros(0)


def _pr_counts(
    blocks: list[_Block],
    thresholds: np.ndarray,
    fp_candidates: np.ndarray,
    dc_hit: np.ndarray | None,
    with_aos: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, similarity)`` summed over frames at each score threshold ``(T,)``.

    ``fp_candidates[t]`` counts all detections that would be false positives at threshold ``t`` if left
    unassigned (valid, score >= t, not in a DontCare region); the assigned ones are subtracted here.
    """
    t_count = thresholds.shape[0]
    tp = np.zeros(t_count)
    sim = np.zeros(t_count)
    assigned_fp = np.zeros(t_count)
    for b in blocks:
        n_f, n_g, _ = b.ov.shape
        score_ok = b.det_score[:, None, :] >= thresholds[None, :, None]
        is0 = (b.det_ign == 0)[:, None, :]
        is1 = (b.det_ign == 1)[:, None, :]
        assigned = np.zeros(score_ok.shape, dtype=bool)
        f_idx = np.arange(n_f)[:, None]
        for k in range(n_g):
            g_state = b.gt_ign[:, k]
            cand = b.ok[:, k, None, :] & score_ok & ~assigned
            c0 = cand & is0
            c1 = cand & is1
            has0 = c0.any(axis=2)
            has1 = c1.any(axis=2)
            j0 = np.argmax(np.where(c0, b.ov[:, k, None, :], -1.0), axis=2)
            j1 = np.argmax(c1, axis=2)
            j = np.where(has0, j0, j1)
            active = (has0 | has1) & (g_state != -1)[:, None]
            fa, ta = np.nonzero(active)
            assigned[fa, ta, j[fa, ta]] = True
            is_tp = has0 & (g_state == 0)[:, None]
            tp += is_tp.sum(axis=0)
            if with_aos:
                delta = b.gt_alpha[:, k, None] - b.det_alpha[f_idx, j]
                sim += np.where(is_tp, (1.0 + np.cos(delta)) / 2.0, 0.0).sum(axis=0)
        # Assigned detections that would otherwise be counted as false positives.
        countable = b.det_ign == 0
        if dc_hit is not None:
            countable &= ~np.where(b.det_global >= 0, dc_hit[np.maximum(b.det_global, 0)], False)
        assigned_fp += (assigned & countable[:, None, :]).sum(axis=(0, 2))
    fp = fp_candidates - assigned_fp
    return tp, fp, sim


def _curves(
    pairs: _Pairs,
    thr: float,
    lab: _Labels,
    gt: _Flat,
    dt: _Flat,
    dc_hit: np.ndarray | None,
    with_aos: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Monotone precision (and AOS) samples ``(41,)`` of one class, difficulty, metric and threshold."""
    precision = np.zeros(N_SAMPLE_PTS)
    aos = np.zeros(N_SAMPLE_PTS) if with_aos else None
    if lab.num_gt == 0:
        return precision, aos
    blocks = _blocks(pairs, thr, lab, gt, dt)
    thresholds = recall_thresholds(_tp_scores(blocks), lab.num_gt)
    if thresholds.size == 0:
        return precision, aos
    countable = lab.det_ign == 0
    if dc_hit is not None:
        countable &= ~dc_hit
    scores = np.sort(dt.score[countable])
    fp_candidates = (scores.shape[0] - np.searchsorted(scores, thresholds, side="left")).astype(np.float64)
    tp, fp, sim = _pr_counts(blocks, thresholds, fp_candidates, dc_hit, with_aos)
    denom = tp + fp
    n = thresholds.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision[:n] = np.where(denom > 0, tp / denom, 0.0)
        if aos is not None:
            aos[:n] = np.where(denom > 0, sim / denom, 0.0)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    if aos is not None:
        aos = np.maximum.accumulate(aos[::-1])[::-1]
    return precision, aos


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _entry(curves: list[np.ndarray], iou: float) -> dict[str, Any]:
    return {
        "R40": [ap_r40(c) for c in curves],
        "R11": [ap_r11(c) for c in curves],
        "iou": iou,
    }


def evaluate_kitti(
    gt_annos: Sequence[KittiObjects | Mapping[str, Any]],
    dt_annos: Sequence[KittiObjects | Mapping[str, Any]],
    classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
    *,
    loose: bool = True,
) -> dict[str, dict[str, Any]]:
    """Official KITTI AP of detections against ground truth, frame by frame.

    Args:
        gt_annos: per frame, the ``label_2`` objects (DontCare included).
        dt_annos: per frame (same order and length), the detections with scores; each needs the camera
            box, ``alpha`` and the projected 2D box (see ``hrnas.tasks.kitti.boxes.predictions_to_kitti``).
            Annotation dicts in the OpenPCDet layout (``dimensions`` as l, h, w) are accepted too.
        classes: evaluated classes, from :data:`CLASS_NAMES`.
        loose: also evaluate with :data:`LOOSE_IOU` (under the ``"loose"`` key of each class).

    Returns:
        ``{class: {"bbox" | "bev" | "3d" | "aos": {"R40": [easy, moderate, hard], "R11": [...],
        "iou": threshold}, "loose": {...same four...}}}`` with AP in percent at the official
        (:data:`STRICT_IOU`) thresholds. ``"aos"`` is ``None`` when detections carry no alpha
        (``alpha == -10``).

    Raises:
        ValueError: unknown class, different frame counts, or detections without scores.
    """
    for cls in classes:
        if cls not in CLASS_NAMES:
            raise ValueError(f"unknown class {cls!r} (known: {', '.join(CLASS_NAMES)})")
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"{len(gt_annos)} ground-truth frames but {len(dt_annos)} detection frames")
    gts = [_as_objects(a, "gt_annos", i) for i, a in enumerate(gt_annos)]
    dts = [_as_objects(a, "dt_annos", i) for i, a in enumerate(dt_annos)]
    n_frames = len(gts)
    gt = _flatten(gts, need_score=False, what="gt_annos")
    dt = _flatten(dts, need_score=True, what="dt_annos")

    first = next((d for d in dts if len(d)), None)
    with_aos = first is not None and float(first.alpha[0]) != -10.0

    lower = [c.lower() for c in classes]
    relevant_gt = set(lower) | {_NEIGHBOUR[c] for c in lower if c in _NEIGHBOUR}
    gt_rows = np.flatnonzero(np.isin(gt.name, list(relevant_gt)))
    # Other-class detections only matter when small enough to be ignored detections.
    dt_rows = np.flatnonzero(np.isin(dt.name, lower) | (np.abs(dt.bbox[:, 3] - dt.bbox[:, 1]) < max(MIN_HEIGHT)))
    pairs = _overlaps(gt, dt, gt_rows, dt_rows, n_frames)
    dc_cover = _dontcare_max(gt, dt, n_frames)

    results: dict[str, dict[str, Any]] = {}
    for cls in classes:
        labels = [_labels(gt, dt, cls, d) for d in range(len(DIFFICULTIES))]
        curves: dict[tuple[str, float], list[tuple[np.ndarray, np.ndarray | None]]] = {}
        per_set: dict[str, dict[str, Any]] = {}
        for set_name, table in (("strict", STRICT_IOU), ("loose", LOOSE_IOU)):
            if set_name == "loose" and not loose:
                continue
            thr = dict(zip(METRICS, table[cls], strict=True))
            for metric in METRICS:
                key = (metric, thr[metric])
                if key not in curves:
                    dc_hit = dc_cover > thr[metric] if metric == "bbox" else None
                    aos = with_aos and metric == "bbox"
                    curves[key] = [_curves(pairs[metric], key[1], lab, gt, dt, dc_hit, aos) for lab in labels]
            res: dict[str, Any] = {m: _entry([p for p, _ in curves[(m, thr[m])]], thr[m]) for m in METRICS}
            aos_curves = [a for _, a in curves[("bbox", thr["bbox"])] if a is not None]
            res["aos"] = _entry(aos_curves, thr["bbox"]) if with_aos else None
            per_set[set_name] = res
        results[cls] = per_set["strict"]
        if loose:
            results[cls]["loose"] = per_set["loose"]
    return results


def format_kitti_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The familiar printout of the Python port: per class and threshold set, an ``AP@`` (R11) block and
    an ``AP_R40@`` block with ``bbox / bev / 3d / aos`` lines of easy, moderate, hard AP in percent."""
    lines: list[str] = []
    for cls, res in results.items():
        variants = [res] + ([res["loose"]] if res.get("loose") else [])
        for var in variants:
            thr = ", ".join(f"{var[m]['iou']:.2f}" for m in METRICS)
            for key, label in (("R11", "AP"), ("R40", "AP_R40")):
                lines.append(f"{cls} {label}@{thr}:")
                for metric in ("bbox", "bev", "3d", "aos"):
                    entry = var.get(metric)
                    if entry is None:
                        continue
                    digits = 2 if metric == "aos" else 4  # as the Python port prints them
                    vals = ", ".join(f"{v:.{digits}f}" for v in entry[key])
                    lines.append(f"{metric:<4} AP:{vals}")
    return "\n".join(lines) + ("\n" if lines else "")
