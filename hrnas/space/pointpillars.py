"""The PointPillars 2D backbone (OpenPCDet ``BaseBEVBackbone``) as a typed spec and its builder.

This is the fixed baseline that the searched KITTI backbone replaces (kitti-spec §2.4, docs/kitti.md).
A :class:`PointPillarsSpec` is a chain of :class:`BEVBlockSpec`: block ``i`` is a 3×3 ConvBNAct with
stride ``stride`` followed by ``num_layers`` 3×3 stride-1 ConvBNAct layers, all with ``out_channels``
filters; its output is also upsampled by a ``ConvTranspose2d(kernel = stride = up_stride)`` + BN +
activation to ``up_channels``. The upsampled maps, which must all have the same size, are concatenated:
(B, in_channels, H, W) → (B, Σ up_channels, H / out_stride, W / out_stride).

The stock configuration (``pointpillar.yaml``: LAYER_NUMS 3/5/5, LAYER_STRIDES 2/2/2, NUM_FILTERS
64/128/256, UPSAMPLE_STRIDES 1/2/4, NUM_UPSAMPLE_FILTERS 128×3) maps the 64×496×432 pseudo-image to
384×248×216. Like :class:`~hrnas.space.spec.NetSpec`, the spec is a frozen dataclass with a strict JSON
form whose errors name the bad value (``blocks[1].up_stride: ...``) and the same JSON methods
(:class:`~hrnas.space.spec.SpecJson`); ``kind`` tells the two apart in a JSON file. Its exact cost is
:func:`hrnas.space.cost.cost`; :func:`hrnas.space.network.build_model` builds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hrnas.space.layers import ConvBNAct, make_activation, make_bn
from hrnas.space.spec import ACTIVATIONS, SpecError, SpecJson, _expect_mapping, _float, _int, _list

POINTPILLARS_KIND = "pointpillars"
HW = tuple[int, int]


@dataclass(frozen=True)
class BEVBlockSpec:
    """One downsampling block of the BEV backbone and its upsampling branch.

    ``stride``: stride of the block's first 3×3 conv; ``num_layers``: stride-1 3×3 convs after it
    (OpenPCDet's LAYER_NUMS); ``up_stride``/``up_channels``: kernel = stride of the transposed conv
    and its filters (UPSAMPLE_STRIDES / NUM_UPSAMPLE_FILTERS).
    """

    out_channels: int
    stride: int = 2
    num_layers: int = 3
    up_channels: int = 128
    up_stride: int = 1


@dataclass(frozen=True)
class PointPillarsSpec(SpecJson):
    """A PointPillars BEV backbone: ``blocks`` applied in sequence, every block's output upsampled to
    the common output resolution and concatenated (see the module docstring)."""

    blocks: tuple[BEVBlockSpec, ...]
    in_channels: int = 64
    name: str = ""
    activation: str = "relu"
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3
    kind: str = POINTPILLARS_KIND

    def __post_init__(self) -> None:
        validate_pointpillars(self)

    # --- derived structure -------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        """Channels of the concatenated output (384 for the stock backbone)."""
        return sum(b.up_channels for b in self.blocks)

    @property
    def out_stride(self) -> int:
        """Stride of the output with respect to the input (2 for the stock backbone)."""
        b = self.blocks[0]
        return b.stride // b.up_stride

    def block_sizes(self, input_size: HW) -> list[HW]:
        """(H, W) of every block's output for an ``input_size`` (H, W) input."""
        h, w = input_size
        out = []
        for b in self.blocks:
            h, w = (h - 1) // b.stride + 1, (w - 1) // b.stride + 1
            out.append((h, w))
        return out

    def output_size(self, input_size: HW) -> HW:
        """(H, W) of the output; raises :class:`SpecError` when the upsampled maps would differ in size."""
        ups = [
            (h * b.up_stride, w * b.up_stride)
            for b, (h, w) in zip(self.blocks, self.block_sizes(input_size), strict=True)
        ]
        if any(u != ups[0] for u in ups):
            raise SpecError(
                f"input size {input_size[0]}×{input_size[1]}: the upsampled block outputs differ in size "
                f"({', '.join(f'{h}×{w}' for h, w in ups)}); {self.name or 'the backbone'} needs H and W "
                f"divisible by {self.total_stride}"
            )
        return ups[0]

    @property
    def total_stride(self) -> int:
        """Product of all block strides (8 for the stock backbone)."""
        return math.prod(b.stride for b in self.blocks)

    # --- serialisation (SpecJson: to_json, from_dict, from_json, save, load) --------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "in_channels": self.in_channels,
            "blocks": [
                {
                    "out_channels": b.out_channels,
                    "stride": b.stride,
                    "num_layers": b.num_layers,
                    "up_channels": b.up_channels,
                    "up_stride": b.up_stride,
                }
                for b in self.blocks
            ],
            "activation": self.activation,
            "bn_momentum": self.bn_momentum,
            "bn_eps": self.bn_eps,
        }

    @classmethod
    def _from_plain(cls, data: Any) -> PointPillarsSpec:
        return _parse(data)


def _parse(data: Any) -> PointPillarsSpec:
    d = _expect_mapping(data, "", PointPillarsSpec)
    kind = d.get("kind", POINTPILLARS_KIND)
    if kind != POINTPILLARS_KIND:
        raise SpecError(f"kind: expected {POINTPILLARS_KIND!r}, got {kind!r}")
    blocks = []
    for i, item in enumerate(_list(d["blocks"], "blocks")):
        path = f"blocks[{i}]"
        b = _expect_mapping(item, path, BEVBlockSpec)
        blocks.append(
            BEVBlockSpec(
                out_channels=_int(b["out_channels"], f"{path}.out_channels", 1),
                stride=_int(b.get("stride", 2), f"{path}.stride", 1),
                num_layers=_int(b.get("num_layers", 3), f"{path}.num_layers", 0),
                up_channels=_int(b.get("up_channels", 128), f"{path}.up_channels", 1),
                up_stride=_int(b.get("up_stride", 1), f"{path}.up_stride", 1),
            )
        )
    return PointPillarsSpec(
        blocks=tuple(blocks),
        in_channels=_int(d.get("in_channels", 64), "in_channels", 1),
        name=str(d.get("name", "")),
        activation=str(d.get("activation", "relu")),
        bn_momentum=_float(d.get("bn_momentum", 0.01), "bn_momentum"),
        bn_eps=_float(d.get("bn_eps", 1e-3), "bn_eps"),
    )


def _positive(value: Any, path: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{path}: must be an integer >= {minimum}, got {value!r}")


def validate_pointpillars(spec: PointPillarsSpec) -> None:
    """Raise :class:`SpecError` naming the first inconsistent value of ``spec``.

    Every block's upsampling must bring it back to one common stride: stride(block i) / up_stride(i)
    is the same integer for all blocks (e.g. 2/1 = 4/2 = 8/4).
    """
    if spec.kind != POINTPILLARS_KIND:
        raise SpecError(f"kind: expected {POINTPILLARS_KIND!r}, got {spec.kind!r}")
    if spec.activation not in ACTIVATIONS:
        raise SpecError(f"activation: unknown {spec.activation!r} (known: {', '.join(ACTIVATIONS)})")
    _positive(spec.in_channels, "in_channels")
    if not spec.blocks:
        raise SpecError("blocks: needs at least one block")
    stride = 1
    out_stride = None
    for i, b in enumerate(spec.blocks):
        path = f"blocks[{i}]"
        if not isinstance(b, BEVBlockSpec):
            raise SpecError(f"{path}: expected a BEVBlockSpec, got {type(b).__name__}")
        for name in ("out_channels", "stride", "up_channels", "up_stride"):
            _positive(getattr(b, name), f"{path}.{name}")
        _positive(b.num_layers, f"{path}.num_layers", 0)
        stride *= b.stride
        if stride % b.up_stride:
            raise SpecError(f"{path}.up_stride: {b.up_stride} does not divide the block's stride {stride}")
        if out_stride is None:
            out_stride = stride // b.up_stride
        elif stride // b.up_stride != out_stride:
            raise SpecError(
                f"{path}.up_stride: {b.up_stride} brings stride {stride} to {stride // b.up_stride}, "
                f"blocks[0] to {out_stride}"
            )


# --- the module -------------------------------------------------------------------------------------


class DeconvBNAct(nn.Sequential):
    """ConvTranspose2d(kernel = stride, no bias) → BatchNorm → activation: (B, C, H, W) → (B, C', sH, sW)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        activation: str = "relu",
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, stride, stride, bias=False),
            make_bn(out_channels, bn_momentum, bn_eps),
            make_activation(activation),
        )


class PointPillarsBEV(nn.Module):
    """(B, in_channels, H, W) pseudo-image → (B, out_channels, H / out_stride, W / out_stride) features.

    ``blocks.i`` holds block ``i``'s ConvBNAct layers, ``deblocks.i`` its upsampling; H and W must make
    the upsampled maps equal in size (see :meth:`PointPillarsSpec.output_size`).
    """

    def __init__(self, spec: PointPillarsSpec) -> None:
        super().__init__()
        self.spec = spec
        kw = dict(activation=spec.activation, bn_momentum=spec.bn_momentum, bn_eps=spec.bn_eps)
        blocks, deblocks = [], []
        cin = spec.in_channels
        for b in spec.blocks:
            layers = [ConvBNAct(cin, b.out_channels, 3, b.stride, **kw)]
            layers += [ConvBNAct(b.out_channels, b.out_channels, 3, 1, **kw) for _ in range(b.num_layers)]
            blocks.append(nn.Sequential(*layers))
            deblocks.append(DeconvBNAct(b.out_channels, b.up_channels, b.up_stride, **kw))
            cin = b.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.deblocks = nn.ModuleList(deblocks)

    def forward(self, x: Tensor) -> Tensor:
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        if any(u.shape[-2:] != ups[0].shape[-2:] for u in ups):
            sizes = ", ".join(f"{u.shape[-2]}×{u.shape[-1]}" for u in ups)
            raise ValueError(
                f"upsampled block outputs differ in size ({sizes}); H and W must be multiples of "
                f"{self.spec.total_stride}"
            )
        return torch.cat(ups, dim=1)


def pointpillars_bev_spec(name: str = "pointpillars_bev") -> PointPillarsSpec:
    """OpenPCDet ``pointpillar.yaml``'s BaseBEVBackbone: 64×496×432 → 384×248×216, 4.806 M params."""
    return PointPillarsSpec(
        blocks=(
            BEVBlockSpec(64, stride=2, num_layers=3, up_channels=128, up_stride=1),
            BEVBlockSpec(128, stride=2, num_layers=5, up_channels=128, up_stride=2),
            BEVBlockSpec(256, stride=2, num_layers=5, up_channels=128, up_stride=4),
        ),
        in_channels=64,
        name=name,
    )


__all__ = [
    "BEVBlockSpec",
    "DeconvBNAct",
    "PointPillarsBEV",
    "PointPillarsSpec",
    "pointpillars_bev_spec",
    "validate_pointpillars",
]
