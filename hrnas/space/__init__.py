"""The search space as data: spec, layers, builder, cost model and zoo (HR-NAS §2–§3)."""

from hrnas.space.cost import Cost, cost
from hrnas.space.network import build_model
from hrnas.space.spec import BlockSpec, NetSpec, SpecError

__all__ = ["BlockSpec", "Cost", "NetSpec", "SpecError", "build_model", "cost"]
