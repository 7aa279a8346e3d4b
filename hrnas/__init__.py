"""hrnas: search efficient high-resolution networks (HR-NAS) for your task and compute budget.

The names below are loaded on first use, so that ``import hrnas.cli`` does not load torch before the
command has set the CPU thread settings (:mod:`hrnas.utils.threads`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hrnas.space.cost import Cost, cost
    from hrnas.space.deploy import deploy
    from hrnas.space.network import build_model
    from hrnas.space.spec import BlockSpec, NetSpec, SpecError

__version__ = "0.1.0"
__all__ = ["BlockSpec", "Cost", "NetSpec", "SpecError", "build_model", "cost", "deploy"]

_HOMES = {
    "Cost": "hrnas.space.cost",
    "cost": "hrnas.space.cost",
    "deploy": "hrnas.space.deploy",
    "build_model": "hrnas.space.network",
    "BlockSpec": "hrnas.space.spec",
    "NetSpec": "hrnas.space.spec",
    "SpecError": "hrnas.space.spec",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'hrnas' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
