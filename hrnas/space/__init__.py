"""The search space as data: spec, layers, builder, exact cost, the cost models that price searchable
units for the search (:mod:`hrnas.space.cost_model`) and the zoo (HR-NAS §2–§3)."""

from hrnas.space.cost import Cost, cost
from hrnas.space.cost_model import MAC_COST, CostModel, MacCost
from hrnas.space.network import build_model
from hrnas.space.spec import BlockSpec, NetSpec, SpecError

__all__ = ["MAC_COST", "BlockSpec", "Cost", "CostModel", "MacCost", "NetSpec", "SpecError", "build_model", "cost"]
