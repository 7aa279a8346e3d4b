"""The schedule of the penalty weight ρ during a search (HR-NAS spec §4.4)."""

from __future__ import annotations

__all__ = ["rho_at"]


def rho_at(step: int, rho: float, free_steps: int, warmup_steps: int) -> float:
    """The weight ρ(t) of the cost-weighted L1 penalty at optimizer step ``step`` (spec §4.4).

    ``0`` for ``t < free_steps``; ``rho·(t − free_steps)/(warmup_steps − free_steps)`` for
    ``free_steps ≤ t < warmup_steps``; ``rho`` afterwards. ``warmup_steps`` is the absolute step at which
    ρ reaches its full value (``warmup_steps == free_steps`` jumps straight to ``rho``).
    """
    if warmup_steps < free_steps:
        raise ValueError(f"rho warmup_steps={warmup_steps} is before free_steps={free_steps}")
    if step < free_steps:
        return 0.0
    if step < warmup_steps:
        return rho * (step - free_steps) / (warmup_steps - free_steps)
    return float(rho)
