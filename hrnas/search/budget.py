"""Searching towards a MAC budget (beyond the paper, whose final size is an outcome of ρ; spec §9).

Two tools, both measured at the penalty input size:

- :class:`RhoController` adapts ρ during the search so that the MACs the network would have after a
  shrink follow a path from the supernet's MACs to the target;
- :func:`prune_to_budget` removes, at the end of the search, the least important remaining units until
  the network fits the budget, landing in ``[(1 − tolerance)·target, target]``.
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hrnas.search.shrink import BlockKeep, Keep, complete_keep, kept_spec
from hrnas.search.units import HW, collect_units, read_factors
from hrnas.space.cost import cost
from hrnas.space.spec import NetSpec

__all__ = ["BudgetError", "RhoController", "min_reachable_macs", "prune_to_budget"]


class BudgetError(ValueError):
    """A MAC target that no removal of units can reach."""


def min_reachable_macs(spec: NetSpec, input_size: HW) -> int:
    """MACs of ``spec`` with every channel and query removed: the stem, the shortcuts of non-residual
    blocks and the head's fixed layers, which no unit removal can reach."""
    empty = {
        path: BlockKeep(
            torch.zeros(b.without_empty_groups().total_hidden, dtype=torch.bool),
            torch.zeros(b.num_queries, dtype=torch.bool) if b.num_queries else None,
        )
        for path, b in spec.blocks()
    }
    return cost(kept_spec(spec, empty), tuple(input_size)).macs


@dataclass(order=True)
class _Candidate:
    score: float
    order: int
    kind: str  # "channel" | "query"
    path: str
    index: int
    delta: int  # MACs saved by removing it now


@torch.no_grad()
def prune_to_budget(
    model: nn.Module,
    spec: NetSpec,
    target_macs: int,
    input_size: HW,
    keep: Mapping[str, BlockKeep] | None = None,
    tolerance: float = 0.03,
) -> Keep:
    """Remove the least important units until ``cost(kept_spec(spec, keep), input_size).macs <= target``.

    Importance of a unit = ``|γ| / MACs it saves``: a channel saves its unit MACs; a query of a
    transformer with ``n`` remaining queries saves ``F(n) − F(n − 1)`` (its marginal cost, re-evaluated
    as queries go; the lowest-|γ| query of a block goes first). Units are removed greedily, least
    important first, skipping any unit whose removal would fall below ``(1 − tolerance)·target`` while
    a smaller one fits; the MACs are tracked exactly (each removal's saving is an exact term of
    :func:`~hrnas.space.cost.cost`) and checked against a full recomputation at the end. Ties are broken
    by spec order, so the result depends only on the γ (identical on every rank).

    Args:
        model: the network whose |γ| rank the units (e.g. the EMA shadow), built from ``spec``.
        spec: its spec.
        target_macs: the budget in MACs at ``input_size``.
        input_size: (H, W) of the budget.
        keep: units already removed (False) before budgeting, e.g. :func:`alive_masks`; None = all alive.
        tolerance: the lower edge of the landing window, as a fraction of the target.

    Returns:
        a new keep decision (the input is not modified). If the network already fits, ``keep`` as given.
        When only units much larger than ``tolerance·target`` remain, the result fits the budget but may
        land below the window (a ``RuntimeWarning`` says so).

    Raises:
        BudgetError: ``target_macs`` is below :func:`min_reachable_macs`; the message names both numbers.
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    base = complete_keep(spec, keep if keep is not None else {})
    masks = {
        p: BlockKeep(k.channels.clone(), None if k.queries is None else k.queries.clone()) for p, k in base.items()
    }
    current = cost(kept_spec(spec, masks), input_size).macs
    if current <= target_macs:
        return masks
    floor = min_reachable_macs(spec, input_size)
    if target_macs < floor:
        raise BudgetError(
            f"target_macs={target_macs} is below the minimum reachable cost {floor} MACs at "
            f"{input_size[0]}x{input_size[1]} (stem, shortcuts and head remain when every unit is removed)"
        )
    units = collect_units(spec, input_size)
    factors = read_factors(model, spec)
    low = (1.0 - tolerance) * target_macs

    heap: list[_Candidate] = []
    order = 0
    query_queue: dict[str, list[int]] = {}  # alive queries of a block, least |γ| first
    query_alive: dict[str, int] = {}
    query_gamma: dict[str, list[float]] = {}
    for path, u in units.items():
        k = masks[path]
        gammas = factors[path].channels.double().cpu().tolist()
        for g in u.groups:
            for i in range(g.start, g.stop):
                if bool(k.channels[i]):
                    heap.append(_Candidate(gammas[i] / g.unit_macs, order, "channel", path, i, g.unit_macs))
                    order += 1
        if k.queries is not None and factors[path].queries is not None:
            qg = factors[path].queries.double().cpu().tolist()
            alive = [i for i in range(len(qg)) if bool(k.queries[i])]
            alive.sort(key=lambda i: (qg[i], i))
            query_queue[path] = alive
            query_alive[path] = len(alive)
            query_gamma[path] = qg
    heapq.heapify(heap)

    def push_query(path: str) -> None:
        nonlocal order
        queue = query_queue[path]
        if queue:
            delta = units[path].query_macs(query_alive[path])
            heapq.heappush(heap, _Candidate(query_gamma[path][queue[0]] / delta, order, "query", path, queue[0], delta))
            order += 1

    for path in query_queue:
        push_query(path)

    removed: list[_Candidate] = []
    skipped: list[_Candidate] = []

    def remove(c: _Candidate) -> None:
        nonlocal current
        current -= c.delta
        removed.append(c)
        if c.kind == "channel":
            masks[c.path].channels[c.index] = False
        else:
            queries = masks[c.path].queries
            assert queries is not None
            queries[c.index] = False
            query_queue[c.path].pop(0)
            query_alive[c.path] -= 1
            push_query(c.path)

    while current > target_macs and heap:
        c = heapq.heappop(heap)
        if current - c.delta >= low:
            remove(c)
        else:
            skipped.append(c)  # would overshoot the window; a smaller unit may still fit
    if current > target_macs:
        # every remaining unit overshoots the window: take the smallest, then give back what fits
        remove(min(skipped, key=lambda c: (c.delta, c.score, c.order)))
        for c in sorted(removed[:-1], key=lambda c: (-c.score, c.order)):
            if c.kind == "channel" and current + c.delta <= target_macs:
                masks[c.path].channels[c.index] = True
                current += c.delta
        if current < low:
            warnings.warn(
                f"prune_to_budget: landed at {current} MACs, below {low:.0f} = {1 - tolerance:g}·target "
                f"(the remaining units are larger than the window)",
                RuntimeWarning,
                stacklevel=2,
            )
    exact = cost(kept_spec(spec, masks), input_size).macs
    if exact != current:
        raise RuntimeError(f"prune_to_budget: tracked {current} MACs but the spec costs {exact}")
    return masks


class RhoController:
    """Adapts ρ so that the network's MACs follow a path to a target (multiplicative integral control).

    The *path* starts at ``start_macs`` (the supernet) at ``start_step`` (the end of the ρ warm-up) and
    descends geometrically to ``target_macs`` at ``end_step`` (by default 75 % of the way from the
    start to the last step, leaving the rest of the run to settle), then stays there:
    ``path(t) = start·(target/start)^p`` with ``p = (t − start_step)/(end_step − start_step)`` in [0, 1].

    Every ``update_every`` steps from ``start_step`` on, :meth:`update` receives the MACs the network
    would have after a shrink now (units with |γ| ≤ threshold removed) and sets
    ``ρ ← clip(ρ·clip((macs/path)^gain, 1/max_factor, max_factor), rho_min, rho_max)``: ρ grows while the
    network is larger than the path and shrinks while it is smaller. Because dead units stay at |γ| ≈ 0
    only under pressure and a unit removed by a shrink cannot come back, the path reaches the target
    before the end; the final :func:`prune_to_budget` removes whatever is still over the budget.

    Args:
        rho: the starting ρ (> 0).
        start_macs, target_macs: MACs at the penalty input size.
        start_step, end_step: the path's ends (optimizer steps, ``end_step > start_step``).
        update_every: steps between updates.
        gain: exponent of the MAC ratio per update.
        max_factor: the largest change of ρ per update (> 1).
        rho_min, rho_max: bounds of ρ; default ``rho/100`` and ``rho·100``.
    """

    def __init__(
        self,
        rho: float,
        start_macs: int,
        target_macs: int,
        start_step: int,
        end_step: int,
        update_every: int = 1,
        gain: float = 1.0,
        max_factor: float = 1.2,
        rho_min: float | None = None,
        rho_max: float | None = None,
    ) -> None:
        if not rho > 0:
            raise ValueError(f"RhoController needs a starting rho > 0, got {rho}")
        if start_macs <= 0 or target_macs <= 0:
            raise ValueError(f"MACs must be positive (start {start_macs}, target {target_macs})")
        if end_step <= start_step:
            raise ValueError(f"end_step={end_step} must be after start_step={start_step}")
        if update_every < 1 or max_factor <= 1.0 or gain <= 0:
            raise ValueError("update_every must be >= 1, max_factor > 1 and gain > 0")
        self.rho = float(rho)
        self.start_macs = int(start_macs)
        self.target_macs = int(target_macs)
        self.start_step = int(start_step)
        self.end_step = int(end_step)
        self.update_every = int(update_every)
        self.gain = float(gain)
        self.max_factor = float(max_factor)
        self.rho_min = float(rho_min) if rho_min is not None else self.rho / 100.0
        self.rho_max = float(rho_max) if rho_max is not None else self.rho * 100.0
        self.last_update: int | None = None

    def path_macs(self, step: int) -> float:
        """The MACs the network should have after ``step`` steps."""
        p = (step - self.start_step) / (self.end_step - self.start_step)
        p = min(max(p, 0.0), 1.0)
        return self.start_macs * (self.target_macs / self.start_macs) ** p

    def due(self, step: int) -> bool:
        """Whether :meth:`update` should be called at ``step``."""
        if step < self.start_step or step == self.last_update:
            return False
        return (step - self.start_step) % self.update_every == 0

    def update(self, step: int, macs: float) -> float:
        """Adjust ρ from the MACs measured at ``step``; return the new ρ. Mutates the controller."""
        ratio = max(float(macs), 1.0) / self.path_macs(step)
        factor = min(max(ratio**self.gain, 1.0 / self.max_factor), self.max_factor)
        if math.isfinite(factor):
            self.rho = min(max(self.rho * factor, self.rho_min), self.rho_max)
        self.last_update = step
        return self.rho

    def state_dict(self) -> dict[str, Any]:
        """Plain state (the arguments and the current ρ)."""
        return {
            "rho": self.rho,
            "start_macs": self.start_macs,
            "target_macs": self.target_macs,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "update_every": self.update_every,
            "gain": self.gain,
            "max_factor": self.max_factor,
            "rho_min": self.rho_min,
            "rho_max": self.rho_max,
            "last_update": self.last_update,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        for key, value in state.items():
            if not hasattr(self, key):
                raise KeyError(f"unknown RhoController state key {key!r}")
            setattr(self, key, value)
