"""Decoding and rotated bird's-eye-view NMS of the anchor head's output (kitti-spec §2.11), pure torch.

The reference post-processing (OpenPCDet ``class_agnostic_nms`` with ``nms_gpu``): sigmoid class scores,
best class per anchor, keep scores ``>= 0.1``, the top 4096, **class-agnostic** greedy NMS by the exact
rotated BEV IoU (a box is suppressed by a kept, higher-scored box when their IoU is ``> 0.01``), at most
500 boxes. OpenPCDet's NMS is a CUDA kernel; this one runs on any device with stock torch ops.

**How the NMS stays fast.** The exact IoU is only needed between a kept box and a lower-scored box that
is still alive, and only where their axis-aligned BEV bounds overlap. The greedy decision is made in
rounds: among the first alive boxes (a window of 256), every box that no alive, higher-scored box
overlaps in bounds is kept, since nothing can suppress it any more; the alive boxes whose bounds overlap
a newly kept one are then decided, first by two cheap certain tests (a separating axis: IoU 0; the
inscribed discs' overlap: IoU above the threshold), and the undecided ones by the exact IoU. A detector's
duplicates cluster around objects, so a few rounds suffice. The kept set is that of the sequential greedy
NMS with the exact IoU (tested against it); only pairs within float64 rounding of the threshold could
differ.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from hrnas.tasks.kitti.anchors import DirectionConfig, ResidualCoder, limit_period
from hrnas.tasks.kitti.head import HeadOutput

__all__ = [
    "Detections",
    "PostProcessConfig",
    "decode_boxes",
    "nms_benchmark_boxes",
    "postprocess",
    "rotated_bev_intersection_pairs",
    "rotated_bev_iou",
    "rotated_bev_iou_pairs",
    "rotated_nms",
    "time_nms",
]


# --------------------------------------------------------------------------------------------------
# Exact rotated BEV IoU
# --------------------------------------------------------------------------------------------------

_SIGNS_L = (0.5, -0.5, -0.5, 0.5)
_SIGNS_W = (0.5, 0.5, -0.5, -0.5)
_CODER = ResidualCoder()
_DIRECTION = DirectionConfig()
_WINDOW = 256  # alive boxes examined per NMS round for being safe to keep (a speed trade-off only)
_EPS = 1e-9  # tolerance on segment parameters and half-plane tests (relative to box sizes of metres)


def _bev_rects(boxes: Tensor) -> Tensor:
    """``(N, 5)`` ``[x, y, dx, dy, heading]`` of LiDAR boxes ``(N, 7)`` (or pass ``(N, 5)`` through)."""
    if boxes.dim() != 2 or boxes.shape[1] not in (5, 7):
        raise ValueError(f"boxes must be (N, 7) LiDAR boxes or (N, 5) rectangles, got {tuple(boxes.shape)}")
    return boxes[:, [0, 1, 3, 4, 6]] if boxes.shape[1] == 7 else boxes


def _corners(rects: Tensor) -> Tensor:
    """Counter-clockwise corners ``(N, 4, 2)`` of rectangles ``(N, 5)`` (same order as
    :func:`hrnas.tasks.kitti.iou.rect_corners`)."""
    sl = rects.new_tensor(_SIGNS_L)
    sw = rects.new_tensor(_SIGNS_W)
    lx = rects[:, 2:3] * sl
    ly = rects[:, 3:4] * sw
    c = torch.cos(rects[:, 4:5])
    s = torch.sin(rects[:, 4:5])
    return torch.stack([c * lx - s * ly + rects[:, 0:1], s * lx + c * ly + rects[:, 1:2]], dim=-1)


def _next_corner(quads: Tensor) -> Tensor:
    """Corners shifted by one along dim 1: entry ``k`` is corner ``k + 1 (mod n)``."""
    return torch.cat([quads[:, 1:], quads[:, :1]], dim=1)


def _cross(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor) -> Tensor:
    return ax * by - ay * bx


def _inside(points: Tensor, quad: Tensor) -> Tensor:
    """``(P, 4)`` whether each of the 4 ``points (P, 4, 2)`` lies in (or on) the CCW ``quad (P, 4, 2)``."""
    edge = _next_corner(quad) - quad  # (P, 4, 2): edge k from corner k to k+1
    rel = points[:, :, None, :] - quad[:, None, :, :]  # (P, 4 points, 4 edges, 2)
    side = _cross(edge[:, None, :, 0], edge[:, None, :, 1], rel[..., 0], rel[..., 1])
    scale = edge.square().sum(-1)[:, None, :]  # side is |edge| * distance: compare against |edge|² * eps
    return (side >= -_EPS * scale).all(dim=2)


def _corners_intersection(ca: Tensor, cb: Tensor) -> Tensor:
    """Intersection areas ``(P,)`` of convex CCW quads ``ca, cb (P, 4, 2)``.

    The intersection polygon is the convex hull of the corners of each quad inside the other and the
    edge-edge crossings; its vertices are ordered by angle around their mean and summed by the shoelace
    formula (duplicates contribute nothing).
    """
    p = ca.shape[0]
    if p == 0:
        return ca.new_zeros(0)
    ea = _next_corner(ca) - ca  # (P, 4, 2)
    eb = _next_corner(cb) - cb
    # Segment a_i + t ea_i against b_j + u eb_j, (P, 4, 4).
    rx = ea[:, :, None, 0]
    ry = ea[:, :, None, 1]
    sx = eb[:, None, :, 0]
    sy = eb[:, None, :, 1]
    qx = cb[:, None, :, 0] - ca[:, :, None, 0]
    qy = cb[:, None, :, 1] - ca[:, :, None, 1]
    den = _cross(rx, ry, sx, sy)
    ok_den = den.abs() > 1e-12 * torch.sqrt((rx.square() + ry.square()) * (sx.square() + sy.square()))
    safe = torch.where(ok_den, den, torch.ones_like(den))
    t = _cross(qx, qy, sx, sy) / safe
    u = _cross(qx, qy, rx, ry) / safe
    hit = ok_den & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    ix = ca[:, :, None, 0] + t * rx
    iy = ca[:, :, None, 1] + t * ry
    pts = torch.cat([ca, cb, torch.stack([ix, iy], dim=-1).reshape(p, 16, 2)], dim=1)  # (P, 24, 2)
    valid = torch.cat([_inside(ca, cb), _inside(cb, ca), hit.reshape(p, 16)], dim=1)  # (P, 24)
    count = valid.sum(dim=1)
    vf = valid.to(pts.dtype)
    centre = (pts * vf[..., None]).sum(dim=1) / count.clamp_min(1)[:, None].to(pts.dtype)
    rel = pts - centre[:, None, :]
    ang = torch.atan2(rel[..., 1], rel[..., 0])
    ang = torch.where(valid, ang, torch.full_like(ang, math.inf))
    order = ang.argsort(dim=1)
    rel = rel.gather(1, order[..., None].expand(-1, -1, 2))
    valid = valid.gather(1, order)
    # Invalid slots (sorted last) repeat the first vertex, which closes the polygon with zero-area terms.
    rel = torch.where(valid[..., None], rel, rel[:, :1, :])
    nxt = _next_corner(rel)
    area = 0.5 * _cross(rel[..., 0], rel[..., 1], nxt[..., 0], nxt[..., 1]).sum(dim=1)
    return torch.where(count >= 3, area.clamp_min(0.0), torch.zeros_like(area))


def rotated_bev_intersection_pairs(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """BEV intersection areas ``(P,)`` of box pairs ``boxes_a[i]``, ``boxes_b[i]`` (LiDAR ``(P, 7)`` or
    rectangles ``(P, 5)`` ``[x, y, dx, dy, heading]``), computed in float64 relative to the first box's
    centre, returned in the input dtype. Coincident boxes give exactly their area."""
    a = _bev_rects(boxes_a)
    b = _bev_rects(boxes_b)
    if a.shape != b.shape:
        raise ValueError(f"pair counts differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a64 = a.double()
    b64 = b.double()
    origin = a64[:, :2]
    a_loc = torch.cat([a64[:, :2] - origin, a64[:, 2:]], dim=1)
    b_loc = torch.cat([b64[:, :2] - origin, b64[:, 2:]], dim=1)
    area_a = a64[:, 2] * a64[:, 3]
    area_b = b64[:, 2] * b64[:, 3]
    inter = _corners_intersection(_corners(a_loc), _corners(b_loc))
    same = (a64 == b64).all(dim=1)
    inter = torch.where(same, area_a, inter)
    inter = torch.minimum(inter, torch.minimum(area_a, area_b))
    inter = torch.where((area_a > 0) & (area_b > 0), inter, torch.zeros_like(inter))
    return inter.to(a.dtype)


def rotated_bev_iou_pairs(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Rotated BEV IoU ``(P,)`` of box pairs (see :func:`rotated_bev_intersection_pairs`); 0 when the
    union is 0. Consistent with :func:`hrnas.tasks.kitti.iou.rotated_iou_pairs` to float64 rounding."""
    a = _bev_rects(boxes_a).double()
    b = _bev_rects(boxes_b).double()
    inter = rotated_bev_intersection_pairs(a, b)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1e-300), torch.zeros_like(inter))
    return iou.clamp(0.0, 1.0).to(boxes_a.dtype)


def _aabb(corners: Tensor) -> tuple[Tensor, Tensor]:
    return corners.amin(dim=1), corners.amax(dim=1)


def rotated_bev_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Rotated BEV IoU matrix ``(N, M)``; pairs whose axis-aligned bounds do not overlap are 0 without
    clipping. Dense in ``N·M`` memory: for NMS use :func:`rotated_nms`."""
    a = _bev_rects(boxes_a).double()
    b = _bev_rects(boxes_b).double()
    lo_a, hi_a = _aabb(_corners(a))
    lo_b, hi_b = _aabb(_corners(b))
    overlap = ((hi_a[:, None, :] > lo_b[None, :, :]) & (hi_b[None, :, :] > lo_a[:, None, :])).all(dim=-1)
    i, j = torch.nonzero(overlap, as_tuple=True)
    out = a.new_zeros(a.shape[0], b.shape[0])
    if i.numel():
        out[i, j] = rotated_bev_iou_pairs(a[i], b[j])
    return out.to(boxes_a.dtype)


# --------------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------------


def _aabb_overlap(lo: Tensor, hi: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``(N, M)`` whether the axis-aligned bounds of boxes ``a (N,)`` and ``b (M,)`` overlap with positive
    extent; ``lo, hi`` are ``(2, K)`` (rows x and y)."""
    lo_a, hi_a = lo[:, a, None], hi[:, a, None]
    lo_b, hi_b = lo[:, None, b], hi[:, None, b]
    out = hi_a[0] > lo_b[0]
    out &= hi_b[0] > lo_a[0]
    out &= hi_a[1] > lo_b[1]
    out &= hi_b[1] > lo_a[1]
    return out


def _lens_area(d: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
    """Intersection area of discs of radii ``r1, r2`` whose centres are ``d`` apart."""
    small = torch.minimum(r1, r2)
    full = math.pi * small.square()
    dd = d.clamp_min(1e-300)
    c1 = ((d.square() + r1.square() - r2.square()) / (2 * dd * r1.clamp_min(1e-300))).clamp(-1, 1)
    c2 = ((d.square() + r2.square() - r1.square()) / (2 * dd * r2.clamp_min(1e-300))).clamp(-1, 1)
    kite = ((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)).clamp_min(0)
    part = r1.square() * torch.acos(c1) + r2.square() * torch.acos(c2) - 0.5 * torch.sqrt(kite)
    out = torch.where(d <= (r1 - r2).abs(), full, part)
    return torch.where(d >= r1 + r2, torch.zeros_like(out), out.clamp(min=0).minimum(full))


def _long_axis(c: Tensor, s: Tensor, half_l: Tensor, half_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit vector along the longer side of rectangles with heading ``(cos, sin) = (c, s)`` and the half
    length of their mid-axis segment, ``|half_l - half_w|``."""
    along_l = half_l >= half_w
    return torch.where(along_l, c, -s), torch.where(along_l, s, c), (half_l - half_w).abs()


def _overlap_bounds(a: Tensor, b: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """Cheap certain decisions for rectangle pairs ``a, b (P, 5)`` (positive areas): ``(above, below)``
    where ``above`` means IoU ``> iou_threshold`` for sure and ``below`` means IoU ``<= iou_threshold``
    for sure. Pairs in neither need the exact IoU.

    ``below``: a separating axis among the four edge normals (then the intersection is 0), or an upper
    bound of the intersection (the other box's extent along each box's axes) small enough; margins
    guard against rounding. ``above``: the intersection is at least that of two discs inscribed in the
    boxes, and ``I / (A + B - I)`` grows with ``I``; a relative margin guards against rounding.
    """
    dx = b[:, 0] - a[:, 0]
    dy = b[:, 1] - a[:, 1]
    ca, sa = torch.cos(a[:, 4]), torch.sin(a[:, 4])
    cb, sb = torch.cos(b[:, 4]), torch.sin(b[:, 4])
    cos_d = (ca * cb + sa * sb).abs()
    sin_d = (sa * cb - ca * sb).abs()
    hla, hwa, hlb, hwb = a[:, 2] / 2, a[:, 3] / 2, b[:, 2] / 2, b[:, 3] / 2
    margin = 1e-9 * (hla + hwa + hlb + hwb)
    # Per edge normal: distance of the centres along it, the box's own half extent, the other's.
    dist = torch.stack([dx * ca + dy * sa, dy * ca - dx * sa, dx * cb + dy * sb, dy * cb - dx * sb]).abs()
    own = torch.stack([hla, hwa, hlb, hwb])
    other = torch.stack(
        [hlb * cos_d + hwb * sin_d, hlb * sin_d + hwb * cos_d, hla * cos_d + hwa * sin_d, hla * sin_d + hwa * cos_d]
    )
    below = (dist - own - other > margin).any(dim=0)
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    # The intersection lies in each box's part covered by the other's extent along that box's axes.
    width = (torch.minimum(own, dist + other) - torch.maximum(-own, dist - other)).clamp_min(0)
    upper = torch.minimum(width[0] * width[1], width[2] * width[3])
    upper = upper * (1 + 1e-9) + 1e-9 * (area_a + area_b)
    below |= upper <= iou_threshold * (area_a + area_b - upper)
    # Each rectangle contains every disc of radius min(l, w) / 2 centred on its mid-axis segment (along
    # the longer side). Pick one disc per box near the other box and use the overlap of the two discs.
    ua_x, ua_y, sa_half = _long_axis(ca, sa, hla, hwa)
    ub_x, ub_y, sb_half = _long_axis(cb, sb, hlb, hwb)
    ta = (dx * ua_x + dy * ua_y).clamp(-sa_half, sa_half)  # a's disc centre: a + ta ua
    tb = ((ta * ua_x - dx) * ub_x + (ta * ua_y - dy) * ub_y).clamp(-sb_half, sb_half)  # b's: b + tb ub
    ta = ((dx + tb * ub_x) * ua_x + (dy + tb * ub_y) * ua_y).clamp(-sa_half, sa_half)
    gx = dx + tb * ub_x - ta * ua_x
    gy = dy + tb * ub_y - ta * ua_y
    lens = _lens_area(torch.sqrt(gx.square() + gy.square()), torch.minimum(hla, hwa), torch.minimum(hlb, hwb))
    # The margin covers the disc formula's rounding near tangency (acos loses half the digits there).
    above = lens * (1 - 1e-9) > iou_threshold * (area_a + area_b - lens) + 1e-6 * (area_a + area_b)
    return above & ~below, below


def rotated_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.01, max_output: int | None = None) -> Tensor:
    """Greedy class-agnostic NMS by exact rotated BEV IoU.

    Args:
        boxes: ``(K, 7)`` LiDAR boxes (or ``(K, 5)`` rectangles ``[x, y, dx, dy, heading]``), finite.
        scores: ``(K,)``; higher first (ties in input order).
        iou_threshold: a box is suppressed by a kept higher-scored box when their IoU is ``> iou_threshold``.
        max_output: keep at most this many (the first ones of the greedy order).

    Returns:
        int64 indices into ``boxes`` of the kept boxes, in descending score order; on ``boxes.device``.
    """
    rects = _bev_rects(boxes)
    if scores.shape != rects.shape[:1]:
        raise ValueError(f"rotated_nms: scores must be ({rects.shape[0]},), got {tuple(scores.shape)}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"rotated_nms: iou_threshold must be in [0, 1], got {iou_threshold}")
    k = rects.shape[0]
    dev = rects.device
    limit = k if max_output is None else min(k, max_output)
    if k == 0 or limit <= 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    if not bool(torch.isfinite(rects).all()):
        raise ValueError("rotated_nms: boxes must be finite")
    order = torch.sort(scores, descending=True, stable=True).indices
    r = rects[order].double()
    corners = _corners(r)
    area = r[:, 2] * r[:, 3]
    lo, hi = _aabb(corners)
    # Bounds are only a filter before exact tests, so float32 rounded outwards is enough, and faster.
    lo = torch.nextafter(lo.float(), lo.new_tensor(-math.inf, dtype=torch.float32)).T.contiguous()
    hi = torch.nextafter(hi.float(), hi.new_tensor(math.inf, dtype=torch.float32)).T.contiguous()
    # Empty rectangles have IoU 0 with everything: never suppressed, never suppressing.
    alive = area > 0
    kept = ~alive
    while True:
        alive_idx = torch.nonzero(alive).flatten()  # ranks, ascending
        if alive_idx.numel() == 0 or int(kept[: int(alive_idx[0])].sum()) >= limit:
            break  # every box ranked before the first alive one is decided
        # Keep the boxes of the window that no alive, higher-ranked box could still suppress.
        win = alive_idx[:_WINDOW]
        pair = _aabb_overlap(lo, hi, win, win).triu_(diagonal=1)
        new = win[~pair.any(dim=0)]
        kept[new] = True
        alive[new] = False
        # Suppress the alive, lower-ranked boxes they overlap.
        cand = torch.nonzero(alive).flatten()
        if cand.numel() == 0 or int(kept[: int(cand[0])].sum()) >= limit:
            break
        hit = _aabb_overlap(lo, hi, new, cand)
        hit &= cand[None, :] > new[:, None]
        pi, pj = torch.nonzero(hit, as_tuple=True)
        if pi.numel() == 0:
            continue
        ia, ib = new[pi], cand[pj]
        above, below = _overlap_bounds(r[ia], r[ib], iou_threshold)
        unsure = torch.nonzero(~(above | below)).flatten()
        if unsure.numel():
            ua, ub = ia[unsure], ib[unsure]
            inter = _corners_intersection(corners[ua], corners[ub])
            above[unsure] = inter > iou_threshold * (area[ua] + area[ub] - inter)
        alive[ib[above]] = False
    keep_ranks = torch.nonzero(kept).flatten()[:limit]
    return order[keep_ranks]


# --------------------------------------------------------------------------------------------------
# Decoding and post-processing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostProcessConfig:
    """Reference post-processing (``pointpillar.yaml`` ``POST_PROCESSING``)."""

    score_threshold: float = 0.1
    nms_pre_max: int = 4096
    nms_iou_threshold: float = 0.01
    nms_post_max: int = 500
    direction: DirectionConfig = DirectionConfig()
    coder: ResidualCoder = ResidualCoder()


class Detections(NamedTuple):
    """Detections of one frame, in descending score order: LiDAR ``boxes (D, 7)``, ``scores (D,)``
    (sigmoid probability of ``labels``), ``labels (D,)`` int64 in ``1..K``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


def _decode(
    deltas: Tensor, dir_logits: Tensor | None, anchors: Tensor, coder: ResidualCoder, direction: DirectionConfig
) -> Tensor:
    boxes = coder.decode(deltas, anchors)
    if dir_logits is None:
        return boxes
    labels = dir_logits.argmax(dim=-1).to(boxes.dtype)
    rot = limit_period(boxes[..., 6] - direction.offset, direction.limit_offset, direction.period)
    heading = rot + direction.offset + direction.period * labels
    return torch.cat([boxes[..., :6], heading[..., None]], dim=-1)


def decode_boxes(
    preds: HeadOutput,
    anchors: Tensor,
    coder: ResidualCoder = _CODER,
    direction: DirectionConfig = _DIRECTION,
) -> Tensor:
    """Boxes ``(B, N, 7)`` from the head's residuals against ``anchors`` (flattening to ``(N, 7)``).

    With a direction classifier the heading becomes
    ``limit_period(θ - offset, limit_offset, period) + offset + period · argmax(dir_logits)``, i.e. in
    ``[offset, offset + 2π)`` for 2 bins.
    """
    anchors = anchors.reshape(-1, anchors.shape[-1]).to(preds.box_deltas.dtype)
    return _decode(preds.box_deltas, preds.dir_logits, anchors[None], coder, direction)


@torch.no_grad()
def postprocess(
    preds: HeadOutput, anchors: Tensor, config: PostProcessConfig = PostProcessConfig()
) -> list[Detections]:
    """Detections per frame: best class by sigmoid score, keep ``score >= score_threshold``, the top
    ``nms_pre_max``, decode them (:func:`decode_boxes`; only the selected anchors, which gives the same
    boxes), class-agnostic :func:`rotated_nms`, at most ``nms_post_max``. Boxes whose decoded values are
    not finite (a diverged network) are dropped before the NMS. Never mutates ``preds``."""
    anchors = anchors.reshape(-1, anchors.shape[-1]).to(preds.box_deltas.dtype)
    probs = torch.sigmoid(preds.cls_logits.float())
    scores, labels = probs.max(dim=-1)
    out = []
    for b in range(scores.shape[0]):
        cand = torch.nonzero(scores[b] >= config.score_threshold).flatten()
        s = scores[b, cand]
        if s.numel() > config.nms_pre_max:
            s, top = torch.topk(s, config.nms_pre_max)
            cand = cand[top]
        dirs = preds.dir_logits[b, cand] if preds.dir_logits is not None else None
        boxes = _decode(preds.box_deltas[b, cand], dirs, anchors[cand], config.coder, config.direction)
        finite = torch.isfinite(boxes).all(dim=-1)
        if not bool(finite.all()):
            cand, s, boxes = cand[finite], s[finite], boxes[finite]
        keep = rotated_nms(boxes, s, config.nms_iou_threshold, config.nms_post_max)
        out.append(Detections(boxes[keep], s[keep], labels[b, cand[keep]] + 1))
    return out


# --------------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------------


def nms_benchmark_boxes(num_boxes: int = 4096, num_objects: int = 60, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Synthetic pre-NMS detections of one frame: ``num_boxes`` LiDAR boxes ``(num_boxes, 7)`` and scores,
    clustered like a detector's output: ``num_objects`` car/pedestrian/cyclist-sized objects in the KITTI
    range, each surrounded by jittered duplicates (position σ 0.4 m, size ±10 %, heading σ 0.15 rad, some
    flipped by π), plus 10 % scattered low-score boxes."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([[3.9, 1.6, 1.56], [0.8, 0.6, 1.73], [1.76, 0.6, 1.73]])
    cls = torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), num_objects, replacement=True, generator=g)
    centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([69.12, 79.36]) + torch.tensor([0.0, -39.68])
    heading = (torch.rand(num_objects, generator=g) * 2 - 1) * math.pi
    n_scatter = num_boxes // 10
    n_cluster = num_boxes - n_scatter
    obj = torch.randint(0, num_objects, (n_cluster,), generator=g)
    xy = centres[obj] + 0.4 * torch.randn(n_cluster, 2, generator=g)
    dims = sizes[cls[obj]] * (1 + 0.1 * (torch.rand(n_cluster, 3, generator=g) * 2 - 1))
    flip = (torch.rand(n_cluster, generator=g) < 0.2).float() * math.pi
    yaw = heading[obj] + 0.15 * torch.randn(n_cluster, generator=g) + flip
    z = torch.full((n_cluster, 1), -1.0)
    clustered = torch.cat([xy, z, dims, yaw[:, None]], dim=1)
    sxy = torch.rand(n_scatter, 2, generator=g) * torch.tensor([69.12, 79.36]) + torch.tensor([0.0, -39.68])
    sdims = sizes[torch.randint(0, 3, (n_scatter,), generator=g)]
    syaw = (torch.rand(n_scatter, 1, generator=g) * 2 - 1) * math.pi
    scattered = torch.cat([sxy, torch.full((n_scatter, 1), -1.0), sdims, syaw], dim=1)
    boxes = torch.cat([clustered, scattered])
    scores = torch.cat([0.1 + 0.9 * torch.rand(n_cluster, generator=g), 0.1 + 0.2 * torch.rand(n_scatter, generator=g)])
    return boxes, scores


def time_nms(
    num_boxes: int = 4096,
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
    iou_threshold: float = 0.01,
    max_output: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Time :func:`rotated_nms` on :func:`nms_benchmark_boxes` (``num_boxes`` boxes on ``device``).

    Returns ``{"boxes", "kept", "median_ms", "min_ms"}``; the median is over ``repeats`` runs after
    ``warmup`` untimed ones. Uses the current ``torch.get_num_threads()``.
    """
    boxes, scores = nms_benchmark_boxes(num_boxes, seed=seed)
    boxes, scores = boxes.to(device), scores.to(device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        keep = rotated_nms(boxes, scores, iou_threshold, max_output)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        keep = rotated_nms(boxes, scores, iou_threshold, max_output)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "boxes": float(num_boxes),
        "kept": float(keep.numel()),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
    }
