"""The baseline a search must beat: the supernet thinned *uniformly* to a budget.

Every kernel group and every transformer keeps the same fraction α of its units (rounded, at least one
unit where the supernet has any), with α found by bisection so that the thinned network costs at most
the budget and as close to it as the rounding allows. Costs come from a
:class:`~hrnas.space.cost_model.CostModel` (MACs by default).
"""

from __future__ import annotations

from dataclasses import replace

from hrnas.search.budget import BudgetError
from hrnas.space.cost_model import MAC_COST, CostModel
from hrnas.space.spec import NetSpec

HW = tuple[int, int]

__all__ = ["uniformly_thinned"]


def _thin(spec: NetSpec, alpha: float) -> NetSpec:
    def scale(n: int) -> int:
        return 0 if n == 0 else max(1, round(alpha * n))

    return spec.replace_blocks(
        {
            path: replace(block, hidden=tuple(scale(h) for h in block.hidden), num_queries=scale(block.num_queries))
            for path, block in spec.blocks()
        }
    )


def uniformly_thinned(spec: NetSpec, budget: float, input_size: HW, cost_model: CostModel = MAC_COST) -> NetSpec:
    """``spec`` with every kernel group and transformer scaled by one factor to cost ≤ ``budget``
    (in ``cost_model.unit`` at ``input_size``).

    Raises:
        BudgetError: even one unit per kernel group and transformer costs more than ``budget``.
    """
    thinnest = cost_model.total(_thin(spec, 0.0), input_size)
    if thinnest > budget:
        raise BudgetError(
            f"the budget {budget} {cost_model.unit} is below the cost of the uniformly thinnest network "
            f"({thinnest} {cost_model.unit})"
        )
    lo, hi = 0.0, 1.0
    if cost_model.total(spec, input_size) <= budget:
        return spec
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost_model.total(_thin(spec, mid), input_size) <= budget:
            lo = mid
        else:
            hi = mid
    return replace(_thin(spec, lo), name=f"{spec.name}_uniform" if spec.name else "")
