"""Pillars: hard pillarization of LiDAR points, PillarVFE, and the scatter to a BEV pseudo-image.

The point-to-pseudo-image front end of PointPillars (Lang et al., CVPR 2019) exactly as OpenPCDet runs it
for KITTI (``kitti-spec.md`` §2.1-2.3), in plain PyTorch on any device, without a compiled extension:

1. :func:`pillarize` / :func:`pillarize_batch` group points into vertical pillars with spconv's
   first-come rule: pillars are numbered in the order of their first point, a new pillar beyond the cap is
   dropped with all its points, and a pillar keeps its first ``max_points_per_pillar`` points in input
   order. So the input order (the training shuffle) decides what is dropped.
2. :class:`PillarVFE` turns each pillar's points into one feature vector (a one-layer PointNet).
3. :func:`scatter_to_bev` writes the pillar vectors into a dense ``(B, C, ny, nx)`` canvas.

All values (range, pillar size, caps) come from a :class:`PillarConfig`; its defaults are OpenPCDet's
``pointpillar.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["PillarConfig", "PillarVFE", "Pillars", "pillarize", "pillarize_batch", "scatter_to_bev"]


@dataclass(frozen=True)
class PillarConfig:
    """Pillar grid and caps. Lengths in metres, LiDAR frame (x forward, y left, z up).

    ``point_cloud_range`` is ``(x_min, y_min, z_min, x_max, y_max, z_max)``; a point belongs to cell
    ``floor((p - min) / voxel_size)`` per axis and is kept only if that cell is inside the grid (so the range
    is half-open, ``[min, max)``). ``voxel_size`` is ``(dx, dy, dz)``; with ``dz`` equal to the z extent the
    voxels are pillars. ``num_point_features`` counts the point columns (x, y, z, then extras such as
    reflectance).
    """

    point_cloud_range: tuple[float, float, float, float, float, float] = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
    voxel_size: tuple[float, float, float] = (0.16, 0.16, 4.0)
    max_points_per_pillar: int = 32
    max_pillars_train: int = 16000
    max_pillars_test: int = 40000
    num_point_features: int = 4

    def __post_init__(self) -> None:
        r, v = self.point_cloud_range, self.voxel_size
        if len(r) != 6 or len(v) != 3:
            raise ValueError(
                f"PillarConfig: point_cloud_range needs 6 values and voxel_size 3, got {len(r)} and {len(v)}"
            )
        for axis in range(3):
            if not (math.isfinite(r[axis]) and math.isfinite(r[axis + 3]) and r[axis + 3] > r[axis]):
                raise ValueError(f"PillarConfig.point_cloud_range: axis {'xyz'[axis]} max must exceed min, got {r}")
            if not (math.isfinite(v[axis]) and v[axis] > 0):
                raise ValueError(f"PillarConfig.voxel_size: {'xyz'[axis]} must be > 0, got {v[axis]}")
        for key in ("max_points_per_pillar", "max_pillars_train", "max_pillars_test"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"PillarConfig.{key}: must be >= 1, got {getattr(self, key)}")
        if self.num_point_features < 3:
            raise ValueError(f"PillarConfig.num_point_features: must be >= 3 (x, y, z), got {self.num_point_features}")

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Cells per axis ``(nx, ny, nz)``, ``round((max - min) / voxel_size)`` as OpenPCDet; (432, 496, 1)."""
        r, v = self.point_cloud_range, self.voxel_size
        return tuple(int(round((r[a + 3] - r[a]) / v[a])) for a in range(3))  # type: ignore[return-value]

    def max_pillars(self, training: bool) -> int:
        """The pillar cap of one point cloud: ``max_pillars_train`` or ``max_pillars_test``."""
        return self.max_pillars_train if training else self.max_pillars_test


class Pillars(NamedTuple):
    """Hard pillarization of one or several point clouds.

    * ``voxels``: ``(P, max_points_per_pillar, C)`` point rows in arrival order, zero-padded; dtype of the
      points.
    * ``coords``: ``(P, 3)`` int64 cell indices ``(z, y, x)``, or ``(P, 4)`` ``(batch, z, y, x)`` from
      :func:`pillarize_batch`.
    * ``num_points``: ``(P,)`` int64, kept points per pillar, in ``[1, max_points_per_pillar]``.

    Pillars are ordered by cloud, then by the arrival of their first point.
    """

    voxels: Tensor
    coords: Tensor
    num_points: Tensor


def _check_points(points: Tensor, config: PillarConfig, name: str) -> None:
    c = config.num_point_features
    if points.dim() != 2 or points.shape[1] != c:
        raise ValueError(f"{name}: expected points of shape (N, {c}), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"{name}: expected floating-point points, got {points.dtype}")
    if points.numel() == 0:
        return
    # One min/max pass (NaN propagates into both) is much cheaper than isfinite().all().
    lo, hi = torch.aminmax(points)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        row = int((~torch.isfinite(points).all(dim=1)).nonzero()[0, 0])
        raise ValueError(f"{name}: point {row} is not finite ({points[row].tolist()}); NaN/inf points are rejected")


def _row_elements(t: Tensor) -> Tensor | None:
    """A 1-D view of a contiguous 2-D ``t`` with one element per row, where the row size allows one
    (4, 8 or 16 bytes: a float32 x, y, z, intensity row is one complex128), else None. Gathering or
    scattering rows as single elements is ~10x faster on CPU than row-wise advanced indexing; the bits are
    copied unchanged."""
    if t.device.type not in ("cpu", "cuda") or not t.is_contiguous():
        return None
    as_dtype = {4: torch.int32, 8: torch.int64, 16: torch.complex128}.get(t.shape[1] * t.element_size())
    return None if as_dtype is None else t.view(as_dtype).view(-1)


def _copy_rows(dst: Tensor, dst_rows: Tensor, src: Tensor, src_rows: Tensor) -> None:
    """``dst[dst_rows] = src[src_rows]`` for 2-D tensors of equal row layout. Rows of ``dst`` named more than
    once end up holding one of their sources (the pillarizer's spare row)."""
    d, s = _row_elements(dst), _row_elements(src)
    if d is not None and s is not None:
        d.scatter_(0, dst_rows, s.index_select(0, src_rows))
    else:
        dst.index_copy_(0, dst_rows, src.index_select(0, src_rows))


@torch.no_grad()
def _pillarize(points: Tensor, batch: Tensor | None, batch_size: int, config: PillarConfig, cap: int) -> Pillars:
    """First-come hard pillarization of ``points`` (N, C); ``batch`` (N,) gives each point's cloud, clouds
    concatenated in order (None = one cloud). The cap applies per cloud.

    Sort-based, O(N log N), without Python loops: one stable sort of the points' cell keys groups each
    pillar's points in arrival order, so a point's slot is its sorted position minus its group's start;
    pillars are numbered by the arrival of their first point with a cumulative sum instead of a second sort.
    Uses ``index_select``/``scatter_`` rather than advanced indexing, which is several times slower on CPU.
    """
    points = points.contiguous()  # rows are copied as single elements when contiguous
    device = points.device
    n, n_feat = points.shape
    nx, ny, nz = config.grid_size
    cells = nx * ny * nz
    m_max = config.max_points_per_pillar
    coord_cols = 3 if batch is None else 4
    i64 = torch.int64

    # Cell arithmetic in float32, as spconv does: a float64 range minimum moves points across cell borders.
    # Work on (3, N) rows: column slices of (N, 3) make every elementwise op several times slower.
    lo = torch.tensor(config.point_cloud_range[:3], dtype=torch.float32, device=device).unsqueeze(1)
    size = torch.tensor(config.voxel_size, dtype=torch.float32, device=device).unsqueeze(1)
    grid = torch.tensor((nx, ny, nz), dtype=torch.float32, device=device).unsqueeze(1)
    scaled = torch.empty((3, n), dtype=torch.float32, device=device)
    torch.sub(points[:, :3].t().to(torch.float32), lo, out=scaled).div_(size)
    # floor(s) in [0, n) <=> 0 <= s < n for integer n, and truncation equals floor for s >= 0.
    ok = (scaled >= 0).logical_and_(scaled < grid)
    kept_idx = ok[0].logical_and(ok[1]).logical_and_(ok[2]).nonzero().squeeze(1)  # ascending = arrival order
    m = kept_idx.numel()
    if m == 0:
        return Pillars(
            points.new_zeros((0, m_max, n_feat)),
            torch.zeros((0, coord_cols), dtype=i64, device=device),
            torch.zeros((0,), dtype=i64, device=device),
        )
    # int32 keys sort several times faster on CPU (radix sort); they fit unless the batch is huge.
    key_dtype = torch.int32 if batch_size * cells < 2**31 else i64
    cell = scaled.mul_(ok).to(key_dtype)  # out-of-range cells zeroed so that the cast is defined
    key = cell[2].mul(ny).add_(cell[1]).mul_(nx).add_(cell[0])
    if batch is not None:
        key.add_(batch.to(key_dtype) * cells)
    sorted_key, order = torch.sort(key.index_select(0, kept_idx), stable=True)

    starts_mask = torch.ones(m, dtype=torch.bool, device=device)
    torch.ne(sorted_key[1:], sorted_key[:-1], out=starts_mask[1:])
    starts = starts_mask.nonzero().squeeze(1)  # (G,) first sorted position of each occupied cell
    num_groups = starts.numel()
    group = torch.cumsum(starts_mask, 0).sub_(1)  # (m,) cell group (in key order) of each sorted point
    slot = torch.arange(m, device=device).sub_(starts.index_select(0, group))  # rank in the pillar
    counts = torch.diff(starts, append=starts.new_tensor([m]))

    # Number the groups by the arrival of their first point: stable sort => order[starts] is that point.
    first = order.index_select(0, starts)
    is_first = torch.zeros(m, dtype=i64, device=device).index_fill_(0, first, 1)
    pillar_of_group = torch.cumsum(is_first, 0).sub_(1).index_select(0, first)  # (G,) first-come id
    if batch is None:
        n_pillars = min(num_groups, cap)
    else:
        # Per-cloud cap. Clouds arrive one after another, so first-come ids are cloud-major; renumber
        # the pillars that survive their cloud's cap consecutively and send the others past the end.
        group_cloud = batch.index_select(0, kept_idx.index_select(0, first)).to(i64)
        per_cloud = torch.bincount(group_cloud, minlength=batch_size)
        cloud_start = torch.cumsum(per_cloud, 0) - per_cloud
        survives = pillar_of_group - cloud_start.index_select(0, group_cloud) < cap
        survivors = torch.zeros(num_groups, dtype=i64, device=device).scatter_(0, pillar_of_group, survives.to(i64))
        renumbered = torch.cumsum(survivors, 0).sub_(1).index_select(0, pillar_of_group)
        pillar_of_group = torch.where(survives, renumbered, num_groups)
        n_pillars = int(survivors.sum())
    group_of_pillar = torch.empty(num_groups + 1, dtype=i64, device=device)
    group_of_pillar.scatter_(0, pillar_of_group, torch.arange(num_groups, device=device))
    group_of_pillar = group_of_pillar[:n_pillars]

    pillar = pillar_of_group.index_select(0, group)  # (m,) per sorted point
    dest = pillar.mul(m_max).add_(slot)
    src = kept_idx.index_select(0, order)
    n_slots = n_pillars * m_max
    # Points over a cap go to one spare row past the end (cheaper than compacting dest and src).
    voxels = points.new_zeros((n_slots + 1, n_feat))
    if n_pillars < num_groups or int(counts.max()) > m_max:
        dest.masked_fill_((slot >= m_max).logical_or_(pillar >= n_pillars), n_slots)
    _copy_rows(voxels, dest, points, src)
    voxels = voxels[:n_slots]

    first_point = kept_idx.index_select(0, first.index_select(0, group_of_pillar))  # (P,) row of its 1st point
    cols = [cell[a].index_select(0, first_point) for a in (2, 1, 0)]  # z, y, x
    if batch is not None:
        cols.insert(0, batch.index_select(0, first_point).to(cell.dtype))
    coords = torch.stack(cols, dim=1).to(i64)
    num_points = counts.index_select(0, group_of_pillar).clamp_max_(m_max)
    return Pillars(voxels.view(n_pillars, m_max, n_feat), coords, num_points)


def pillarize(points: Tensor, config: PillarConfig, training: bool = False, name: str = "points") -> Pillars:
    """Hard-pillarize one point cloud ``points`` (N, C) (x, y, z in metres, then C - 3 extra features).

    Points whose cell falls outside the grid are dropped (half-open range, all three axes). At most
    ``config.max_pillars(training)`` pillars and ``config.max_points_per_pillar`` points per pillar are kept,
    first come first served; the result equals spconv's ``Point2VoxelCPU3d`` on the same input. Returns
    :class:`Pillars` with ``(z, y, x)`` coords on the points' device; an empty or fully out-of-range cloud
    gives zero pillars. Raises ``ValueError`` naming ``name`` and the row for a non-finite point, or for
    a wrong shape or dtype. ``points`` is not modified.
    """
    _check_points(points, config, name)
    return _pillarize(points, None, 1, config, config.max_pillars(training))


def pillarize_batch(
    clouds: Sequence[Tensor], config: PillarConfig, training: bool = False, name: str = "points"
) -> Pillars:
    """Hard-pillarize several clouds at once; the same as :func:`pillarize` per cloud (cap per cloud),
    concatenated in cloud order, with coords ``(batch, z, y, x)``. All clouds must be on one device;
    errors name ``name[i]`` for cloud ``i``.
    """
    if len(clouds) == 0:
        raise ValueError(f"{name}: pillarize_batch needs at least one point cloud")
    for i, cloud in enumerate(clouds):
        _check_points(cloud, config, f"{name}[{i}]")
    device = clouds[0].device
    points = torch.cat(list(clouds), dim=0)
    sizes = torch.tensor([c.shape[0] for c in clouds], device=device)
    batch = torch.repeat_interleave(torch.arange(len(clouds), device=device), sizes)
    return _pillarize(points, batch, len(clouds), config, config.max_pillars(training))


class PillarVFE(nn.Module):
    """OpenPCDet ``PillarVFE`` with one PFN layer (``USE_NORM``, ``USE_ABSLOTE_XYZ``, no distance).

    Each point gets ``C + 6`` features (10 for KITTI): its raw ``[x, y, z, extras...]``, its xyz minus the
    mean xyz of its pillar's points, and its xyz minus the pillar's centre. Padded slots are zeroed, then
    Linear(C + 6 -> out, no bias), BatchNorm1d(eps 1e-3, momentum 0.01) over all ``P * M`` slots (padded
    ones included, as in the reference), ReLU and a max over the slots. 768 parameters for KITTI; the
    state-dict keys are ``linear.weight`` and ``norm.*``.

    The computation skips the padded slots instead of running the layer on them: a zeroed slot's linear
    output is exactly 0, so its contribution to the batch statistics is known in closed form and its
    normalised value is the BatchNorm shift. Same function and gradients as the reference (up to float
    rounding), without the ``(P, M, out)`` activations that dominate its cost (~8 padded slots per point).
    """

    def __init__(self, config: PillarConfig, out_channels: int = 64) -> None:
        super().__init__()
        self.config = config
        self.in_features = config.num_point_features + 6
        self.out_channels = out_channels
        self.linear = nn.Linear(self.in_features, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)
        lo, size = config.point_cloud_range[:3], config.voxel_size
        self._size = size
        self._centre_offset = tuple(s / 2 + lo_a for s, lo_a in zip(size, lo, strict=True))

    def forward(self, voxels: Tensor, num_points: Tensor, coords: Tensor) -> Tensor:
        """``voxels`` (P, M, C), ``num_points`` (P,) in ``[1, M]``, ``coords`` (P, 3) ``(z, y, x)`` or (P, 4)
        ``(b, z, y, x)`` -> pillar features (P, out_channels). Whatever sits in the padded slots
        (``slot >= num_points``) has no effect. In training mode the BatchNorm running statistics are
        updated as ``nn.BatchNorm1d`` would on the padded ``(P * M, out)`` activations."""
        p, m_max, c = voxels.shape
        device = voxels.device
        if p == 0:
            return voxels.new_zeros((0, self.out_channels)) + 0 * self.linear.weight.sum()
        num_points = num_points.to(torch.int64)
        # The real points, pillar by pillar in slot order, and the pillar of each.
        valid = (torch.arange(m_max, device=device) < num_points.unsqueeze(1)).view(-1)
        rows = valid.nonzero().squeeze(1)
        flat = voxels.reshape(p * m_max, c)
        pts = torch.empty((rows.numel(), c), dtype=voxels.dtype, device=device)
        _copy_rows(pts, torch.arange(rows.numel(), device=device), flat, rows)
        pillar = rows // m_max

        xyz = pts[:, :3]
        mean = voxels.new_zeros((p, 3)).index_add_(0, pillar, xyz) / num_points.clamp_min(1).unsqueeze(1)
        zyx = coords[:, -3:].to(voxels.dtype)
        centre = torch.stack([zyx[:, 2 - a] * self._size[a] + self._centre_offset[a] for a in range(3)], dim=1)
        offsets = torch.cat([mean, centre], dim=1).index_select(0, pillar)
        features = torch.cat([pts, xyz.repeat(1, 2) - offsets], dim=1)  # (n, C + 6)

        bn = self.norm
        if self.training or bn.running_mean is None:
            y = features @ self.linear.weight.t()
            # Batch statistics over all P * M slots, padded ones contributing y = 0 (two-pass variance).
            n_slots = p * m_max
            batch_mean = y.sum(dim=0) / n_slots
            batch_var = ((y - batch_mean).square().sum(dim=0) + (n_slots - y.shape[0]) * batch_mean.square()) / n_slots
            if self.training and bn.running_mean is not None:
                with torch.no_grad():
                    bn.num_batches_tracked.add_(1)
                    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                    bn.running_mean.lerp_(batch_mean, factor)
                    bn.running_var.lerp_(batch_var * (n_slots / (n_slots - 1)), factor)
            scale = bn.weight * torch.rsqrt(batch_var + bn.eps)
            shift = bn.bias - batch_mean * scale
            y = torch.addcmul(shift, y, scale)
        else:
            # Inference: BatchNorm folded into the linear layer, one fused matmul + bias.
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            y = torch.addmm(shift, features, (self.linear.weight * scale.unsqueeze(1)).t())

        # Max over each pillar's points, then over its padded slots (all equal to `shift`), then ReLU:
        # ReLU is monotone, so this equals the reference's ReLU then max.
        index = pillar.unsqueeze(1).expand(-1, self.out_channels)
        out = y.new_zeros((p, self.out_channels)).scatter_reduce(0, index, y, "amax", include_self=False)
        padded = (num_points < m_max).unsqueeze(1)
        return torch.relu(torch.where(padded, torch.maximum(out, shift), out))


def scatter_to_bev(features: Tensor, coords: Tensor, batch_size: int, grid: Sequence[int]) -> Tensor:
    """OpenPCDet ``PointPillarScatter``: place pillar ``features`` (P, C) at their cells into a zero canvas.

    ``coords`` (P, 4) ``(batch, z, y, x)`` (or (P, 3) ``(z, y, x)`` with ``batch_size`` 1); ``grid`` is
    ``(nx, ny, nz)`` (``PillarConfig.grid_size``). Returns ``(B, C * nz, ny, nx)``, channel ``c * nz + z``
    (``(B, 64, 496, 432)`` for KITTI); empty cells are 0. ``batch_size`` is explicit so that trailing clouds
    without pillars still get a canvas. Differentiable in ``features``.
    """
    nx, ny, nz = (int(g) for g in grid)
    if coords.shape[1] == 3:
        if batch_size != 1:
            raise ValueError(f"scatter_to_bev: (P, 3) coords carry no batch index, but batch_size is {batch_size}")
        coords = torch.nn.functional.pad(coords, (1, 0))
    c = features.shape[1]
    canvas = features.new_zeros((batch_size, c, nz * ny * nx))
    flat = (coords[:, 1] * ny + coords[:, 2]) * nx + coords[:, 3]
    # One scatter_ per cloud along the cell axis; advanced-index assignment is ~2x slower on CPU.
    for b in range(batch_size):
        if batch_size == 1:
            cells, feats = flat, features
        else:
            in_cloud = coords[:, 0] == b
            cells, feats = flat[in_cloud], features[in_cloud]
        canvas[b].scatter_(1, cells.unsqueeze(0).expand(c, -1), feats.t())
    return canvas.view(batch_size, c * nz, ny, nx)
