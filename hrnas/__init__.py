"""hrnas: search efficient high-resolution networks (HR-NAS) for your task and compute budget."""

from hrnas.space.cost import Cost, cost
from hrnas.space.deploy import deploy
from hrnas.space.network import build_model
from hrnas.space.spec import BlockSpec, NetSpec, SpecError

__version__ = "0.1.0"
__all__ = ["BlockSpec", "Cost", "NetSpec", "SpecError", "build_model", "cost", "deploy"]
