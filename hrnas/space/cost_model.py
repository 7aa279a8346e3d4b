"""The cost seam of the search: what a searchable unit costs, and what a whole network costs.

The search (penalty weights, the ρ controller's path, the final prune to a budget, the uniform
baseline, the shrink savings) never calls a MAC formula: it asks a :class:`CostModel`. A cost model
prices

- one hidden channel of one kernel group of a block (:meth:`CostModel.channel_price`): what the
  network saves when the block loses one channel of that group, *at the block's current widths*;
- one transformer query of a block when ``alive`` queries are in use (:meth:`CostModel.query_price`):
  what the network saves when the block goes from ``alive`` to ``alive − 1`` queries;

and totals a spec at an input size (:meth:`CostModel.total`), whose part that no unit removal can reach
is :meth:`CostModel.fixed`. Prices and totals are in :attr:`CostModel.unit`; :meth:`CostModel.format`
writes a value for reports.

Contract: for every block and group, ``total(spec) − total(spec with that block one channel of the
group smaller) == channel_price(block, in_hw, k)`` (and likewise for queries), so a search that removes
units one at a time can track the total exactly, re-pricing a block's units after each change. A kernel
group of 0 channels costs the same as an absent one. A price
may depend on the block's current widths (a latency table is non-linear in width); callers pass the
block as it is *now* and re-ask after every change. :class:`MacCost` — multiply-accumulates, the exact
analytic count of :mod:`hrnas.space.cost` — is the default everywhere; its prices happen not to depend
on the widths.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace

from hrnas.space.cost import channel_unit_macs, cost, format_macs, query_unit_macs
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import BlockSpec, NetSpec

HW = tuple[int, int]

__all__ = ["MAC_COST", "CostModel", "MacCost", "without_units"]


def without_units(spec: NetSpec) -> NetSpec:
    """``spec`` with every hidden channel and every query removed (all kernel groups empty, no
    transformer): what remains is the stem, the shortcuts of non-residual blocks and the head's fixed
    layers."""
    return spec.replace_blocks(
        {path: replace(b, hidden=(0,) * len(b.hidden), num_queries=0) for path, b in spec.blocks()}
    )


class CostModel(ABC):
    """Prices the searchable units of a :class:`~hrnas.space.spec.NetSpec` and totals specs.

    Subclasses set :attr:`unit` and implement :meth:`channel_price`, :meth:`query_price` and
    :meth:`total`; see the module docstring for the contract between them. A cost model holds no
    per-run state, so one instance can serve every search.
    """

    unit: str = ""

    @abstractmethod
    def channel_price(self, block: BlockSpec, in_hw: HW, kernel_size: int) -> float:
        """Cost of one hidden channel of the ``kernel_size`` group of ``block`` (at its current widths)
        whose input is ``in_hw`` (H, W): what removing one channel of that group saves."""

    @abstractmethod
    def query_price(self, block: BlockSpec, in_hw: HW, alive: int, grid: int) -> float:
        """Cost of one query of the transformer of ``block`` (input ``in_hw``, token grid ``grid``) when
        ``alive`` queries are in use: what going from ``alive`` to ``alive − 1`` saves (``alive >= 1``)."""

    @abstractmethod
    def total(self, spec: NetSpec | PointPillarsSpec, input_size: HW) -> float:
        """Cost of the whole network built from ``spec`` on one ``input_size`` (H, W) input."""

    blocking: int = 1
    """Channels per block of the runtime's layout: a deployed kernel group of ``c`` channels runs as one
    of ``ceil(c / blocking) · blocking`` (1: every width runs as it is)."""

    def fixed(self, spec: NetSpec, input_size: HW) -> float:
        """The part of :meth:`total` that no removal of channels or queries can reach."""
        return self.total(without_units(spec), input_size)

    def deployed_total(self, spec: NetSpec, input_size: HW) -> float:
        """:meth:`total` of ``spec`` as deployed, every kernel group padded to :attr:`blocking`."""
        return self.total(spec, input_size)

    def format(self, value: float) -> str:
        """``value`` in a short human form, without the unit (e.g. ``259.2M``)."""
        return f"{value:.4g}"

    def describe(self, value: float) -> str:
        """``value`` with its unit for reports, e.g. ``259.2M MACs``."""
        return f"{self.format(value)} {self.unit}".rstrip()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MacCost(CostModel):
    """Multiply-accumulates (= FLOPs / 2): the exact analytic count of :mod:`hrnas.space.cost`.

    A channel of the ``k`` group costs ``C_in·A_in + k²·A_out + C_out·A_out`` (spec §4.3); a query costs
    the marginal ``F(n) − F(n − 1)`` of the complete transformer count (spec §3.5) at ``n = alive``.
    Prices and totals are Python integers, so sums of prices equal totals exactly.
    """

    unit = "MACs"

    def channel_price(self, block: BlockSpec, in_hw: HW, kernel_size: int) -> int:
        return channel_unit_macs(block, in_hw, kernel_size)

    def query_price(self, block: BlockSpec, in_hw: HW, alive: int, grid: int) -> int:
        return query_unit_macs(block.in_channels, block.out_channels, max(int(alive), 1), grid)

    def total(self, spec: NetSpec | PointPillarsSpec, input_size: HW) -> int:
        return cost(spec, tuple(input_size)).macs

    def fixed(self, spec: NetSpec, input_size: HW) -> int:
        return cost(without_units(spec), tuple(input_size)).macs

    def format(self, value: float) -> str:
        return format_macs(value)


MAC_COST = MacCost()
"""The default cost model of the search."""
