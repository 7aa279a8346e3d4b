"""Searchable units of a network and their importance factors (HR-NAS spec §4.1).

Every search block contributes two kinds of units:

- *channels*: the hidden channels of its depthwise kernel groups. Group ``i`` occupies the contiguous
  slice ``[start, stop)`` of the block's ``dw_bn`` (the BatchNorm after the mixed depthwise conv); the
  γ of ``dw_bn`` are the channels' importance factors;
- *queries*: the tokens of its lightweight transformer, whose importance factors are the γ of the
  transformer's ``input_norm``.

Units are derived from the :class:`~hrnas.space.spec.NetSpec` alone (block paths, widths, kernel sizes,
input sizes from :func:`~hrnas.space.cost.iter_blocks`) and priced by a
:class:`~hrnas.space.cost_model.CostModel` (MACs by default); modules are found with
:func:`~hrnas.space.network.block_modules`, never by matching parameter names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hrnas.space.cost import iter_blocks
from hrnas.space.cost_model import MAC_COST, CostModel
from hrnas.space.layers import SearchBlock
from hrnas.space.network import HRNet, block_modules
from hrnas.space.spec import BlockSpec, NetSpec
from hrnas.utils.distributed import unwrap_model

HW = tuple[int, int]

__all__ = [
    "BlockFactors",
    "BlockUnits",
    "KernelGroup",
    "as_hrnet",
    "collect_units",
    "importance_factors",
    "iter_factor_modules",
    "read_factors",
    "search_blocks",
]


@dataclass(frozen=True)
class KernelGroup:
    """The channels of one kernel size in a block: ``dw_bn`` entries ``[start, stop)``.

    ``unit_cost`` is the price of one of its channels (:meth:`CostModel.channel_price` at the block's
    widths and the input size the units were collected for; with MACs C_in·A_in + k²·A_out + C_out·A_out,
    spec §4.3).
    """

    index: int
    kernel_size: int
    start: int
    stop: int
    unit_cost: float

    @property
    def size(self) -> int:
        """Number of channels of the group."""
        return self.stop - self.start


@dataclass(frozen=True)
class BlockUnits:
    """The searchable units of one block.

    Attributes:
        path: the block's spec path (as in :meth:`NetSpec.blocks`).
        block: the block spec as built (empty kernel groups removed, see ``SearchBlock.spec``).
        in_hw: (H, W) of the block's input at the collection input size.
        groups: the non-empty kernel groups, in ``dw_bn`` order.
        grid: token grid side of the transformer (spec §3).
        cost_model: the model that priced the units (and prices the queries).
    """

    path: str
    block: BlockSpec
    in_hw: HW
    groups: tuple[KernelGroup, ...]
    grid: int
    cost_model: CostModel = MAC_COST

    @property
    def num_channels(self) -> int:
        """Hidden channels of the block (= ``dw_bn.num_features``; 0 when it has no conv path)."""
        return self.block.total_hidden

    @property
    def num_queries(self) -> int:
        """Queries of the block's transformer (0 when it has none)."""
        return self.block.num_queries

    def channel_costs(self) -> Tensor:
        """(num_channels,) float64: the price of each hidden channel, in ``dw_bn`` order."""
        out = torch.empty(self.num_channels, dtype=torch.float64)
        for g in self.groups:
            out[g.start : g.stop] = g.unit_cost
        return out

    def query_cost(self, alive: int) -> float:
        """Price of one query when ``alive`` queries are in use, at n = max(alive, 1) (with MACs the
        marginal F(n) − F(n − 1) of spec §3.5, which includes the query's share of the n² attention term)."""
        return self.cost_model.query_price(self.block, self.in_hw, max(int(alive), 1), self.grid)


@dataclass(frozen=True)
class BlockFactors:
    """Importance factors |γ| of one block: ``channels`` (H,) and ``queries`` (n,) or None; detached
    float32 copies on the model's device."""

    channels: Tensor
    queries: Tensor | None


def as_hrnet(model: nn.Module) -> HRNet:
    """The :class:`HRNet` under a DDP / ``torch.compile`` wrapper, or the one a task model built around
    it (e.g. a detector: PillarVFE → HRNet backbone → anchor head) exposes as its ``hrnet`` attribute;
    raises ``TypeError`` otherwise."""
    inner = unwrap_model(model)
    if isinstance(inner, HRNet):
        return inner
    net = getattr(inner, "hrnet", None)
    if isinstance(net, HRNet):
        return net
    raise TypeError(f"expected an HRNet built from a spec, got {type(inner).__name__}")


def search_blocks(model: nn.Module, spec: NetSpec) -> dict[str, SearchBlock]:
    """``{path: SearchBlock}`` of ``model`` for every block of ``spec``, in spec order.

    Raises:
        ValueError: ``model`` was not built from ``spec`` (a block path is missing or a block's widths,
            kernels or query count differ), naming the first mismatch.
    """
    modules = block_modules(as_hrnet(model))
    if len(modules) != len(spec.blocks()):
        raise ValueError(f"the model has {len(modules)} search blocks, the spec {len(spec.blocks())}")
    out: dict[str, SearchBlock] = {}
    for path, block in spec.blocks():
        module = modules.get(path)
        if module is None:
            raise ValueError(f"{path}: the model has no such block (was it built from this spec?)")
        expected = block.without_empty_groups()
        if module.spec != expected:
            raise ValueError(f"{path}: the model's block is {module.spec}, the spec says {expected}")
        out[path] = module
    return out


def collect_units(spec: NetSpec, input_size: HW, cost_model: CostModel = MAC_COST) -> dict[str, BlockUnits]:
    """The searchable units of every block of ``spec``, priced by ``cost_model`` at ``input_size`` (H, W).

    Blocks without channels or queries are included (with no groups and 0 queries) so that the result
    has one entry per block, in the order of :meth:`NetSpec.blocks`.
    """
    out: dict[str, BlockUnits] = {}
    for path, block, in_hw in iter_blocks(spec, tuple(input_size)):
        built = block.without_empty_groups()
        groups = []
        start = 0
        for i, (k, h) in enumerate(zip(built.kernel_sizes, built.hidden, strict=True)):
            groups.append(KernelGroup(i, k, start, start + h, cost_model.channel_price(built, in_hw, k)))
            start += h
        hw = (int(in_hw[0]), int(in_hw[1]))
        out[path] = BlockUnits(path, built, hw, tuple(groups), spec.token_grid, cost_model)
    return out


def iter_factor_modules(
    blocks: dict[str, SearchBlock],
) -> Iterator[tuple[str, nn.BatchNorm2d | None, nn.BatchNorm2d | None]]:
    """``(path, dw_bn or None, transformer.input_norm or None)`` for each block."""
    for path, module in blocks.items():
        dw_bn = module.dw_bn if module.spec.total_hidden > 0 else None
        q_bn = module.transformer.input_norm if module.transformer is not None else None
        yield path, dw_bn, q_bn


def importance_factors(model: nn.Module, spec: NetSpec) -> list[nn.Parameter]:
    """The γ parameters of every ``dw_bn`` and every ``transformer.input_norm`` of ``model`` (built from
    ``spec``), block by block in spec order, ``dw_bn`` first (e.g. for their own optimizer group)."""
    return [
        bn.weight
        for _, dw_bn, q_bn in iter_factor_modules(search_blocks(model, spec))
        for bn in (dw_bn, q_bn)
        if bn is not None
    ]


@torch.no_grad()
def read_factors(model: nn.Module, spec: NetSpec) -> dict[str, BlockFactors]:
    """|γ| of every channel and query of ``model`` (built from ``spec``), as detached float32 tensors.

    A block without hidden channels gets an empty (0,) ``channels`` tensor; a block without a
    transformer gets ``queries=None``. Nothing is mutated.
    """
    out: dict[str, BlockFactors] = {}
    device = next(as_hrnet(model).parameters()).device
    for path, dw_bn, q_bn in iter_factor_modules(search_blocks(model, spec)):
        if dw_bn is not None:
            channels = dw_bn.weight.detach().abs().float().clone()
        else:
            channels = torch.zeros(0, device=device)
        queries = None if q_bn is None else q_bn.weight.detach().abs().float().clone()
        out[path] = BlockFactors(channels, queries)
    return out
