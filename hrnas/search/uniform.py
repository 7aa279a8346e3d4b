"""The baseline a search must beat: the supernet thinned *uniformly* to a MAC budget.

Every kernel group and every transformer keeps the same fraction α of its units (rounded, at least one
unit where the supernet has any), with α found by bisection so that the thinned network costs at most
the target and as close to it as the rounding allows.
"""

from __future__ import annotations

from dataclasses import replace

from hrnas.search.budget import BudgetError
from hrnas.space.cost import cost
from hrnas.space.spec import NetSpec

HW = tuple[int, int]


def _thin(spec: NetSpec, alpha: float) -> NetSpec:
    def scale(n: int) -> int:
        return 0 if n == 0 else max(1, round(alpha * n))

    return spec.replace_blocks(
        {
            path: replace(block, hidden=tuple(scale(h) for h in block.hidden), num_queries=scale(block.num_queries))
            for path, block in spec.blocks()
        }
    )


def uniformly_thinned(spec: NetSpec, target_macs: int, input_size: HW) -> NetSpec:
    """``spec`` with every kernel group and transformer scaled by one factor to cost ≤ ``target_macs``."""
    if cost(_thin(spec, 0.0), input_size).macs > target_macs:
        raise BudgetError(
            f"target_macs={target_macs} is below the cost of the uniformly thinnest network "
            f"({cost(_thin(spec, 0.0), input_size).macs} MACs)"
        )
    lo, hi = 0.0, 1.0
    if cost(spec, input_size).macs <= target_macs:
        return spec
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost(_thin(spec, mid), input_size).macs <= target_macs:
            lo = mid
        else:
            hi = mid
    return replace(_thin(spec, lo), name=f"{spec.name}_uniform" if spec.name else "")
