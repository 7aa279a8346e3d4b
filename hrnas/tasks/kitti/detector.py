"""The PointPillars detector network: PillarVFE → scatter → BEV backbone → anchor head (kitti-spec §2).

:class:`PointPillarsDetector` is the trainable network of the ``kitti`` task. Pillarization
(:func:`hrnas.tasks.kitti.pillars.pillarize_batch`) runs before it and decoding + rotated NMS
(:func:`hrnas.tasks.kitti.postprocess.postprocess`) after it, so the network itself maps pillars to
per-anchor predictions:

    voxels (P, M, C), num_points (P,), coords (P, 4) ──PillarVFE──▶ (P, F) ──scatter──▶ (B, F, ny, nx)
    ──backbone──▶ (B, 384, ny/2, nx/2) ──AnchorHead──▶ HeadOutput (B, N, ·)

The backbone is built from either spec kind: a :class:`~hrnas.space.pointpillars.PointPillarsSpec`
(``pointpillars_bev``) or a :class:`~hrnas.space.spec.NetSpec` with a ``detection`` head (the HR-NAS
supernet or a searched network). With an HRNet backbone the detector exposes it as :attr:`hrnet` and
rebuilds itself around a shrunk one with :meth:`with_hrnet`, which is all the search needs
(:func:`hrnas.search.units.as_hrnet`, :func:`hrnas.search.shrink.shrink`).

:class:`PillarNetExport` is the same function in an exportable form (dense PFN, BatchNorm folded),
whose input is the decorated point features of :func:`pillar_point_features`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrnas.space.network import HRNet, build_model
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import NetSpec
from hrnas.tasks.kitti.anchors import AnchorConfig
from hrnas.tasks.kitti.cost import bev_features
from hrnas.tasks.kitti.head import AnchorHead, HeadOutput
from hrnas.tasks.kitti.pillars import PillarConfig, PillarVFE, scatter_to_bev

__all__ = [
    "PillarNetExport",
    "PointPillarsDetector",
    "backbone_in_channels",
    "build_detector",
    "pillar_point_features",
]


def backbone_in_channels(spec: NetSpec | PointPillarsSpec) -> int:
    """Channels of the pseudo-image the backbone of ``spec`` reads (64 for both zoo backbones)."""
    return spec.in_channels if isinstance(spec, PointPillarsSpec) else spec.stem.in_channels


class PointPillarsDetector(nn.Module):
    """PillarVFE → :func:`scatter_to_bev` → backbone → :class:`AnchorHead`, from modules.

    Args:
        vfe: the pillar feature net; its ``out_channels`` · ``nz`` is the backbone's input width.
        backbone: ``(B, F·nz, ny, nx)`` → ``(B, C, H, W)`` BEV features (an HRNet or a PointPillarsBEV).
        head: the anchor head on the ``C`` channels.
        grid_size: ``(nx, ny, nz)`` pillar grid (``PillarConfig.grid_size``).

    State-dict keys are ``vfe.*``, ``backbone.*`` and ``head.*``.
    """

    def __init__(self, vfe: PillarVFE, backbone: nn.Module, head: AnchorHead, grid_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.vfe = vfe
        self.backbone = backbone
        self.head = head
        self.grid_size = tuple(int(g) for g in grid_size)

    @property
    def hrnet(self) -> HRNet | None:
        """The searchable backbone (None for a fixed PointPillars backbone)."""
        return self.backbone if isinstance(self.backbone, HRNet) else None

    def with_hrnet(self, hrnet: HRNet) -> PointPillarsDetector:
        """A detector with ``hrnet`` as backbone that shares this one's VFE and head (after a shrink)."""
        return PointPillarsDetector(self.vfe, hrnet, self.head, self.grid_size)

    def bev(self, voxels: Tensor, num_points: Tensor, coords: Tensor, batch_size: int) -> Tensor:
        """The pseudo-image ``(B, F·nz, ny, nx)`` of a batch of pillars (coords ``(P, 4)`` ``(b, z, y, x)``)."""
        features = self.vfe(voxels, num_points, coords)
        return scatter_to_bev(features, coords, batch_size, self.grid_size)

    def forward(self, voxels: Tensor, num_points: Tensor, coords: Tensor, batch_size: int) -> HeadOutput:
        """Per-anchor predictions of a batch of pillars (:class:`~hrnas.tasks.kitti.pillars.Pillars` fields
        from ``pillarize_batch``); frames without pillars get an all-zero pseudo-image."""
        canvas = self.bev(voxels, num_points, coords, batch_size)
        return self.head(self.backbone(canvas))


def build_detector(
    spec: NetSpec | PointPillarsSpec,
    pillars: PillarConfig,
    anchors: AnchorConfig,
    init: str = "mnas",
) -> PointPillarsDetector:
    """The detector for a backbone ``spec`` on the grid of ``pillars`` with the anchors of ``anchors``.

    The VFE writes ``backbone_in_channels(spec)`` features per pillar; the head reads the backbone's
    output channels (:func:`hrnas.tasks.kitti.cost.bev_features`) with ``anchors.num_anchors_per_location``
    anchors of ``anchors.num_classes`` classes and 2 direction bins per location. ``init`` applies to the
    backbone only: the VFE and the head keep their reference initialisation (the head's class bias is
    the prior −4.595). Raises ``ValueError`` / :class:`~hrnas.space.spec.SpecError` when the grid does
    not fit the backbone (voxels that are not pillars, a grid the backbone cannot upsample back).
    """
    nx, ny, nz = pillars.grid_size
    if nz != 1:
        raise ValueError(f"voxel_size: the z size must span the whole z range (pillars), got {nz} cells in z")
    channels, _ = bev_features(spec, (ny, nx))
    backbone = build_model(spec, init=init)
    vfe = PillarVFE(pillars, out_channels=backbone_in_channels(spec))
    head = AnchorHead(channels, anchors.num_anchors_per_location, anchors.num_classes, num_dir_bins=2)
    return PointPillarsDetector(vfe, backbone, head, pillars.grid_size)


def pillar_point_features(voxels: Tensor, num_points: Tensor, coords: Tensor, config: PillarConfig) -> Tensor:
    """The ``C + 6`` PillarVFE input features of every point slot, ``(P, M, C + 6)``.

    Per point: its raw ``C`` values, its xyz minus the mean xyz of its pillar's points, and its xyz minus
    the pillar centre; padded slots (``slot >= num_points``) are all zero (kitti-spec §2.2). ``coords``
    are ``(z, y, x)`` or ``(b, z, y, x)``. This is the input of :class:`PillarNetExport`.
    """
    p, m, _ = voxels.shape
    valid = (torch.arange(m, device=voxels.device) < num_points.to(torch.int64)[:, None]).unsqueeze(-1)
    pts = voxels * valid
    xyz = pts[..., :3]
    mean = xyz.sum(dim=1) / num_points.clamp_min(1).to(voxels.dtype)[:, None]
    zyx = coords[:, -3:].to(voxels.dtype)
    size = torch.tensor(config.voxel_size, dtype=voxels.dtype, device=voxels.device)
    lo = torch.tensor(config.point_cloud_range[:3], dtype=voxels.dtype, device=voxels.device)
    centre = zyx.flip(1) * size + size / 2 + lo
    features = torch.cat([pts, xyz - mean[:, None], xyz - centre[:, None]], dim=-1)
    return features * valid


class PillarNetExport(nn.Module):
    """The exportable form of an eval-mode :class:`PointPillarsDetector` for one frame.

    ``forward(features (P, M, C + 6), coords (P, 4) int64)`` → ``(cls_logits (1, N, K), box_deltas
    (1, N, 7), dir_logits (1, N, bins))``: the PFN as a dense Linear with the BatchNorm folded in, ReLU
    and a max over the ``M`` slots (padded slots included, as the reference), the scatter as one
    ``scatter`` along the flattened grid, then the backbone and head as given (pass them through
    :func:`hrnas.space.deploy.deploy` first to fold their BatchNorms). Equal to the detector in eval mode
    on the features of :func:`pillar_point_features`.
    """

    def __init__(self, detector: PointPillarsDetector) -> None:
        super().__init__()
        vfe = detector.vfe
        bn = vfe.norm
        with torch.no_grad():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            self.pfn = nn.Linear(vfe.in_features, vfe.out_channels, bias=True)
            self.pfn.weight.copy_(vfe.linear.weight * scale[:, None])
            self.pfn.bias.copy_(bn.bias - bn.running_mean * scale)
        self.backbone = detector.backbone
        self.head = detector.head
        self.grid_size = detector.grid_size

    def forward(self, features: Tensor, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        nx, ny, nz = self.grid_size
        pillar = torch.relu(self.pfn(features)).amax(dim=1)  # (P, F)
        c = pillar.shape[1]
        cells = (coords[:, 1] * ny + coords[:, 2]) * nx + coords[:, 3]
        canvas = pillar.new_zeros((c, nz * ny * nx)).scatter(1, cells.unsqueeze(0).expand(c, -1), pillar.t())
        out = self.head(self.backbone(canvas.view(1, c * nz, ny, nx)))
        if out.dir_logits is None:
            raise ValueError("PillarNetExport: the anchor head has no direction classifier")
        return out.cls_logits, out.box_deltas, out.dir_logits
