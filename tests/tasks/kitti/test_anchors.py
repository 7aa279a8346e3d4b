"""Anchors, box coding, direction targets and target assignment of the PointPillars head."""

from __future__ import annotations

import math

import pytest
import torch

from hrnas.tasks.kitti.anchors import (
    AnchorClassConfig,
    AnchorConfig,
    DirectionConfig,
    ResidualCoder,
    assign_targets,
    assign_targets_batch,
    direction_targets,
    generate_anchors,
    limit_period,
    nearest_bev_iou,
)


def box(x: float, y: float, dx: float = 2.0, dy: float = 2.0, heading: float = 0.0, z: float = 0.0) -> list[float]:
    return [x, y, z, dx, dy, 1.0, heading]


# --------------------------------------------------------------------------------------------------
# Anchor grid
# --------------------------------------------------------------------------------------------------


def test_kitti_anchor_grid_matches_reference_layout() -> None:
    cfg = AnchorConfig()
    a = generate_anchors(cfg, (248, 216))
    assert a.shape == (248, 216, 3, 2, 7)
    assert a.reshape(-1, 7).shape[0] == 321_408
    # align_center False: centres span the range inclusively.
    assert a[0, 0, 0, 0, 0].item() == pytest.approx(0.0)
    assert a[0, -1, 0, 0, 0].item() == pytest.approx(69.12, abs=1e-5)
    assert a[0, 1, 0, 0, 0].item() == pytest.approx(69.12 / 215, abs=1e-6)
    assert a[0, 0, 0, 0, 1].item() == pytest.approx(-39.68, abs=1e-5)
    assert a[-1, 0, 0, 0, 1].item() == pytest.approx(39.68, abs=1e-5)
    assert a[1, 0, 0, 0, 1].item() - a[0, 0, 0, 0, 1].item() == pytest.approx(79.36 / 247, abs=1e-5)
    # z is the bottom height plus half the anchor height.
    assert a[5, 7, :, 0, 2].tolist() == pytest.approx([-1.0, 0.265, 0.265], abs=1e-6)
    assert a[5, 7, 0, 0, 3:6].tolist() == pytest.approx([3.9, 1.6, 1.56])
    assert a[5, 7, 1, 0, 3:6].tolist() == pytest.approx([0.8, 0.6, 1.73])
    assert a[5, 7, 2, 1, 3:6].tolist() == pytest.approx([1.76, 0.6, 1.73])
    assert a[5, 7, :, :, 6].flatten().tolist() == pytest.approx([0.0, 1.57] * 3)
    # Flattened index ((y * W + x) * C + c) * R + r.
    y, x, c, r = 17, 101, 2, 1
    flat = a.reshape(-1, 7)[((y * 216 + x) * 3 + c) * 2 + r]
    assert torch.equal(flat, a[y, x, c, r])


def test_align_center_puts_anchors_on_cell_centres() -> None:
    cfg = AnchorConfig(point_cloud_range=(0.0, 0.0, -1.0, 4.0, 2.0, 1.0), align_center=True)
    a = generate_anchors(cfg, (2, 4))
    assert a[0, :, 0, 0, 0].tolist() == pytest.approx([0.5, 1.5, 2.5, 3.5])
    assert a[:, 0, 0, 0, 1].tolist() == pytest.approx([0.5, 1.5])


def test_anchor_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="matched_threshold"):
        AnchorClassConfig("Car", (1.0, 1.0, 1.0), 0.0, 0.3, 0.5)
    with pytest.raises(ValueError, match="size"):
        AnchorClassConfig("Car", (1.0, 0.0, 1.0), 0.0, 0.6, 0.45)
    with pytest.raises(ValueError, match="rotations"):
        AnchorConfig(
            classes=(
                AnchorClassConfig("A", (1, 1, 1), 0, 0.5, 0.3, (0.0,)),
                AnchorClassConfig("B", (1, 1, 1), 0, 0.5, 0.3),
            )
        )


# --------------------------------------------------------------------------------------------------
# Box coding and direction
# --------------------------------------------------------------------------------------------------


def test_residual_coder_hand_values() -> None:
    anchor = torch.tensor([[1.0, 2.0, 0.5, 3.0, 4.0, 1.0, 0.3]])
    gt = torch.tensor([[6.0, 12.0, 2.5, 6.0, 4.0, 2.0, 0.8]])
    enc = ResidualCoder().encode(gt, anchor)
    assert enc[0].tolist() == pytest.approx([1.0, 2.0, 2.0, math.log(2), 0.0, math.log(2), 0.5])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_residual_coder_round_trip(dtype: torch.dtype, tol: float) -> None:
    g = torch.Generator().manual_seed(0)
    anchors = generate_anchors(AnchorConfig(), (6, 5), dtype=dtype).reshape(-1, 7)
    boxes = anchors.clone()
    boxes[:, :3] += torch.randn(anchors.shape[0], 3, generator=g, dtype=dtype) * 2
    boxes[:, 3:6] *= torch.exp(torch.randn(anchors.shape[0], 3, generator=g, dtype=dtype) * 0.3)
    boxes[:, 6] += torch.randn(anchors.shape[0], generator=g, dtype=dtype) * 3
    coder = ResidualCoder()
    back = coder.decode(coder.encode(boxes, anchors), anchors)
    torch.testing.assert_close(back, boxes, atol=tol, rtol=tol)
    # The inputs are not mutated and tiny sizes are clamped, not turned into -inf.
    tiny = boxes.clone()
    tiny[:, 3] = 0.0
    enc = coder.encode(tiny, anchors)
    assert torch.isfinite(enc).all()
    assert (tiny[:, 3] == 0).all()


def test_limit_period() -> None:
    v = torch.tensor([-4.0, -1.0, 0.0, 1.0, 3.5, 7.0])
    out = limit_period(v, 0.5, math.pi)
    assert ((out >= -math.pi / 2) & (out < math.pi / 2)).all()
    torch.testing.assert_close(torch.remainder(out - v, math.pi), torch.zeros_like(v), atol=1e-6, rtol=0)
    out0 = limit_period(v, 0.0, 2 * math.pi)
    assert ((out0 >= 0) & (out0 < 2 * math.pi)).all()


def test_direction_targets_bins() -> None:
    # Bin 0 covers headings in [pi/4, 5pi/4) (offset 0.78539), bin 1 the rest.
    headings = torch.tensor([0.0, 0.8, math.pi / 2, math.pi, 3.9, -math.pi / 2, -3.0, 2 * math.pi + 1.0, 0.78])
    expected = [1, 0, 0, 0, 0, 1, 0, 0, 1]
    anchors = torch.zeros(len(headings), 7)
    anchors[:, 6] = 1.57
    targets = torch.zeros(len(headings), 7)
    targets[:, 6] = headings - 1.57  # heading = anchor yaw + delta
    assert direction_targets(anchors, targets[None]).tolist() == [expected]
    three = direction_targets(anchors, targets, DirectionConfig(num_bins=3, offset=0.0))
    assert three.min() >= 0 and three.max() <= 2


# --------------------------------------------------------------------------------------------------
# Nearest axis-aligned BEV IoU
# --------------------------------------------------------------------------------------------------


def test_nearest_bev_iou_hand_values() -> None:
    a = torch.tensor([box(0, 0, 4, 2)])
    cases = [
        (box(0, 0, 4, 2), 1.0),
        (box(0, 0, 2, 4, heading=math.pi / 2), 1.0),  # rotated and swapped: the same rectangle
        (box(0, 0, 2, 4, heading=-math.pi / 2 + 0.1), 1.0),  # nearest to +-pi/2: dims swap
        (box(0, 0, 4, 2, heading=math.pi - 0.2), 1.0),  # nearest to pi: no swap
        (box(1, 0, 4, 2), 6 / 10),
        (box(0, 1, 4, 2), 4 / 12),
        (box(10, 0, 4, 2), 0.0),
        (box(0, 0, 4, 2, heading=math.pi / 4), 4 / 12),  # exactly pi/4 swaps (2x4 against 4x2)
    ]
    b = torch.tensor([c[0] for c in cases])
    iou = nearest_bev_iou(a, b)[0]
    assert iou.tolist() == pytest.approx([c[1] for c in cases], abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Target assignment
# --------------------------------------------------------------------------------------------------

# Two classes, one rotation, anchors of 2x2 m on a 1 m lattice x, y in 0..4.
SQUARE = AnchorClassConfig("A", (2.0, 2.0, 1.0), -0.5, matched_threshold=0.5, unmatched_threshold=0.3, rotations=(0.0,))
OTHER = AnchorClassConfig("B", (2.0, 2.0, 1.0), -0.5, matched_threshold=0.6, unmatched_threshold=0.45, rotations=(0.0,))
TOY = AnchorConfig(classes=(SQUARE, OTHER), point_cloud_range=(0.0, 0.0, -1.0, 4.0, 4.0, 1.0))


def toy_anchors() -> torch.Tensor:
    return generate_anchors(TOY, (5, 5))


def flat(y: int, x: int, c: int) -> int:
    return (y * 5 + x) * 2 + c


def test_assignment_thresholds_and_ignore_band() -> None:
    anchors = toy_anchors()
    t = assign_targets(anchors, torch.tensor([box(2, 2)]), torch.tensor([1]), TOY)
    labels = t.labels
    assert labels[flat(2, 2, 0)] == 1  # IoU 1
    # Side neighbours: IoU 2/6 = 0.333, between 0.3 and 0.5 -> ignored.
    for y, x in [(2, 3), (2, 1), (1, 2), (3, 2)]:
        assert labels[flat(y, x, 0)] == -1
    # Diagonal neighbours: 1/7 -> background.
    assert labels[flat(3, 3, 0)] == 0
    assert labels[flat(0, 0, 0)] == 0
    # Class B anchors never see class A ground truth.
    assert (labels.view(25, 2)[:, 1] == 0).all()
    assert (labels > 0).sum() == 1
    # Same box as class B: its side neighbours fall below 0.45 -> background.
    tb = assign_targets(anchors, torch.tensor([box(2, 2)]), torch.tensor([2]), TOY)
    assert tb.labels[flat(2, 2, 1)] == 2
    assert tb.labels[flat(2, 3, 1)] == 0
    assert (tb.labels.view(25, 2)[:, 0] == 0).all()


def test_assignment_forces_every_best_anchor_including_ties() -> None:
    anchors = toy_anchors()
    # Centred between four anchors: each has IoU 2.25 / 5.75 = 0.39 < 0.5, all four tie and are forced.
    gt = torch.tensor([box(2.5, 2.5)])
    t = assign_targets(anchors, gt, torch.tensor([1]), TOY)
    pos = set(torch.nonzero(t.labels > 0).flatten().tolist())
    assert pos == {flat(2, 2, 0), flat(2, 3, 0), flat(3, 2, 0), flat(3, 3, 0)}
    assert (t.gt_index[list(pos)] == 0).all()
    # The next ring: 0.75 / 7.25 -> background.
    assert t.labels[flat(2, 1, 0)] == 0


def test_assignment_does_not_force_a_gt_without_overlap_and_regresses_to_argmax() -> None:
    anchors = toy_anchors()
    gts = torch.tensor([box(2, 2), box(50, 50), box(2.2, 2.0, 2.0, 2.0)])
    labels = torch.tensor([1, 1, 1])
    t = assign_targets(anchors, gts, labels, TOY)
    assert not (t.gt_index == 1).any()  # the far box overlaps nothing and is not forced
    # Anchor (2, 2) is the best of both gt 0 (IoU 1) and gt 2 (IoU 1.8·2 / 4.4 = 0.82); it regresses to gt 0.
    i = flat(2, 2, 0)
    assert t.labels[i] == 1 and t.gt_index[i] == 0
    coder = ResidualCoder()
    torch.testing.assert_close(t.box_targets[i], coder.encode(gts[0], anchors.reshape(-1, 7)[i]))
    # Anchor (2, 3): IoU with gt 2 = 1.2·2 / 5.6 = 0.43 -> ignored (0.3..0.5).
    assert t.labels[flat(2, 3, 0)] == -1
    # Everything that is not positive has zero regression targets.
    assert (t.box_targets[t.labels <= 0] == 0).all()
    assert (t.gt_index[t.labels <= 0] == -1).all()


def test_assignment_empty_and_padding() -> None:
    anchors = toy_anchors()
    n = anchors.reshape(-1, 7).shape[0]
    t = assign_targets(anchors, torch.zeros(0, 7), torch.zeros(0, dtype=torch.long), TOY)
    assert t.labels.shape == (n,) and (t.labels == 0).all()
    assert (t.box_targets == 0).all() and (t.gt_index == -1).all()
    # Zero-padded rows (label 0) are ignored.
    gts = torch.tensor([[box(2, 2), [0.0] * 7], [[0.0] * 7, [0.0] * 7]])
    labels = torch.tensor([[1, 0], [0, 0]])
    bt = assign_targets_batch(anchors, gts, labels, TOY)
    assert bt.labels.shape == (2, n) and bt.box_targets.shape == (2, n, 7)
    assert bt.labels[0, flat(2, 2, 0)] == 1 and (bt.labels[0] > 0).sum() == 1
    assert (bt.labels[1] == 0).all()
    with pytest.raises(ValueError, match="gt_boxes"):
        assign_targets(anchors, torch.zeros(3, 6), torch.zeros(3, dtype=torch.long), TOY)


def test_kitti_assignment_of_one_car_per_class_set() -> None:
    cfg = AnchorConfig()
    anchors = generate_anchors(cfg, (248, 216))
    flat_anchors = anchors.reshape(-1, 7)
    # A car on an anchor position, heading 0, and a pedestrian.
    car_anchor = flat_anchors[((100 * 216 + 50) * 3 + 0) * 2 + 0]
    car = car_anchor.clone()
    ped = flat_anchors[((30 * 216 + 120) * 3 + 1) * 2 + 1].clone()
    ped[0] += 0.05
    t = assign_targets(anchors, torch.stack([car, ped]), torch.tensor([1, 2]), cfg)
    pos = torch.nonzero(t.labels > 0).flatten()
    cls_of = (pos // 2) % 3
    assert torch.equal(t.labels[pos], cls_of + 1)  # labels follow the anchor's class set
    assert t.labels[((100 * 216 + 50) * 3 + 0) * 2 + 0] == 1
    assert (t.labels == 2).any() and not (t.labels == 3).any()
    i = ((100 * 216 + 50) * 3 + 0) * 2 + 0
    torch.testing.assert_close(t.box_targets[i], torch.zeros(7))
