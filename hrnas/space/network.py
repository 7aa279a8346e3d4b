"""Networks built from a :class:`~hrnas.space.spec.NetSpec`: stem, fusion and parallel modules, heads.

``build_model(spec)`` is pure: it reads nothing but the spec, touches no global state and does no I/O.
Module names mirror the spec paths (``stages.2.parallel.1.0`` ↔ ``stages[2].parallel[1][0]``), so a
block's parameters can always be found from its spec path (see :func:`block_modules`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrnas.space.layers import ConvBNAct, SearchBlock, make_activation
from hrnas.space.pointpillars import PointPillarsBEV, PointPillarsSpec
from hrnas.space.spec import BlockSpec, ClassificationHeadSpec, DenseHeadSpec, NetSpec, StageSpec


def _block(spec: BlockSpec, net: NetSpec) -> SearchBlock:
    return SearchBlock(
        spec,
        activation=net.activation,
        bn_momentum=net.bn_momentum,
        bn_eps=net.bn_eps,
        token_grid=net.token_grid,
        transformer_dropout=net.transformer_dropout,
    )


def _resize_to(x: Tensor, ref: Tensor) -> Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class FusionModule(nn.Module):
    """Neighbour-only fusion of branches (spec §2.4) plus an optional new lower-resolution branch."""

    def __init__(self, stage: StageSpec, net: NetSpec) -> None:
        super().__init__()
        self.edges = [(f.src, f.dst) for f in stage.fuse]
        self.fuse = nn.ModuleList(_block(f.block, net) for f in stage.fuse)
        self.num_out = max(d for _, d in self.edges) + 1
        self.act = make_activation(net.activation)
        self.new_branch = None if stage.new_branch is None else _block(stage.new_branch, net)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        sums: list[Tensor | None] = [None] * self.num_out
        for (src, dst), block in zip(self.edges, self.fuse, strict=True):
            y = block(xs[src])
            if src == dst + 1:
                y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            prev = sums[dst]
            sums[dst] = y if prev is None else prev + _resize_to(y, prev)
        out = [self.act(s) for s in sums]  # type: ignore[arg-type]
        if self.new_branch is not None:
            out.append(self.new_branch(out[-1]))
        return out


class ParallelModule(nn.Module):
    """Independent chains of blocks, one per branch (spec §2.5)."""

    def __init__(self, stage: StageSpec, net: NetSpec) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(_block(b, net) for b in chain)) for chain in stage.parallel)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return [branch(x) for branch, x in zip(self.branches, xs, strict=True)]


class Stage(nn.Module):
    def __init__(self, stage: StageSpec, net: NetSpec) -> None:
        super().__init__()
        self.fusion = FusionModule(stage, net)
        self.parallel = ParallelModule(stage, net)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return self.parallel(self.fusion(xs))


class Backbone(nn.Module):
    """(B, 3, H, W) → list of branch features, branch ``b`` at stride 2^(len(stem) + b)."""

    def __init__(self, net: NetSpec) -> None:
        super().__init__()
        layers = []
        cin = net.stem.in_channels
        for c in net.stem.channels:
            layers.append(
                ConvBNAct(cin, c, 3, 2, activation=net.activation, bn_momentum=net.bn_momentum, bn_eps=net.bn_eps)
            )
            cin = c
        self.stem = nn.Sequential(*layers)
        self.stages = nn.ModuleList(Stage(s, net) for s in net.stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        xs = [self.stem(x)]
        for stage in self.stages:
            xs = stage(xs)
        return xs


class ClassificationHead(nn.Module):
    """Branch features → logits (B, num_classes) (spec §2.7)."""

    def __init__(self, head: ClassificationHeadSpec, net: NetSpec) -> None:
        super().__init__()
        self.incre = nn.ModuleList(_block(b, net) for b in head.incre)
        self.down = nn.ModuleList(_block(b, net) for b in head.down)
        cin = head.incre[-1].out_channels
        self.final = ConvBNAct(
            cin, head.last_channels, 1, activation=net.activation, bn_momentum=net.bn_momentum, bn_eps=net.bn_eps
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(head.dropout)
        self.classifier = nn.Linear(head.last_channels, head.num_classes)

    def forward(self, xs: list[Tensor]) -> Tensor:
        y = self.incre[0](xs[0])
        for i, down in enumerate(self.down):
            y = self.incre[i + 1](xs[i + 1]) + _resize_to(down(y), xs[i + 1])
        y = self.pool(self.final(y)).flatten(1)
        return self.classifier(self.dropout(y))


class DenseHead(nn.Module):
    """Branch features → (B, num_outputs, H_0, W_0) at the resolution of branch 0 (spec §2.7).

    A ``detection`` head has no classifier: it returns the transform's BEV features for an anchor head.
    """

    def __init__(self, head: DenseHeadSpec, net: NetSpec) -> None:
        super().__init__()
        self.transform = _block(head.transform, net)
        self.classifier = (
            None if head.kind == "detection" else nn.Conv2d(head.transform.out_channels, head.num_outputs, 1, bias=True)
        )

    def forward(self, xs: list[Tensor]) -> Tensor:
        ref = xs[0]
        y = self.transform(torch.cat([ref] + [_resize_to(x, ref) for x in xs[1:]], dim=1))
        return y if self.classifier is None else self.classifier(y)


class HRNet(nn.Module):
    """A network built from a spec: images (B, C, H, W) → the head's output."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = Backbone(spec)
        if isinstance(spec.head, ClassificationHeadSpec):
            self.head: nn.Module = ClassificationHead(spec.head, spec)
        else:
            self.head = DenseHead(spec.head, spec)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def init_weights(model: nn.Module, method: str = "mnas") -> None:
    """In-place initialisation. ``mnas`` (spec §2.1): conv N(0, √(2/fan_out)) with depthwise fan_out
    = k·k, linear U(±1/√fan_out), BN γ=1 β=0, biases 0. ``default`` keeps PyTorch's initialisation."""
    if method == "default":
        return
    if method != "mnas":
        raise ValueError(f"unknown init method {method!r} (known: mnas, default)")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            fan_out = k if m.groups == m.in_channels == m.out_channels else k * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(spec: NetSpec | PointPillarsSpec, init: str = "mnas") -> HRNet | PointPillarsBEV:
    """Build the network described by ``spec`` (pure: no globals, no I/O): an :class:`HRNet` for a
    :class:`NetSpec`, a :class:`PointPillarsBEV` for a :class:`PointPillarsSpec`."""
    model = PointPillarsBEV(spec) if isinstance(spec, PointPillarsSpec) else HRNet(spec)
    init_weights(model, init)
    return model


def block_modules(model: HRNet) -> dict[str, SearchBlock]:
    """Map every spec block path (as in :meth:`NetSpec.blocks`) to its module in ``model``."""
    out: dict[str, SearchBlock] = {}
    for s, stage in enumerate(model.backbone.stages):
        for f, block in enumerate(stage.fusion.fuse):
            out[f"stages[{s}].fuse[{f}].block"] = block
        if stage.fusion.new_branch is not None:
            out[f"stages[{s}].new_branch"] = stage.fusion.new_branch
        for b, chain in enumerate(stage.parallel.branches):
            for i, block in enumerate(chain):
                out[f"stages[{s}].parallel[{b}][{i}]"] = block
    head = model.head
    if isinstance(head, ClassificationHead):
        for i, block in enumerate(head.incre):
            out[f"head.incre[{i}]"] = block
        for i, block in enumerate(head.down):
            out[f"head.down[{i}]"] = block
    else:
        out["head.transform"] = head.transform
    return out
