"""The search algorithm (HR-NAS spec §4): searchable units, the resource-aware L1 penalty and its ρ
schedule, progressive shrinking with optimizer/EMA remapping, budgets, the uniform baseline, and the
controller a training loop drives.

Every cost the search uses (unit prices, totals, budgets) comes from a
:class:`~hrnas.space.cost_model.CostModel` passed in (MACs by default). The search imports only
:mod:`hrnas.space` and :mod:`hrnas.utils`.

The shrink function itself is ``hrnas.search.shrink.shrink`` (not re-exported here, so that
``hrnas.search.shrink`` stays the module).
"""

from hrnas.search.budget import BudgetError, RhoController, min_reachable_cost, prune_to_budget
from hrnas.search.controller import SearchController, ShrinkResult, architecture_record
from hrnas.search.penalty import ResourcePenalty, mean_unit_cost
from hrnas.search.schedule import rho_at
from hrnas.search.shrink import (
    BlockKeep,
    IndexMap,
    Keep,
    alive_masks,
    keep_all,
    keep_from_lists,
    keep_to_lists,
    kept_spec,
    rebind_scheduler,
    remap_optimizer,
)
from hrnas.search.uniform import uniformly_thinned
from hrnas.search.units import (
    BlockFactors,
    BlockUnits,
    KernelGroup,
    collect_units,
    importance_factors,
    read_factors,
    search_blocks,
)

__all__ = [
    "BlockFactors",
    "BlockKeep",
    "BlockUnits",
    "BudgetError",
    "IndexMap",
    "Keep",
    "KernelGroup",
    "ResourcePenalty",
    "RhoController",
    "SearchController",
    "ShrinkResult",
    "alive_masks",
    "architecture_record",
    "collect_units",
    "importance_factors",
    "keep_all",
    "keep_from_lists",
    "keep_to_lists",
    "kept_spec",
    "mean_unit_cost",
    "min_reachable_cost",
    "prune_to_budget",
    "read_factors",
    "rebind_scheduler",
    "remap_optimizer",
    "rho_at",
    "search_blocks",
    "uniformly_thinned",
]
