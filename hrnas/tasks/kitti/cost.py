"""Cost of a whole PointPillars-style detector: PillarVFE + 2D backbone + anchor head (kitti-spec §2).

The network that a KITTI spec describes (:class:`~hrnas.space.pointpillars.PointPillarsSpec`, or a
:class:`~hrnas.space.spec.NetSpec` with a ``detection`` head) maps the 64-channel BEV pseudo-image to
the BEV features an anchor head reads. :func:`detector_cost` adds the two fixed parts around it, so that
every KITTI backbone is compared on the same footing:

- ``vfe``: PillarVFE, Linear(in_features → out_channels, no bias) + BatchNorm1d, applied to every point
  slot of every pillar. Its MACs scale with the number of pillars, not with the grid, and are 0 unless
  ``num_pillars`` is given — the published figures count from the pseudo-image on.
- ``backbone``: :func:`hrnas.space.cost.cost` of the spec (the "2D RPN" whose FLOPs HR-NAS reports).
- ``head``: the anchor head, three 1×1 convs with bias on the BEV features (class scores, box
  residuals, direction bins; OpenPCDet ``AnchorHeadSingle``, :class:`hrnas.tasks.kitti.head.AnchorHead`).

At 496×432 the stock PointPillars detector costs 34.17 G MACs and 4.834 M parameters: backbone
32.69 G / 4.806 M, head 1.48 G / 27.7 k, VFE 768 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from hrnas.space.cost import HW, Cost, CostItem, branch_sizes, cost
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import DenseHeadSpec, NetSpec, SpecError


@dataclass(frozen=True)
class PillarVFESpec:
    """PillarVFE dimensions: ``in_features`` per point (x, y, z, reflectance, 3 offsets to the pillar
    mean, 3 to the pillar centre = 10), ``out_channels`` pillar features, ``max_points`` slots per pillar."""

    in_features: int = 10
    out_channels: int = 64
    max_points: int = 32

    @property
    def params(self) -> int:
        """Linear weight (no bias) + BatchNorm1d γ, β."""
        return self.in_features * self.out_channels + 2 * self.out_channels

    def macs(self, num_pillars: int) -> int:
        """MACs of the Linear layer over ``num_pillars`` padded pillars (P · max_points · C_in · C_out)."""
        return num_pillars * self.max_points * self.in_features * self.out_channels


@dataclass(frozen=True)
class AnchorHeadSpec:
    """Anchor head dimensions (names as :class:`hrnas.tasks.kitti.head.AnchorHead`): 1×1 convs with bias
    from ``in_channels`` BEV features to ``num_anchors_per_location`` × (``num_classes`` scores,
    ``code_size`` box residuals, ``num_dir_bins`` direction logits). The stock head: 6 anchors (3 classes
    × 2 yaws) → 18 / 42 / 12 channels."""

    in_channels: int = 384
    num_anchors_per_location: int = 6
    num_classes: int = 3
    num_dir_bins: int = 2
    code_size: int = 7

    def conv_channels(self) -> dict[str, int]:
        """Output channels of each 1×1 conv: ``{"cls": 18, "box": 42, "dir": 12}`` for the stock head."""
        a = self.num_anchors_per_location
        out = {"cls": a * self.num_classes, "box": a * self.code_size}
        if self.num_dir_bins > 0:
            out["dir"] = a * self.num_dir_bins
        return out

    def cost_items(self, feature_size: HW, prefix: str = "head") -> tuple[CostItem, ...]:
        """(MACs, params) of each conv on an (H, W) feature map, as ``{prefix}.cls|box|dir`` items: a 1×1
        conv with ``C_out`` outputs costs ``C_in·C_out·H·W`` MACs and ``C_in·C_out + C_out`` params (what
        ``FlopCounterMode`` counts, halved; bias additions are not MACs)."""
        area = feature_size[0] * feature_size[1]
        c = self.in_channels
        return tuple(CostItem(f"{prefix}.{name}", c * k * area, c * k + k) for name, k in self.conv_channels().items())

    def cost(self, feature_size: HW) -> Cost:
        """Exact MACs and parameters of the head on an ``(H, W)`` feature map, batch 1, with the items of
        :meth:`cost_items`. The stock head at 384 channels on 248×216: 1,481,048,064 MACs, 27,720 params."""
        items = self.cost_items(feature_size)
        return Cost(sum(i.macs for i in items), sum(i.params for i in items), items)


def is_detection_spec(spec: object) -> bool:
    """True for the specs of KITTI backbones: a PointPillarsSpec or a NetSpec with a detection head."""
    if isinstance(spec, PointPillarsSpec):
        return True
    return isinstance(spec, NetSpec) and isinstance(spec.head, DenseHeadSpec) and spec.head.kind == "detection"


def bev_features(spec: NetSpec | PointPillarsSpec, input_size: HW) -> tuple[int, HW]:
    """(channels, (H, W)) of the BEV features the backbone gives an anchor head for an ``input_size``
    pseudo-image (384 and 248×216 for either zoo backbone at 496×432)."""
    if isinstance(spec, PointPillarsSpec):
        return spec.out_channels, spec.output_size(input_size)
    if not is_detection_spec(spec):
        raise SpecError(f"head.kind: {spec.name or 'spec'} has a {spec.head.kind} head, not a detection head")
    return spec.head.num_outputs, branch_sizes(spec, input_size)[0]


def detector_cost(
    spec: NetSpec | PointPillarsSpec,
    input_size: HW,
    *,
    vfe: PillarVFESpec | None = None,
    head: AnchorHeadSpec | None = None,
    num_pillars: int = 0,
) -> Cost:
    """Exact MACs and parameters of VFE + backbone + anchor head for an ``input_size`` (H, W) grid.

    Items are ``vfe.pfn``, ``backbone.<path of cost(spec)>`` and ``head.cls|box|dir``, so :meth:`Cost.by_group`
    gives the three parts. ``head`` defaults to the stock anchor head on the backbone's channels;
    ``num_pillars`` (default 0) adds the VFE's per-pillar MACs.
    """
    channels, size = bev_features(spec, input_size)
    backbone_in = spec.in_channels if isinstance(spec, PointPillarsSpec) else spec.stem.in_channels
    vfe = vfe or PillarVFESpec(out_channels=backbone_in)
    head = head or AnchorHeadSpec(in_channels=channels)
    if head.in_channels != channels:
        raise SpecError(f"anchor head in_channels: {head.in_channels} but the backbone gives {channels}")
    if vfe.out_channels != backbone_in:
        raise SpecError(f"PillarVFE out_channels: {vfe.out_channels} but the backbone reads {backbone_in}")
    items = [CostItem("vfe.pfn", vfe.macs(num_pillars), vfe.params)]
    items += [CostItem(f"backbone.{i.path}", i.macs, i.params) for i in cost(spec, input_size).items]
    items += head.cost_items(size)
    return Cost(sum(i.macs for i in items), sum(i.params for i in items), tuple(items))


__all__ = ["AnchorHeadSpec", "PillarVFESpec", "bev_features", "detector_cost", "is_detection_spec"]
