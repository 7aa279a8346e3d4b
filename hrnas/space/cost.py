"""Exact analytic cost of a spec: multiply-accumulates (MACs) and parameters, no forward pass.

MACs count what ``torch.utils.flop_counter.FlopCounterMode`` counts, halved: convolutions and matrix
products (linear layers, attention). BatchNorm, activations, additions, resizing and pooling are not
counted (as in the authors' profiler). Parameters are ``sum(p.numel() for p in model.parameters())``
of the model that :func:`hrnas.space.network.build_model` builds, buffers excluded.

Resolution rules (spec §2.1): a stride-2 layer maps a side ``h`` to ``(h − 1) // 2 + 1``.

The search does not call these functions: it asks a :class:`~hrnas.space.cost_model.CostModel`, whose
default :class:`~hrnas.space.cost_model.MacCost` delegates here (:func:`channel_unit_macs`,
:func:`query_unit_macs`, :func:`cost`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral

from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import BlockSpec, ClassificationHeadSpec, NetSpec, SpecError

HW = tuple[int, int]


def _down(hw: HW) -> HW:
    return ((hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1)


def _area(hw: HW) -> int:
    return hw[0] * hw[1]


def min_input_size(spec: NetSpec | PointPillarsSpec) -> int:
    """The smallest input side (H and W alike) that ``spec`` can take: its largest downsampling factor, so
    that its lowest-resolution map keeps at least one whole pixel. For a :class:`NetSpec` that is
    ``2 ** (stem layers + new branches)`` (the stem brings the input to 1/2^len(stem), each new branch halves
    again: 32 for the paper's supernets); for a :class:`PointPillarsSpec` the product of its block strides."""
    if isinstance(spec, PointPillarsSpec):
        return spec.total_stride
    new_branches = sum(1 for stage in spec.stages if stage.new_branch is not None)
    return 2 ** (len(spec.stem.channels) + new_branches)


def check_input_size(spec: NetSpec | PointPillarsSpec, input_size: Sequence[int], what: str = "") -> HW:
    """``input_size`` as an ``(H, W)`` pair of ints, after checking that ``spec`` can take it.

    ``what`` names where the size came from in the message (e.g. ``--input-size 8 8`` or ``data.crop_size``;
    default ``input size H×W``). Raises :class:`SpecError` when the size is not two positive integers or a
    side is below :func:`min_input_size` (the message names the value, the minimum and why).
    """
    values = list(input_size)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        raise SpecError(f"{what or 'input size'}: expected two integers (height and width), got {values}")
    h, w = int(values[0]), int(values[1])
    label = what or f"input size {h}×{w}"
    if h < 1 or w < 1:
        raise SpecError(f"{label}: height and width must be positive integers, got {h}×{w}")
    low = min_input_size(spec)
    if min(h, w) < low:
        name = spec.name or "the network"
        raise SpecError(
            f"{label}: below the minimum {low}×{low} that {name} can take (its lowest-resolution map runs at "
            f"1/{low} of the input: less than one pixel at {h}×{w})"
        )
    return h, w


@dataclass(frozen=True)
class CostItem:
    """Cost of one module, identified by its spec path (e.g. ``stages[1].parallel[0][1]``)."""

    path: str
    macs: int
    params: int


@dataclass(frozen=True)
class Cost:
    """Total MACs (multiply-accumulates, = FLOPs / 2) and parameters, with a per-module breakdown."""

    macs: int
    params: int
    items: tuple[CostItem, ...] = field(default=(), repr=False)

    def by_group(self) -> dict[str, tuple[int, int]]:
        """Totals per top-level group: ``stem``, ``stages[i]`` and ``head``."""
        out: dict[str, tuple[int, int]] = {}
        for item in self.items:
            key = item.path.split(".")[0]
            m, p = out.get(key, (0, 0))
            out[key] = (m + item.macs, p + item.params)
        return out


def transformer_macs(in_channels: int, out_channels: int, num_queries: int, grid: int = 8) -> int:
    """MACs of a lightweight transformer with ``n`` queries (spec §3.5, complete count):
    S·n·(C_in + 2 + C_out) + 2·(2n²S + 6nS²), with S = grid²; independent of the feature size."""
    n, s = num_queries, grid * grid
    if n == 0:
        return 0
    return s * n * (in_channels + 2 + out_channels) + 2 * (2 * n * n * s + 6 * n * s * s)


def transformer_params(in_channels: int, out_channels: int, num_queries: int, grid: int = 8) -> int:
    """Parameters of a lightweight transformer (spec §3.4 with S = grid²)."""
    n, s = num_queries, grid * grid
    if n == 0:
        return 0
    return (in_channels + 2) * n + 2 * n + 2 * (6 * s * s + 4 * s) + n * s + n * out_channels + 2 * out_channels


def query_unit_macs(in_channels: int, out_channels: int, num_queries: int, grid: int = 8) -> int:
    """Marginal MACs of the last of ``num_queries`` queries: F(n) − F(n − 1) (includes the n² term)."""
    return transformer_macs(in_channels, out_channels, num_queries, grid) - transformer_macs(
        in_channels, out_channels, num_queries - 1, grid
    )


def channel_unit_macs(block: BlockSpec, in_hw: HW, kernel_size: int) -> int:
    """MACs of one hidden channel of the ``kernel_size`` group: C_in·A_in + k²·A_out + C_out·A_out."""
    out_hw = _down(in_hw) if block.stride == 2 else in_hw
    return (
        block.in_channels * _area(in_hw)
        + kernel_size * kernel_size * _area(out_hw)
        + block.out_channels * _area(out_hw)
    )


def block_cost(block: BlockSpec, in_hw: HW, grid: int = 8) -> tuple[int, int]:
    """(MACs, params) of a search block whose input is ``in_hw``."""
    out_hw = _down(in_hw) if block.stride == 2 else in_hw
    a_in, a_out = _area(in_hw), _area(out_hw)
    cin, cout = block.in_channels, block.out_channels
    macs = params = 0
    hidden = block.total_hidden
    if hidden > 0:
        dw_macs = sum(h * k * k for k, h in zip(block.kernel_sizes, block.hidden, strict=True))
        macs += cin * hidden * a_in + dw_macs * a_out + hidden * cout * a_out
        params += cin * hidden + 2 * hidden + dw_macs + 2 * hidden + hidden * cout + 2 * cout
    if not block.residual:
        g = block.shortcut_groups
        macs += (cin // g) * cout * a_out
        params += cin * cout // g
    macs += transformer_macs(cin, cout, block.num_queries, grid)
    params += transformer_params(cin, cout, block.num_queries, grid)
    return macs, params


def iter_blocks(spec: NetSpec, input_size: HW) -> Iterator[tuple[str, BlockSpec, HW]]:
    """Every search block of ``spec`` with its path and the (H, W) of its input, in construction order."""
    hw = tuple(input_size)
    for _ in spec.stem.channels:
        hw = _down(hw)
    sizes = [hw]
    for s, stage in enumerate(spec.stages):
        for f, fs in enumerate(stage.fuse):
            yield f"stages[{s}].fuse[{f}].block", fs.block, sizes[fs.src]
        if stage.new_branch is not None:
            yield f"stages[{s}].new_branch", stage.new_branch, sizes[-1]
            sizes = sizes + [_down(sizes[-1])]
        for b, chain in enumerate(stage.parallel):
            for i, block in enumerate(chain):
                yield f"stages[{s}].parallel[{b}][{i}]", block, sizes[b]
    head = spec.head
    if isinstance(head, ClassificationHeadSpec):
        for i, block in enumerate(head.incre):
            yield f"head.incre[{i}]", block, sizes[i]
        for i, block in enumerate(head.down):
            yield f"head.down[{i}]", block, sizes[i]
    else:
        yield "head.transform", head.transform, sizes[0]


def branch_sizes(spec: NetSpec, input_size: HW) -> list[HW]:
    """(H, W) of every branch after the last stage."""
    hw = tuple(input_size)
    for _ in spec.stem.channels:
        hw = _down(hw)
    sizes = [hw]
    for stage in spec.stages:
        if stage.new_branch is not None:
            sizes.append(_down(sizes[-1]))
    return sizes


def cost(spec: NetSpec | PointPillarsSpec, input_size: HW = (224, 224)) -> Cost:
    """Exact MACs and parameters of ``build_model(spec)`` on one ``input_size`` image (H, W).

    Raises :class:`SpecError` for a size that ``spec`` cannot take (:func:`check_input_size`)."""
    input_size = check_input_size(spec, input_size)
    if isinstance(spec, PointPillarsSpec):
        return pointpillars_cost(spec, input_size)
    items: list[CostItem] = []
    hw = tuple(input_size)
    cin = spec.stem.in_channels
    for i, c in enumerate(spec.stem.channels):
        hw = _down(hw)
        items.append(CostItem(f"stem[{i}]", cin * c * 9 * _area(hw), 9 * cin * c + 2 * c))
        cin = c
    for path, block, in_hw in iter_blocks(spec, input_size):
        macs, params = block_cost(block, in_hw, spec.token_grid)
        items.append(CostItem(path, macs, params))
    head = spec.head
    sizes = branch_sizes(spec, input_size)
    if isinstance(head, ClassificationHeadSpec):
        cin, last = head.incre[-1].out_channels, head.last_channels
        items.append(CostItem("head.final", cin * last * _area(sizes[-1]), cin * last + 2 * last))
        items.append(CostItem("head.classifier", last * head.num_classes, last * head.num_classes + head.num_classes))
    elif head.kind != "detection":  # a detection head ends at its transform block
        cin, k = head.transform.out_channels, head.num_outputs
        items.append(CostItem("head.classifier", cin * k * _area(sizes[0]), cin * k + k))
    return Cost(sum(i.macs for i in items), sum(i.params for i in items), tuple(items))


def pointpillars_cost(spec: PointPillarsSpec, input_size: HW) -> Cost:
    """Exact MACs and parameters of the PointPillars BEV backbone on a (C, H, W) pseudo-image, one item
    per block (``blocks[i]``: its 3×3 convs) and per upsampling (``deblocks[i]``: the transposed conv,
    counted as FlopCounterMode does, C_in·C_out·s²·A_in). BN adds 2 parameters per channel."""
    spec.output_size(input_size)  # rejects sizes whose upsampled maps would not concatenate
    items: list[CostItem] = []
    cin = spec.in_channels
    for i, (b, hw) in enumerate(zip(spec.blocks, spec.block_sizes(input_size), strict=True)):
        c = b.out_channels
        convs = [(cin, c)] + [(c, c)] * b.num_layers
        items.append(
            CostItem(
                f"blocks[{i}]",
                sum(9 * ci * co for ci, co in convs) * _area(hw),
                sum(9 * ci * co + 2 * co for ci, co in convs),
            )
        )
        s2 = b.up_stride * b.up_stride
        items.append(
            CostItem(f"deblocks[{i}]", c * b.up_channels * s2 * _area(hw), c * b.up_channels * s2 + 2 * b.up_channels)
        )
        cin = c
    return Cost(sum(i.macs for i in items), sum(i.params for i in items), tuple(items))


def format_macs(macs: float) -> str:
    """Human form: ``1.234G``, ``259.2M``, ``12.3K``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(macs) >= scale:
            return f"{macs / scale:.4g}{unit}"
    return f"{macs:.0f}"
