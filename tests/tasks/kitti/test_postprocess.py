"""Rotated BEV IoU, NMS against a brute-force greedy reference, decoding and post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hrnas.tasks.kitti.anchors import AnchorConfig, DirectionConfig, ResidualCoder, direction_targets, generate_anchors
from hrnas.tasks.kitti.head import HeadOutput
from hrnas.tasks.kitti.iou import bev_iou_lidar, rotated_iou, rotated_iou_pairs
from hrnas.tasks.kitti.postprocess import (
    PostProcessConfig,
    _overlap_bounds,
    decode_boxes,
    nms_benchmark_boxes,
    postprocess,
    rotated_bev_iou,
    rotated_bev_iou_pairs,
    rotated_nms,
    time_nms,
)


def random_rects(n: int, seed: int, spread: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-spread, spread, (n, 2)), rng.uniform(0.2, 4.0, (n, 2)), rng.uniform(-4, 4, n)]


def degenerate_pairs() -> tuple[np.ndarray, np.ndarray]:
    a = random_rects(400, 1)
    b = random_rects(400, 2)
    b[:50] = a[:50]  # identical
    b[50:100] = a[50:100]
    b[50:100, 4] += np.pi  # same rectangle, heading flipped
    b[100:150] = a[100:150]
    b[100:150, 2] *= 0.5  # nested, sharing the short edges' lines
    a[150:200, 4] = 0.0
    b[150:200, 4] = np.pi / 2 * np.random.default_rng(3).integers(0, 4, 50)  # axis-aligned
    b[200:250] = a[200:250]
    b[200:250, 0] += a[200:250, 2] * np.cos(a[200:250, 4])  # shifted by the length: touching edges
    b[200:250, 1] += a[200:250, 2] * np.sin(a[200:250, 4])
    b[250:260, 2] = 0.0  # empty
    return a, b


def test_rotated_iou_matches_numpy_reference() -> None:
    a, b = degenerate_pairs()
    ref = rotated_iou_pairs(a, b)
    got = rotated_bev_iou_pairs(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9, rtol=0)
    assert (got[:50] == 1.0).all()  # coincident: exactly 1
    assert (got[250:260] == 0.0).all()
    assert got[200:250].max() < 1e-9
    # Matrix form on LiDAR boxes, float32 input.
    boxes = torch.from_numpy(np.c_[a[:60, :2], np.zeros(60), a[:60, 2:4], np.ones(60), a[:60, 4]]).float()
    mat = rotated_bev_iou(boxes, boxes)
    np.testing.assert_allclose(mat.numpy(), bev_iou_lidar(boxes.double().numpy(), boxes.double().numpy()), atol=1e-5)
    assert mat.dtype == torch.float32


def test_overlap_bounds_are_sound() -> None:
    a, b = degenerate_pairs()
    a2, b2 = random_rects(3000, 4, spread=3.0), random_rects(3000, 5, spread=3.0)
    a, b = np.r_[a[:250], a2], np.r_[b[:250], b2]
    exact = rotated_iou_pairs(a, b)
    for thr in (0.0, 0.01, 0.3):
        above, below = _overlap_bounds(torch.from_numpy(a), torch.from_numpy(b), thr)
        assert (exact[above.numpy()] > thr).all()
        assert (exact[below.numpy()] <= thr).all()
        assert above.any() and below.any()


def brute_force_nms(rects: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    iou = rotated_iou(rects, rects)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > thr
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.0, 0.01, 0.3])
def test_nms_matches_brute_force_on_random_boxes(seed: int, thr: float) -> None:
    rects = random_rects(300, seed, spread=12.0)
    scores = np.random.default_rng(seed + 10).random(300)
    scores[:20] = scores[0]  # ties keep input order
    keep = rotated_nms(torch.from_numpy(rects), torch.from_numpy(scores), thr)
    assert keep.tolist() == brute_force_nms(rects, scores, thr)


def test_nms_matches_brute_force_on_clustered_boxes_over_several_windows() -> None:
    boxes, scores = nms_benchmark_boxes(1400, num_objects=25, seed=3)
    rects = boxes[:, [0, 1, 3, 4, 6]].double().numpy()
    expected = brute_force_nms(rects, scores.double().numpy(), 0.01)
    assert rotated_nms(boxes, scores, 0.01).tolist() == expected
    assert rotated_nms(boxes, scores, 0.01, max_output=40).tolist() == expected[:40]
    # Many disjoint boxes: more kept than one round examines.
    xs = torch.arange(700, dtype=torch.float64) * 3.0
    far = torch.stack(
        [xs, torch.zeros(700), torch.zeros(700), torch.ones(700), torch.ones(700), torch.ones(700), xs], 1
    )
    order = torch.randperm(700, generator=torch.Generator().manual_seed(0))
    keep = rotated_nms(far, order.double(), 0.01)
    assert keep.tolist() == torch.argsort(order.double(), descending=True).tolist()


def test_nms_edge_cases() -> None:
    empty = rotated_nms(torch.zeros(0, 7), torch.zeros(0), 0.01)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    one = rotated_nms(torch.tensor([[0.0, 0, 0, 2, 1, 1, 0.3]]), torch.tensor([0.5]), 0.01)
    assert one.tolist() == [0]
    # Identical boxes: only the best survives; an empty box is never suppressed and suppresses nothing.
    b = torch.tensor([[0.0, 0, 0, 2, 1, 1, 0.3]] * 3 + [[0.0, 0, 0, 0, 1, 1, 0.3]])
    assert rotated_nms(b, torch.tensor([0.2, 0.9, 0.5, 0.95]), 0.01).tolist() == [3, 1]
    assert rotated_nms(b, torch.tensor([0.2, 0.9, 0.5, 0.95]), 0.01, max_output=0).tolist() == []
    with pytest.raises(ValueError, match="finite"):
        rotated_nms(torch.tensor([[float("nan"), 0, 0, 1, 1, 1, 0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="scores"):
        rotated_nms(torch.zeros(2, 7), torch.zeros(3))
    with pytest.raises(ValueError, match="iou_threshold"):
        rotated_nms(torch.zeros(2, 7), torch.zeros(2), 1.5)


def test_decode_applies_direction_bins() -> None:
    g = torch.Generator().manual_seed(0)
    anchors = generate_anchors(AnchorConfig(), (3, 2)).reshape(-1, 7)
    n = anchors.shape[0]
    gt = anchors.clone()
    gt[:, :2] += torch.randn(n, 2, generator=g)
    gt[:, 6] = (torch.rand(n, generator=g) * 2 - 1) * 3 * math.pi
    coder = ResidualCoder()
    deltas = coder.encode(gt, anchors)
    bins = direction_targets(anchors, deltas)
    dir_logits = torch.nn.functional.one_hot(bins, 2).float()[None]
    boxes = decode_boxes(HeadOutput(torch.zeros(1, n, 3), deltas[None], dir_logits), anchors)[0]
    torch.testing.assert_close(boxes[:, :6], gt[:, :6], atol=1e-4, rtol=1e-5)
    wrapped = torch.remainder(boxes[:, 6] - gt[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-4
    off = DirectionConfig().offset
    assert ((boxes[:, 6] >= off - 1e-6) & (boxes[:, 6] < off + 2 * math.pi + 1e-6)).all()
    # The wrong bin flips the heading by pi.
    flipped = decode_boxes(HeadOutput(torch.zeros(1, n, 3), deltas[None], 1 - dir_logits), anchors)[0]
    diff = torch.remainder(flipped[:, 6] - boxes[:, 6], 2 * math.pi)
    torch.testing.assert_close(diff, torch.full_like(diff, math.pi), atol=1e-4, rtol=0)


def test_postprocess_thresholds_nms_and_empty_frames() -> None:
    cfg = AnchorConfig()
    anchors = generate_anchors(cfg, (20, 16))
    n = anchors.reshape(-1, 7).shape[0]
    cls = torch.full((2, n, 3), -10.0)
    # Frame 0: anchor 0 (car, yaw 0) strongly car; anchor 1 (car, yaw 1.57 at the same place) weaker;
    # anchor far away a pedestrian at 0.15; another car just under the score threshold.
    far = ((10 * 16 + 8) * 3 + 1) * 2
    cls[0, 0, 0] = 3.0
    cls[0, 1, 0] = 1.0
    cls[0, far, 1] = math.log(0.15 / 0.85)
    cls[0, 100, 0] = math.log(0.099 / 0.901)
    preds = HeadOutput(cls, torch.zeros(2, n, 7), torch.zeros(2, n, 2))
    dets = postprocess(preds, anchors)
    assert len(dets) == 2
    d0 = dets[0]
    assert d0.labels.tolist() == [1, 2]
    assert d0.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(3.0)).item(), 0.15], abs=1e-6)
    flat = anchors.reshape(-1, 7)
    torch.testing.assert_close(d0.boxes[0, :6], flat[0, :6])
    torch.testing.assert_close(d0.boxes[1, :6], flat[far, :6])
    # Frame 1: nothing above the threshold -> empty, well-shaped.
    assert dets[1].boxes.shape == (0, 7) and dets[1].scores.shape == (0,) and dets[1].labels.shape == (0,)
    # Caps: without NMS overlap (threshold 1) at most nms_post_max survive, best first.
    cls2 = torch.randn(1, n, 3, generator=torch.Generator().manual_seed(0))
    capped = postprocess(
        HeadOutput(cls2, torch.zeros(1, n, 7), None), anchors, PostProcessConfig(nms_iou_threshold=1.0, nms_post_max=30)
    )
    assert capped[0].scores.shape == (30,)
    assert (capped[0].scores[:-1] >= capped[0].scores[1:]).all()
    # Non-finite decoded boxes are dropped instead of crashing the NMS.
    bad = torch.zeros(1, n, 7)
    bad[0, 0, 3] = 1e6
    cls3 = torch.full((1, n, 3), -10.0)
    cls3[0, 0, 0] = 5.0
    assert postprocess(HeadOutput(cls3, bad, None), anchors)[0].boxes.shape == (0, 7)


def test_time_nms_reports() -> None:
    out = time_nms(num_boxes=200, repeats=2, warmup=1)
    assert set(out) == {"boxes", "kept", "median_ms", "min_ms"}
    assert out["boxes"] == 200 and 0 < out["kept"] <= 200 and out["median_ms"] >= out["min_ms"] > 0
