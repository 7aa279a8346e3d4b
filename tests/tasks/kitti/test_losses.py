"""Losses of the anchor head against direct formulas and a hand-computed batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hrnas.tasks.kitti.anchors import direction_targets
from hrnas.tasks.kitti.head import HeadOutput
from hrnas.tasks.kitti.losses import (
    LossConfig,
    add_sin_difference,
    detection_loss,
    sigmoid_focal_loss,
    smooth_l1,
)


def test_focal_loss_matches_direct_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 3, generator=g, dtype=torch.float64) * 4
    targets = (torch.rand(200, 3, generator=g) < 0.3).double()
    p = torch.sigmoid(logits)
    direct = torch.where(
        targets > 0,
        -0.25 * (1 - p) ** 2 * torch.log(p),
        -0.75 * p**2 * torch.log(1 - p),
    )
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), direct)
    # Stable for large logits where log(sigmoid) would underflow.
    big = sigmoid_focal_loss(torch.tensor([-200.0, 200.0]), torch.tensor([1.0, 0.0]))
    assert torch.isfinite(big).all() and big.tolist() == pytest.approx([0.25 * 200, 0.75 * 200])


def test_smooth_l1_values() -> None:
    beta = 1 / 9
    x = torch.tensor([0.0, 0.05, -0.05, 0.2, -3.0])
    expected = [0.0, 0.5 * 0.05**2 / beta, 0.5 * 0.05**2 / beta, 0.2 - beta / 2, 3.0 - beta / 2]
    assert smooth_l1(x, beta).tolist() == pytest.approx(expected)
    assert smooth_l1(x, 0.0).tolist() == pytest.approx(x.abs().tolist())


def test_sin_difference_is_flip_invariant() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.3]])
    for t in (0.1, 0.1 + math.pi, 0.1 - math.pi):
        target = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, t]])
        p, q = add_sin_difference(pred, target)
        assert (p - q)[0, :6].abs().max() == 0
        assert (p - q)[0, 6].abs().item() == pytest.approx(abs(math.sin(0.2)), abs=1e-6)
    assert pred[0, 6] == 0.3  # not mutated


def _toy_batch() -> tuple[HeadOutput, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    b, n, k = 2, 5, 3
    preds = HeadOutput(
        torch.randn(b, n, k, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(b, n, 7, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(b, n, 2, generator=g, dtype=torch.float64, requires_grad=True),
    )
    anchors = torch.randn(n, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([[1, 0, -1, 3, 0], [0, 0, 0, -1, 0]])
    targets = torch.randn(b, n, 7, generator=g, dtype=torch.float64) * (labels > 0)[..., None]
    return preds, anchors, labels, targets


def test_detection_loss_matches_hand_computation() -> None:
    preds, anchors, labels, targets = _toy_batch()
    parts = detection_loss(preds, anchors, labels, targets)
    b = 2
    # Frame 0: 2 positives (normaliser 2); frame 1: none (normaliser 1).
    norm = torch.tensor([2.0, 1.0], dtype=torch.float64)[:, None]
    cls_t = F.one_hot(labels.clamp_min(0), 4)[..., 1:].double()
    focal = sigmoid_focal_loss(preds.cls_logits, cls_t).sum(-1)
    cls = (focal * (labels >= 0) / norm).sum() / b
    pos = (labels > 0).double()
    dp, dt = preds.box_deltas[..., 6], targets[..., 6]
    diff = torch.cat([preds.box_deltas[..., :6] - targets[..., :6], (torch.sin(dp - dt))[..., None]], -1)
    loc = (smooth_l1(diff, 1 / 9).sum(-1) * pos / norm).sum() / b * 2.0
    heading = anchors[:, 6] + targets[..., 6]
    dir_t = (torch.remainder(heading - 0.78539, 2 * math.pi) // math.pi).long().clamp(0, 1)
    assert torch.equal(dir_t, direction_targets(anchors, targets))
    ce = F.cross_entropy(preds.dir_logits.reshape(-1, 2), dir_t.reshape(-1), reduction="none").view(2, 5)
    dirl = (ce * pos / norm).sum() / b * 0.2
    torch.testing.assert_close(parts.cls, cls)
    torch.testing.assert_close(parts.loc, loc)
    torch.testing.assert_close(parts.dir, dirl)
    torch.testing.assert_close(parts.total, cls + loc + dirl)
    assert parts.num_pos.item() == pytest.approx(1.0)


def test_ignored_anchors_get_no_gradient_and_negatives_no_box_gradient() -> None:
    preds, anchors, labels, targets = _toy_batch()
    detection_loss(preds, anchors, labels, targets).total.backward()
    ignored = labels < 0
    assert (preds.cls_logits.grad[ignored] == 0).all()
    assert (preds.cls_logits.grad[labels >= 0] != 0).all()
    assert (preds.box_deltas.grad[labels <= 0] == 0).all()
    assert (preds.dir_logits.grad[labels <= 0] == 0).all()
    assert (preds.box_deltas.grad[labels > 0] != 0).any()


def test_loss_without_positives_or_direction_and_weights() -> None:
    preds, anchors, labels, targets = _toy_batch()
    zero = torch.zeros_like(labels)
    parts = detection_loss(preds, anchors, zero, torch.zeros_like(targets))
    assert parts.loc == 0 and parts.dir == 0 and parts.cls > 0
    no_dir = HeadOutput(preds.cls_logits, preds.box_deltas, None)
    cfg = LossConfig(cls_weight=0.5, loc_weight=1.0)
    p1 = detection_loss(no_dir, anchors, labels, targets, cfg)
    p2 = detection_loss(preds, anchors, labels, targets)
    assert p1.dir == 0
    torch.testing.assert_close(p1.cls, p2.cls / 2)
    torch.testing.assert_close(p1.loc, p2.loc / 2)
    # NaN targets are ignored (no loss, no NaN).
    nan_t = targets.clone()
    nan_t[0, 0, 2] = float("nan")
    p3 = detection_loss(preds, anchors, labels, nan_t)
    assert torch.isfinite(p3.total)
    with pytest.raises(ValueError, match="shapes"):
        detection_loss(preds, anchors[:3], labels, targets)
