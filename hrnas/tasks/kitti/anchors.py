"""Anchors, training targets and box coding of the PointPillars anchor head (kitti-spec §2.6, §2.8–§2.10).

LiDAR boxes are ``[x, y, z, dx, dy, dz, heading]`` (geometric centre, metres, heading in radians
counter-clockwise about +z), as in :mod:`hrnas.tasks.kitti.boxes`.

**Anchor layout.** :func:`generate_anchors` returns ``(H, W, C, R, 7)`` for a feature map of ``H`` rows (y)
and ``W`` columns (x), ``C`` anchor classes and ``R`` rotations per class. Flattened with
``.reshape(-1, 7)`` the anchor index is ``((y * W + x) * C + c) * R + r``, which is the order of the head's
per-location channels (:class:`hrnas.tasks.kitti.head.AnchorHead`).

**Assignment** (:func:`assign_targets`) follows OpenPCDet's ``AxisAlignedTargetAssigner``: per class, the
anchors of that class against the ground truths of that class, by the IoU of their *nearest axis-aligned*
BEV rectangles; labels are ``-1`` ignored, ``0`` background, ``1..C`` the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "KITTI_ANCHOR_CLASSES",
    "AnchorClassConfig",
    "AnchorConfig",
    "DirectionConfig",
    "ResidualCoder",
    "Targets",
    "assign_targets",
    "assign_targets_batch",
    "direction_targets",
    "generate_anchors",
    "limit_period",
    "nearest_bev_iou",
]


def limit_period(value: Tensor, offset: float = 0.5, period: float = math.pi) -> Tensor:
    """``value - floor(value / period + offset) * period``: in ``[-offset * period, (1 - offset) * period)``."""
    return value - torch.floor(value / period + offset) * period


@dataclass(frozen=True)
class AnchorClassConfig:
    """Anchors and matching thresholds of one class.

    ``size`` is ``(dx, dy, dz)`` in metres; ``bottom_z`` the anchor's bottom height (its centre is at
    ``bottom_z + dz / 2``); ``rotations`` the headings in radians (OpenPCDet's config writes ``1.57``,
    not ``pi / 2``; kept for parity); anchors with a nearest-BEV IoU ``>= matched_threshold`` are positive,
    ``< unmatched_threshold`` background, in between ignored.
    """

    name: str
    size: tuple[float, float, float]
    bottom_z: float
    matched_threshold: float
    unmatched_threshold: float
    rotations: tuple[float, ...] = (0.0, 1.57)

    def __post_init__(self) -> None:
        if len(self.size) != 3 or min(self.size) <= 0:
            raise ValueError(f"anchor class {self.name!r}: size must be 3 positive values, got {self.size}")
        if not self.rotations:
            raise ValueError(f"anchor class {self.name!r}: rotations must not be empty")
        if not 0 <= self.unmatched_threshold <= self.matched_threshold <= 1:
            raise ValueError(
                f"anchor class {self.name!r}: need 0 <= unmatched_threshold <= matched_threshold <= 1, "
                f"got {self.unmatched_threshold} / {self.matched_threshold}"
            )


KITTI_ANCHOR_CLASSES: tuple[AnchorClassConfig, ...] = (
    AnchorClassConfig("Car", (3.9, 1.6, 1.56), -1.78, 0.6, 0.45),
    AnchorClassConfig("Pedestrian", (0.8, 0.6, 1.73), -0.6, 0.5, 0.35),
    AnchorClassConfig("Cyclist", (1.76, 0.6, 1.73), -0.6, 0.5, 0.35),
)
"""OpenPCDet ``pointpillar.yaml`` anchors; class ``i`` has label ``i + 1``."""


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor grid over ``point_cloud_range = (x_min, y_min, z_min, x_max, y_max, z_max)``.

    With ``align_center=False`` (the reference) the anchor centres span the range inclusively:
    ``x_k = x_min + k (x_max - x_min) / (W - 1)``; with ``True`` they sit at feature-cell centres.
    """

    classes: tuple[AnchorClassConfig, ...] = KITTI_ANCHOR_CLASSES
    point_cloud_range: tuple[float, float, float, float, float, float] = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
    align_center: bool = False

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("anchor config: classes must not be empty")
        r = self.point_cloud_range
        if len(r) != 6 or r[3] <= r[0] or r[4] <= r[1]:
            raise ValueError(
                f"anchor config: point_cloud_range must be (x0, y0, z0, x1, y1, z1) with x1>x0, y1>y0: {r}"
            )
        counts = {len(c.rotations) for c in self.classes}
        if len(counts) != 1:
            raise ValueError(f"anchor config: every class needs the same number of rotations, got {sorted(counts)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_rotations(self) -> int:
        return len(self.classes[0].rotations)

    @property
    def num_anchors_per_location(self) -> int:
        return self.num_classes * self.num_rotations


def _centres(lo: float, hi: float, n: int, align_center: bool) -> Tensor:
    if align_center:
        step = (hi - lo) / n
        return lo + step / 2 + torch.arange(n, dtype=torch.float64) * step
    step = (hi - lo) / max(n - 1, 1)
    return lo + torch.arange(n, dtype=torch.float64) * step


def generate_anchors(
    config: AnchorConfig,
    feature_size: tuple[int, int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anchors ``(H, W, C, R, 7)`` for a feature map of ``feature_size = (H, W)`` (rows along y, columns
    along x), e.g. ``(248, 216)`` for the 496×432 pillar grid at stride 2.

    Entry ``[y, x, c, r]`` is ``[x_x, y_y, bottom_z_c + dz_c / 2, dx_c, dy_c, dz_c, rotation_{c,r}]``.
    """
    h, w = feature_size
    if h < 1 or w < 1:
        raise ValueError(f"generate_anchors: feature_size must be positive, got {feature_size}")
    r = config.point_cloud_range
    xs = _centres(r[0], r[3], w, config.align_center)
    ys = _centres(r[1], r[4], h, config.align_center)
    c, n_rot = config.num_classes, config.num_rotations
    sizes = torch.tensor([k.size for k in config.classes], dtype=torch.float64)
    z = torch.tensor([k.bottom_z + k.size[2] / 2 for k in config.classes], dtype=torch.float64)
    rot = torch.tensor([k.rotations for k in config.classes], dtype=torch.float64)
    out = torch.empty(h, w, c, n_rot, 7, dtype=torch.float64)
    out[..., 0] = xs.view(1, w, 1, 1)
    out[..., 1] = ys.view(h, 1, 1, 1)
    out[..., 2] = z.view(1, 1, c, 1)
    out[..., 3:6] = sizes.view(1, 1, c, 1, 3)
    out[..., 6] = rot.view(1, 1, c, n_rot)
    return out.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Box coding and direction targets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidualCoder:
    """OpenPCDet ``ResidualCoder`` (code size 7, heading not sin/cos encoded).

    With the anchor's BEV diagonal ``d = sqrt(dxa² + dya²)``: ``Δx = (xg - xa) / d``, ``Δy = (yg - ya) / d``,
    ``Δz = (zg - za) / dza``, ``Δdx = log(dxg / dxa)`` (likewise dy, dz), ``Δθ = θg - θa`` (not wrapped).
    Sizes are clamped to ``>= size_eps`` before encoding. Inputs are not mutated.
    """

    size_eps: float = 1e-5
    code_size: int = 7

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Residuals ``(..., 7)`` of ``boxes`` relative to ``anchors`` (both ``(..., 7)``, broadcastable)."""
        xa, ya, za, dxa, dya, dza, ra = anchors.unbind(-1)
        xg, yg, zg, dxg, dyg, dzg, rg = boxes.unbind(-1)
        dxa, dya, dza = (t.clamp_min(self.size_eps) for t in (dxa, dya, dza))
        dxg, dyg, dzg = (t.clamp_min(self.size_eps) for t in (dxg, dyg, dzg))
        diag = torch.sqrt(dxa**2 + dya**2)
        return torch.stack(
            [
                (xg - xa) / diag,
                (yg - ya) / diag,
                (zg - za) / dza,
                torch.log(dxg / dxa),
                torch.log(dyg / dya),
                torch.log(dzg / dza),
                rg - ra,
            ],
            dim=-1,
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes ``(..., 7)`` from residuals ``deltas`` and ``anchors`` (both ``(..., 7)``, broadcastable);
        the exact inverse of :meth:`encode` for sizes ``>= size_eps``."""
        xa, ya, za, dxa, dya, dza, ra = anchors.unbind(-1)
        xt, yt, zt, dxt, dyt, dzt, rt = deltas.unbind(-1)
        dxa, dya, dza = (t.clamp_min(self.size_eps) for t in (dxa, dya, dza))
        diag = torch.sqrt(dxa**2 + dya**2)
        return torch.stack(
            [
                xt * diag + xa,
                yt * diag + ya,
                zt * dza + za,
                torch.exp(dxt) * dxa,
                torch.exp(dyt) * dya,
                torch.exp(dzt) * dza,
                rt + ra,
            ],
            dim=-1,
        )


@dataclass(frozen=True)
class DirectionConfig:
    """Direction classifier: ``num_bins`` bins of the heading, shifted by ``offset`` (OpenPCDet
    ``DIR_OFFSET 0.78539``, i.e. π/4 as written in its config) and ``limit_offset`` (``DIR_LIMIT_OFFSET``)."""

    num_bins: int = 2
    offset: float = 0.78539
    limit_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"direction config: num_bins must be >= 1, got {self.num_bins}")

    @property
    def period(self) -> float:
        return 2 * math.pi / self.num_bins


def direction_targets(anchors: Tensor, box_targets: Tensor, config: DirectionConfig = DirectionConfig()) -> Tensor:
    """Direction bins ``(..., N)`` (int64 in ``[0, num_bins)``) of the headings ``anchor + Δθ`` encoded in
    ``box_targets (..., N, 7)`` against ``anchors (N, 7)``:
    ``floor(limit_period(θ - offset, 0, 2π) / (2π / num_bins))``, clamped."""
    heading = box_targets[..., 6] + anchors[..., 6]
    shifted = limit_period(heading - config.offset, 0.0, 2 * math.pi)
    bins = torch.floor(shifted / config.period).long()
    return bins.clamp(0, config.num_bins - 1)


# --------------------------------------------------------------------------------------------------
# Target assignment
# --------------------------------------------------------------------------------------------------


def _aligned_bev(boxes: Tensor) -> Tensor:
    """``(N, 4)`` ``[x1, y1, x2, y2]`` of the nearest axis-aligned rectangle: dx and dy swap when the
    heading is nearer to ±π/2 than to 0 or π."""
    rot = limit_period(boxes[:, 6], 0.5, math.pi).abs()
    dims = torch.where((rot < math.pi / 4)[:, None], boxes[:, [3, 4]], boxes[:, [4, 3]])
    return torch.cat([boxes[:, 0:2] - dims / 2, boxes[:, 0:2] + dims / 2], dim=1)


def nearest_bev_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """IoU matrix ``(N, M)`` of the nearest axis-aligned BEV rectangles of LiDAR boxes ``(N, 7)`` and
    ``(M, 7)`` (OpenPCDet ``boxes3d_nearest_bev_iou``; the union is clamped to ``>= 1e-6``)."""
    a, b = _aligned_bev(boxes_a), _aligned_bev(boxes_b)
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_min(0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-6)


class Targets(NamedTuple):
    """Training targets of one frame (``N`` anchors) or a batch (leading ``B``).

    ``labels``: int64 ``(N,)``, ``-1`` ignored, ``0`` background, ``1..C`` class; ``box_targets``:
    ``(N, 7)`` residuals of the matched ground truth for positives, zeros elsewhere; ``gt_index``: int64
    ``(N,)`` index of the matched ground-truth row for positives, ``-1`` elsewhere.
    """

    labels: Tensor
    box_targets: Tensor
    gt_index: Tensor


def _assign_one_class(anchors: Tensor, gt: Tensor, matched: float, unmatched: float) -> tuple[Tensor, Tensor]:
    """Match ``anchors (N, 7)`` of one class against its ``gt (M, 7)``, ``M >= 1``.

    Returns ``state`` (int64 ``(N,)``: 1 positive, 0 background, -1 ignored) and ``argmax`` (``(N,)``
    local index of each anchor's highest-IoU gt).
    """
    n = anchors.shape[0]
    iou = nearest_bev_iou(anchors, gt)
    anchor_max, anchor_argmax = iou.max(dim=1)
    gt_max = iou.max(dim=0).values
    # A gt with no overlap at all is not forced onto an anchor.
    gt_max = torch.where(gt_max == 0, torch.full_like(gt_max, -1.0), gt_max)
    forced = (iou == gt_max[None, :]).any(dim=1)
    state = torch.full((n,), -1, dtype=torch.int64, device=anchors.device)
    state[anchor_max < unmatched] = 0
    state[anchor_max >= matched] = 1
    state[forced] = 1
    return state, anchor_argmax


def assign_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    config: AnchorConfig = AnchorConfig(),
    coder: ResidualCoder = ResidualCoder(),
) -> Targets:
    """Targets of one frame.

    Args:
        anchors: ``(H, W, C, R, 7)`` from :func:`generate_anchors` with the same ``config``.
        gt_boxes: ``(M, 7)`` LiDAR boxes; ``M`` may be 0.
        gt_labels: ``(M,)`` integer labels in ``1..C``; rows with label ``<= 0`` (padding) are ignored.

    For each class ``c`` separately, anchors of class ``c`` are matched to the ground truths of class
    ``c`` by :func:`nearest_bev_iou`: every anchor whose IoU equals a ground truth's maximum (ties
    included; not if that maximum is 0) is positive, as is every anchor with IoU ``>= matched_threshold``;
    the others are background if their IoU is ``< unmatched_threshold``, else ignored. A positive anchor is
    regressed to the ground truth of its own highest IoU (first on ties), also when it was forced by
    another. Classes without ground truth make all their anchors background.
    """
    if anchors.dim() != 5 or anchors.shape[2] != config.num_classes or anchors.shape[-1] != 7:
        raise ValueError(
            f"assign_targets: anchors must be (H, W, {config.num_classes}, R, 7), got {tuple(anchors.shape)}"
        )
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 7 or gt_labels.shape != gt_boxes.shape[:1]:
        raise ValueError(
            f"assign_targets: gt_boxes must be (M, 7) and gt_labels (M,), got {tuple(gt_boxes.shape)} / "
            f"{tuple(gt_labels.shape)}"
        )
    h, w, c, r, _ = anchors.shape
    labels = torch.zeros(h * w, c, r, dtype=torch.int64, device=anchors.device)
    gt_index = torch.full((h * w, c, r), -1, dtype=torch.int64, device=anchors.device)
    gt_boxes = gt_boxes.to(anchors.dtype)
    for k, cls in enumerate(config.classes):
        sel = torch.nonzero(gt_labels == k + 1).flatten()
        if sel.numel() == 0:
            continue
        class_anchors = anchors[:, :, k].reshape(-1, 7)
        state, argmax = _assign_one_class(class_anchors, gt_boxes[sel], cls.matched_threshold, cls.unmatched_threshold)
        state = state.view(h * w, r)
        labels[:, k] = torch.where(state > 0, torch.full_like(state, k + 1), state)
        gt_index[:, k] = torch.where(state > 0, sel[argmax].view(h * w, r), -1)
    labels = labels.reshape(-1)
    gt_index = gt_index.reshape(-1)
    flat_anchors = anchors.reshape(-1, 7)
    box_targets = torch.zeros_like(flat_anchors)
    pos = torch.nonzero(labels > 0).flatten()
    if pos.numel():
        box_targets[pos] = coder.encode(gt_boxes[gt_index[pos]], flat_anchors[pos])
    return Targets(labels, box_targets, gt_index)


def assign_targets_batch(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    config: AnchorConfig = AnchorConfig(),
    coder: ResidualCoder = ResidualCoder(),
) -> Targets:
    """:func:`assign_targets` per frame of zero-padded ``gt_boxes (B, M, 7)`` / ``gt_labels (B, M)``
    (padding label 0); returns ``Targets`` with a leading batch dimension."""
    if gt_boxes.dim() != 3 or gt_labels.shape != gt_boxes.shape[:2]:
        raise ValueError(
            f"assign_targets_batch: gt_boxes must be (B, M, 7) and gt_labels (B, M), got "
            f"{tuple(gt_boxes.shape)} / {tuple(gt_labels.shape)}"
        )
    per_frame = [assign_targets(anchors, b, lab, config, coder) for b, lab in zip(gt_boxes, gt_labels, strict=True)]
    if not per_frame:
        n = anchors.reshape(-1, 7).shape[0]
        return Targets(
            torch.zeros(0, n, dtype=torch.int64, device=anchors.device),
            anchors.new_zeros(0, n, 7),
            torch.zeros(0, n, dtype=torch.int64, device=anchors.device),
        )
    return Targets(*(torch.stack(parts) for parts in zip(*per_frame, strict=True)))
