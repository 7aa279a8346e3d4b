"""Searching towards a budget (beyond the paper, whose final size is an outcome of ρ; spec §9).

Budgets are in the unit of a :class:`~hrnas.space.cost_model.CostModel` (MACs by default) and measured
at the penalty input size. Two tools:

- :class:`RhoController` defines a geometric cost *path* from the supernet's cost to the budget and
  adapts ρ during the search so that the cost the network would have after a shrink follows it;
- :func:`prune_to_budget` removes the least important remaining units until the network fits a cost,
  landing in ``[(1 − tolerance)·cost, cost]``: at a scheduled shrink that the penalty left above the
  path (down to the path's cost) and at the end of the search (down to the budget).
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from hrnas.search.shrink import BlockKeep, Keep, complete_keep, kept_spec
from hrnas.search.units import HW, collect_units, read_factors
from hrnas.space.cost_model import MAC_COST, CostModel
from hrnas.space.spec import BlockSpec, NetSpec
from hrnas.utils.errors import HrnasError

__all__ = ["BudgetError", "RhoController", "check_budget", "fit_to_blocking", "min_reachable_cost", "prune_to_budget"]


class BudgetError(HrnasError, ValueError):
    """A budget that no removal of units can reach."""


def min_reachable_cost(spec: NetSpec, input_size: HW, cost_model: CostModel = MAC_COST) -> float:
    """Cost of ``spec`` with every channel and query removed (:meth:`CostModel.fixed`): the stem, the
    shortcuts of non-residual blocks and the head's fixed layers, which no unit removal can reach."""
    return cost_model.fixed(spec, tuple(input_size))


def check_budget(
    spec: NetSpec,
    input_size: HW,
    budget: float,
    cost_model: CostModel = MAC_COST,
    *,
    force: bool = False,
    what: str = "budget",
) -> None:
    """Check a search budget against what searching ``spec`` can do, before any work starts.

    Raises :class:`BudgetError` (``what`` names the budget in the message, e.g. ``search.target_macs``) when
    the budget is not positive, below :func:`min_reachable_cost` (no removal of units reaches it), or at or
    above the cost of ``spec`` itself: the search would prune nothing, which is only done with
    ``force=True`` (``hrnas search --force``).
    """
    size = (int(input_size[0]), int(input_size[1]))
    at = f"at {size[0]}×{size[1]}"
    if not budget > 0:
        raise BudgetError(f"{what}: {budget!r} is not positive; give the cost the searched network may have")
    total = cost_model.total(spec, size)
    if budget >= total and not force:
        raise BudgetError(
            f"{what}: {cost_model.describe(budget)} is at or above the cost of {spec.name or 'the supernet'} "
            f"itself ({cost_model.describe(total)} {at}): nothing would be pruned; lower it, or pass --force "
            "to search anyway"
        )
    floor = min_reachable_cost(spec, size, cost_model)
    if budget < floor:
        raise BudgetError(
            f"{what}: {cost_model.describe(budget)} is below the minimum reachable cost "
            f"{cost_model.describe(floor)} {at} (the stem, the shortcuts and the head's fixed layers)"
        )


def _same_total(tracked: float, exact: float) -> bool:
    """Integer totals (MACs) must agree exactly, fractional ones (e.g. latency) up to rounding."""
    if isinstance(tracked, int) and isinstance(exact, int):
        return tracked == exact
    return math.isclose(tracked, exact, rel_tol=1e-9, abs_tol=1e-12)


@dataclass(order=True)
class _Candidate:
    score: float
    order: int
    kind: str = field(compare=False)  # "channel" | "query"
    path: str = field(compare=False)
    index: int = field(compare=False)
    group: int = field(compare=False)  # kernel group of a channel (-1 for a query)
    gamma: float = field(compare=False)
    delta: float = field(compare=False)  # what removing it saves, priced at the block's widths of `version`
    version: int = field(compare=False)


def _copied(keep: Mapping[str, BlockKeep]) -> Keep:
    """A keep decision whose masks can be changed without touching ``keep``'s."""
    return {p: BlockKeep(k.channels.clone(), None if k.queries is None else k.queries.clone()) for p, k in keep.items()}


@torch.no_grad()
def _score(gamma: float, price: float) -> float:
    """Removal order of a unit: importance per unit of cost, least first; a unit that saves nothing (a
    flat stretch of a measured cost curve) goes last."""
    return gamma / price if price > 0 else math.inf


def prune_to_budget(
    model: nn.Module,
    spec: NetSpec,
    budget: float,
    input_size: HW,
    keep: Mapping[str, BlockKeep] | None = None,
    tolerance: float = 0.03,
    cost_model: CostModel = MAC_COST,
) -> Keep:
    """Remove the least important units until ``cost_model.total(kept_spec(spec, keep)) <= budget``.

    Importance of a unit = ``|γ| / what removing it saves``: a channel saves its price, a query of a
    transformer with ``n`` remaining queries saves the price of the ``n``-th query (re-evaluated as
    queries go; the lowest-|γ| query of a block goes first). Prices are those of the block at its current
    widths: when a block has changed since a unit was priced, the unit is re-priced as it comes up (with
    MACs a channel's price never changes). Units are removed greedily, least important first, skipping
    any unit whose removal would fall below ``(1 − tolerance)·budget`` while a smaller one fits; the
    total is tracked from the prices (each saving is an exact term of the total) and checked against a
    full recomputation at the end. Ties are broken by spec order, so the result depends only on the γ
    (identical on every rank).

    Args:
        model: the network whose |γ| rank the units (e.g. the EMA shadow), built from ``spec``.
        spec: its spec.
        budget: the budget at ``input_size``, in ``cost_model.unit``.
        input_size: (H, W) of the budget.
        keep: units already removed (False) before budgeting, e.g. :func:`alive_masks`; None = all alive.
        tolerance: the lower edge of the landing window, as a fraction of the budget.
        cost_model: prices the units and totals the spec (MACs by default).

    Returns:
        a new keep decision (the input is not modified). If the network already fits, ``keep`` as given.
        When only units much larger than ``tolerance·budget`` remain, the result fits the budget but may
        land below the window (a ``RuntimeWarning`` says so).

    Raises:
        BudgetError: ``budget`` is below :func:`min_reachable_cost`; the message names both numbers.
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    cm = cost_model
    base = complete_keep(spec, keep if keep is not None else {})
    masks = _copied(base)
    current = cm.total(kept_spec(spec, masks), input_size)
    if current <= budget:
        return masks
    floor = min_reachable_cost(spec, input_size, cm)
    if budget < floor:
        raise BudgetError(
            f"the budget {budget} {cm.unit} is below the minimum reachable cost {floor} {cm.unit} at "
            f"{input_size[0]}x{input_size[1]} (stem, shortcuts and head remain when every unit is removed)"
        )
    units = collect_units(spec, input_size, cm)
    factors = read_factors(model, spec)
    low = (1.0 - tolerance) * budget

    # the blocks as they are now: alive channels per kernel group and alive queries; a version per block
    # that changes with every removal, so that stale prices are noticed
    widths = {
        path: [int(masks[path].channels[g.start : g.stop].sum()) for g in u.groups] for path, u in units.items()
    }
    queries_alive = {
        path: 0 if masks[path].queries is None else int(masks[path].queries.sum()) for path in units
    }
    version = dict.fromkeys(units, 0)

    def block_now(path: str, restored_group: int | None = None) -> BlockSpec:
        hidden = list(widths[path])
        if restored_group is not None:
            hidden[restored_group] += 1
        return replace(units[path].block, hidden=tuple(hidden), num_queries=queries_alive[path])

    def channel_price(path: str, group: int, restored: bool = False) -> float:
        u = units[path]
        block = block_now(path, group if restored else None)
        return cm.channel_price(block, u.in_hw, u.groups[group].kernel_size)

    def price(c: _Candidate) -> float:
        if c.kind == "channel":
            return channel_price(c.path, c.group)
        u = units[c.path]
        return cm.query_price(block_now(c.path), u.in_hw, max(queries_alive[c.path], 1), u.grid)

    heap: list[_Candidate] = []
    order = 0
    query_queue: dict[str, list[int]] = {}  # alive queries of a block, least |γ| first
    query_gamma: dict[str, list[float]] = {}
    for path, u in units.items():
        k = masks[path]
        gammas = factors[path].channels.double().cpu().tolist()
        for g in u.groups:
            delta = channel_price(path, g.index)
            for i in range(g.start, g.stop):
                if bool(k.channels[i]):
                    score = _score(gammas[i], delta)
                    heap.append(_Candidate(score, order, "channel", path, i, g.index, gammas[i], delta, 0))
                    order += 1
        if k.queries is not None and factors[path].queries is not None:
            qg = factors[path].queries.double().cpu().tolist()
            alive = [i for i in range(len(qg)) if bool(k.queries[i])]
            alive.sort(key=lambda i: (qg[i], i))
            query_queue[path] = alive
            query_gamma[path] = qg
    heapq.heapify(heap)

    def push_query(path: str) -> None:
        nonlocal order
        queue = query_queue[path]
        if queue:
            gamma = query_gamma[path][queue[0]]
            c = _Candidate(0.0, order, "query", path, queue[0], -1, gamma, 0.0, version[path])
            c.delta = price(c)
            c.score = _score(gamma, c.delta)
            heapq.heappush(heap, c)
            order += 1

    def refresh(c: _Candidate) -> bool:
        """Re-price ``c`` if its block changed since; True when its price moved."""
        if c.version == version[c.path]:
            return False
        c.version = version[c.path]
        delta = price(c)
        if delta == c.delta:
            return False
        c.delta, c.score = delta, _score(c.gamma, delta)
        return True

    for path in query_queue:
        push_query(path)

    removed: list[_Candidate] = []
    skipped: list[_Candidate] = []

    def remove(c: _Candidate) -> None:
        nonlocal current
        current -= c.delta
        removed.append(c)
        version[c.path] += 1
        if c.kind == "channel":
            masks[c.path].channels[c.index] = False
            widths[c.path][c.group] -= 1
        else:
            queries = masks[c.path].queries
            assert queries is not None
            queries[c.index] = False
            query_queue[c.path].pop(0)
            queries_alive[c.path] -= 1
            push_query(c.path)

    while current > budget and heap:
        c = heapq.heappop(heap)
        if refresh(c):
            heapq.heappush(heap, c)  # its importance moved with its price: back in line
            continue
        if current - c.delta >= low:
            remove(c)
        else:
            skipped.append(c)  # would overshoot the window; a smaller unit may still fit
    if current > budget:
        # every remaining unit overshoots the window: take the smallest, then give back what fits
        for c in skipped:
            refresh(c)
        remove(min(skipped, key=lambda c: (c.delta, c.score, c.order)))
        for c in sorted(removed[:-1], key=lambda c: (-c.score, c.order)):
            if c.kind != "channel":
                continue
            back = channel_price(c.path, c.group, restored=True)
            if current + back <= budget:
                masks[c.path].channels[c.index] = True
                widths[c.path][c.group] += 1
                version[c.path] += 1
                current += back
        if current < low:
            warnings.warn(
                f"prune_to_budget: landed at {current} {cm.unit}, below {low:.0f} = {1 - tolerance:g}·budget "
                f"(the remaining units are larger than the window)",
                RuntimeWarning,
                stacklevel=2,
            )
    exact = cm.total(kept_spec(spec, masks), input_size)
    if not _same_total(current, exact):
        raise RuntimeError(f"prune_to_budget: tracked {current} {cm.unit} but {cm!r} totals the spec at {exact}")
    return masks


class RhoController:
    """Adapts ρ so that the network's cost follows a path to a budget (multiplicative integral control).

    Costs are in any one unit (that of the search's :class:`~hrnas.space.cost_model.CostModel`). The
    *path* starts at ``start_cost`` (the supernet) at ``start_step`` (in a search, the step at which the
    penalty starts, ``rho_free_steps``) and descends geometrically to ``target_cost`` at ``end_step``
    (by default 75 % of the way from the start to the last step, leaving the rest of the run to settle),
    then stays there: ``path(t) = start·(target/start)^p`` with
    ``p = (t − start_step)/(end_step − start_step)`` in [0, 1].

    Every ``update_every`` steps from ``update_from`` on (in a search, the end of the ρ warm-up, so
    that the control does not wind ρ up while the ramp holds the penalty back), :meth:`update`
    receives the cost the network would have after a shrink now (units with |γ| ≤ threshold removed)
    and sets ``ρ ← clip(ρ·clip((cost/path)^gain, 1/max_factor, max_factor), rho_min, rho_max)``: ρ grows
    while the network is larger than the path and shrinks while it is smaller. On a long run this is
    enough for the penalty to keep the network on the path. On a short one the factors cannot fall
    below the threshold as fast as the path descends (an adaptive optimizer moves a factor by about
    its learning rate per step, whatever ρ); the search controller then cuts the least important
    units down to the path at each shrink (:meth:`hrnas.search.controller.SearchController.decide`),
    and the final :func:`prune_to_budget` removes whatever is still over the budget.

    Args:
        rho: the starting ρ (> 0).
        start_cost, target_cost: costs at the penalty input size (> 0).
        start_step, end_step: the path's ends (optimizer steps, ``end_step > start_step``).
        update_every: steps between updates.
        gain: exponent of the cost ratio per update.
        max_factor: the largest change of ρ per update (> 1).
        rho_min, rho_max: bounds of ρ; default ``rho/100`` and ``rho·100``.
        update_from: the first step of the control (None = ``start_step``).
    """

    def __init__(
        self,
        rho: float,
        start_cost: float,
        target_cost: float,
        start_step: int,
        end_step: int,
        update_every: int = 1,
        gain: float = 1.0,
        max_factor: float = 1.2,
        rho_min: float | None = None,
        rho_max: float | None = None,
        update_from: int | None = None,
    ) -> None:
        if not rho > 0:
            raise ValueError(f"RhoController needs a starting rho > 0, got {rho}")
        if not (start_cost > 0 and target_cost > 0):
            raise ValueError(f"costs must be positive (start {start_cost}, target {target_cost})")
        if end_step <= start_step:
            raise ValueError(f"end_step={end_step} must be after start_step={start_step}")
        if update_every < 1 or max_factor <= 1.0 or gain <= 0:
            raise ValueError("update_every must be >= 1, max_factor > 1 and gain > 0")
        self.rho = float(rho)
        self.start_cost = start_cost
        self.target_cost = target_cost
        self.start_step = int(start_step)
        self.end_step = int(end_step)
        self.update_every = int(update_every)
        self.gain = float(gain)
        self.max_factor = float(max_factor)
        self.rho_min = float(rho_min) if rho_min is not None else self.rho / 100.0
        self.rho_max = float(rho_max) if rho_max is not None else self.rho * 100.0
        self.update_from = int(update_from) if update_from is not None else self.start_step
        self.last_update: int | None = None

    def path_cost(self, step: int) -> float:
        """The cost the network should have after ``step`` steps: ``start_cost`` up to ``start_step``,
        exactly ``target_cost`` from ``end_step`` on."""
        p = (step - self.start_step) / (self.end_step - self.start_step)
        if p <= 0.0:
            return float(self.start_cost)
        if p >= 1.0:
            return float(self.target_cost)
        return self.start_cost * (self.target_cost / self.start_cost) ** p

    def due(self, step: int) -> bool:
        """Whether :meth:`update` should be called at ``step``."""
        if step < self.update_from or step == self.last_update:
            return False
        return (step - self.update_from) % self.update_every == 0

    def update(self, step: int, cost: float) -> float:
        """Adjust ρ from the cost measured at ``step``; return the new ρ. Mutates the controller."""
        ratio = max(float(cost), 1.0) / self.path_cost(step)
        factor = min(max(ratio**self.gain, 1.0 / self.max_factor), self.max_factor)
        if math.isfinite(factor):
            self.rho = min(max(self.rho * factor, self.rho_min), self.rho_max)
        self.last_update = step
        return self.rho

    _LEGACY_KEYS = {"start_macs": "start_cost", "target_macs": "target_cost"}

    def state_dict(self) -> dict[str, Any]:
        """Plain state (the arguments and the current ρ)."""
        return {
            "rho": self.rho,
            "start_cost": self.start_cost,
            "target_cost": self.target_cost,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "update_every": self.update_every,
            "gain": self.gain,
            "max_factor": self.max_factor,
            "rho_min": self.rho_min,
            "rho_max": self.rho_max,
            "update_from": self.update_from,
            "last_update": self.last_update,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (also from the ``start_macs``/``target_macs`` keys of older
        checkpoints; a state without ``update_from`` keeps this controller's)."""
        known = self.state_dict()
        for key, value in state.items():
            key = self._LEGACY_KEYS.get(key, key)
            if key not in known:
                raise KeyError(f"unknown RhoController state key {key!r}")
            setattr(self, key, value)


def fit_to_blocking(
    model: nn.Module,
    spec: NetSpec,
    keep: Keep,
    budget: float,
    input_size: HW,
    cost_model: CostModel,
    restorable: Keep | None = None,
) -> Keep:
    """Round the kernel groups of a final keep decision to the runtime's channel blocking.

    A deployed kernel group of ``c`` channels runs as one of ``ceil(c / b) · b`` (``b =
    cost_model.blocking``), so widths off the blocking are paid as the next multiple. Two passes:

    1. while :meth:`~hrnas.space.cost_model.CostModel.deployed_total` exceeds ``budget``, round down the
       group whose rounding (to the multiple of ``b`` below its width; a whole block of ``b`` for a width
       already on the blocking) gives up the least importance, ``Σ|γ|`` of the channels it removes (least
       important first), per unit of deployed cost it saves;
    2. every group off the blocking takes back, most important first, channels of ``restorable`` (units
       alive in the network that the budget cut) up to its padded width: they run anyway, as padding.

    The deployed cost is taken to be a sum over blocks (as :class:`~hrnas.space.latency.LatencyCost`'s
    is), so a group's saving is re-priced only when its own block changes. ``model`` ranks the channels
    by the |γ| of its ``dw_bn`` (as :func:`prune_to_budget`). Returns a new keep decision (``keep`` is not
    modified); with ``blocking`` 1 a copy of ``keep``. A ``RuntimeWarning`` says when no rounding can bring
    the deployed network under ``budget``.
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    masks = _copied(complete_keep(spec, keep))
    step = int(cost_model.blocking)
    if step <= 1:
        return masks
    back_ok = None if restorable is None else complete_keep(spec, restorable)
    units = collect_units(spec, input_size, cost_model)
    factors = read_factors(model, spec)
    gammas = {path: factors[path].channels.double().cpu().tolist() for path in units}

    def deployed() -> float:
        return cost_model.deployed_total(kept_spec(spec, masks), input_size)

    def rounding(path: str, start: int, stop: int, current: float) -> tuple[float, list[int]] | None:
        """(importance given up per cost saved, the channels dropped) of rounding one group down."""
        alive = masks[path].channels[start:stop].tolist()
        kept = [start + i for i, a in enumerate(alive) if a]
        if not kept:
            return None
        kept.sort(key=lambda i: (gammas[path][i], i))
        drop = kept[: len(kept) - (len(kept) - 1) // step * step]
        masks[path].channels[drop] = False
        saving = current - deployed()
        masks[path].channels[drop] = True
        if saving <= 0:
            return None
        return sum(gammas[path][i] for i in drop) / saving, drop

    current = deployed()
    options: dict[tuple[str, int], tuple[float, list[int]] | None] = {}
    while current > budget:
        best: tuple[float, int, str, list[int]] | None = None
        for order, (path, g) in enumerate((p, g) for p, u in units.items() for g in u.groups):
            if (path, g.index) not in options:
                options[(path, g.index)] = rounding(path, g.start, g.stop, current)
            option = options[(path, g.index)]
            if option is not None and (best is None or (option[0], order) < (best[0], best[1])):
                best = (option[0], order, path, option[1])
        if best is None:
            warnings.warn(
                f"fit_to_blocking: the deployed network costs {current} {cost_model.unit}, above the budget "
                f"{budget}, and no kernel group is left to round down",
                RuntimeWarning,
                stacklevel=2,
            )
            break
        masks[best[2]].channels[best[3]] = False
        current = deployed()
        for g in units[best[2]].groups:  # only this block's savings changed
            options.pop((best[2], g.index), None)
    if back_ok is not None:
        for path, u in units.items():
            for g in u.groups:
                width = int(masks[path].channels[g.start : g.stop].sum())
                room = -(-width // step) * step - width
                if width == 0 or room == 0:
                    continue
                back = [
                    i
                    for i in range(g.start, g.stop)
                    if not bool(masks[path].channels[i]) and bool(back_ok[path].channels[i])
                ]
                back.sort(key=lambda i: (-gammas[path][i], i))
                masks[path].channels[back[:room]] = True
    return masks
