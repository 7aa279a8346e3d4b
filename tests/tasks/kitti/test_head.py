"""Anchor head: output layout, initialisation and exact analytic cost."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hrnas.tasks.kitti.anchors import AnchorConfig, generate_anchors
from hrnas.tasks.kitti.cost import AnchorHeadSpec
from hrnas.tasks.kitti.head import AnchorHead


def test_kitti_head_cost_figures() -> None:
    cost = AnchorHeadSpec(384).cost((248, 216))
    assert cost.macs == 384 * (18 + 42 + 12) * 248 * 216 == 1_481_048_064
    assert cost.params == 27_720
    assert cost.params == sum(p.numel() for p in AnchorHead(384).parameters())
    assert [i.path for i in cost.items] == ["head.cls", "head.box", "head.dir"]


@pytest.mark.parametrize("dir_bins", [2, 0])
def test_cost_matches_flop_counter(dir_bins: int) -> None:
    head = AnchorHead(16, num_dir_bins=dir_bins)
    x = torch.randn(1, 16, 9, 7)
    with FlopCounterMode(display=False) as counter:
        head(x)
    cost = AnchorHeadSpec(16, num_dir_bins=dir_bins).cost((9, 7))
    assert counter.get_total_flops() == 2 * cost.macs
    assert cost.params == sum(p.numel() for p in head.parameters())


def test_output_shapes_and_anchor_order() -> None:
    cfg = AnchorConfig()
    head = AnchorHead(8, cfg.num_anchors_per_location, cfg.num_classes)
    out = head(torch.randn(2, 8, 5, 4))
    n = 5 * 4 * 6
    assert out.cls_logits.shape == (2, n, 3)
    assert out.box_deltas.shape == (2, n, 7)
    assert out.dir_logits is not None and out.dir_logits.shape == (2, n, 2)
    assert generate_anchors(cfg, (5, 4)).reshape(-1, 7).shape[0] == n
    # Channel a*K + k at pixel (y, x) is anchor (y*W + x)*A + a, class k.
    with torch.no_grad():
        head.conv_cls.weight.zero_()
        head.conv_cls.bias.copy_(torch.arange(18.0))
    x = torch.zeros(1, 8, 5, 4)
    cls = head(x).cls_logits[0]
    a = torch.arange(n) % 6
    assert torch.equal(cls, (a[:, None] * 3 + torch.arange(3)[None, :]).float())
    with torch.no_grad():
        head.conv_cls.weight.zero_()
        head.conv_cls.weight[:, 0, 0, 0] = 1.0
    x = torch.zeros(1, 8, 5, 4)
    x[0, 0, 3, 2] = 1.0
    hot = head(x).cls_logits[0] - cls
    changed = torch.nonzero(hot.abs().sum(-1)).flatten()
    assert changed.tolist() == list(range((3 * 4 + 2) * 6, (3 * 4 + 2) * 6 + 6))


def test_reference_initialisation() -> None:
    torch.manual_seed(0)
    head = AnchorHead(384)
    torch.testing.assert_close(head.conv_cls.bias.detach(), torch.full((18,), -math.log(99.0)))
    assert head.conv_box.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert torch.sigmoid(head.conv_cls.bias).mean().item() == pytest.approx(0.01)


def test_no_direction_classifier_and_bad_sizes() -> None:
    out = AnchorHead(4, num_dir_bins=0)(torch.randn(1, 4, 2, 2))
    assert out.dir_logits is None
    with pytest.raises(ValueError, match="in_channels"):
        AnchorHead(0)
    with pytest.raises(ValueError, match="prior_prob"):
        AnchorHead(4, prior_prob=1.0)
