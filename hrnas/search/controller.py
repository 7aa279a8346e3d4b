"""The search as seen by a training loop: penalty, when to shrink, and the shrink itself (spec §4.9).

A loop using :class:`SearchController` looks like::

    ctl = SearchController(model, spec, optimizer, ema, input_size, rho=..., total_steps=T, ...)
    for step in range(T):
        loss = task_loss + ctl.penalty(model, step)
        ...backward, optimizer.step(), ema.update(model)...
        if ctl.should_shrink(step + 1) or step + 1 == T:
            res = ctl.shrink_now(model, optimizer, ema, step + 1, final=step + 1 == T)
            spec, model, optimizer = res.spec, res.model, res.optimizer  # re-wrap DDP, rebind the scheduler

With a budget the shrinking is progressive whatever the number of steps: the network's cost follows a
geometric path from the supernet (when the penalty starts, ``rho_free_steps``) to the budget (at
``reach_fraction`` of the rest of the run). ρ is adapted so that the penalty kills units at the path's
pace; every scheduled shrink removes the dead units and, when the network is still more than
``path_tolerance`` above the path (a run too short for the factors to follow), also the least important
alive units (|γ| per cost, as :func:`~hrnas.search.budget.prune_to_budget` ranks them) down to the path's
cost, so each shrink makes at least the path's progress; the final shrink prunes to the budget. Each
shrink's record says how far it got (cost before and after, the path's cost, the budget, units killed
by the penalty and units cut).

It is independent of the task: it only reads the search blocks of an :class:`~hrnas.space.network.HRNet`
built from the spec. Costs (penalty weights, budget, savings) come from a
:class:`~hrnas.space.cost_model.CostModel`, MACs by default; the shrink records report MACs. The EMA is
any object with a ``module`` (the averaged network) and ``replace_module(new)``, such as
:class:`hrnas.utils.ema.ModelEma`. In a distributed run every rank holds the same γ, so every decision
below is the same on every rank; pass ``sync=broadcast_object`` to :meth:`SearchController.shrink_now`
to make rank 0's keep decision authoritative anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from hrnas.search.budget import BudgetError, RhoController, fit_to_blocking, min_reachable_cost, prune_to_budget
from hrnas.search.penalty import ResourcePenalty
from hrnas.search.schedule import rho_at
from hrnas.search.shrink import (
    MODES,
    Keep,
    alive_masks,
    keep_from_lists,
    keep_to_lists,
    kept_spec,
    remap_optimizer,
    shrink,
)
from hrnas.search.units import HW, as_hrnet, search_blocks
from hrnas.space.cost import cost
from hrnas.space.cost_model import MAC_COST, CostModel
from hrnas.space.spec import NetSpec

if TYPE_CHECKING:
    from hrnas.utils.ema import ModelEma

__all__ = ["SearchController", "ShrinkResult", "architecture_record"]


@dataclass
class ShrinkResult:
    """What :meth:`SearchController.shrink_now` returns. When nothing was shrunk (``record["shrunk"]``
    is False) the spec, model, optimizer and EMA are the objects passed in."""

    spec: NetSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: ModelEma | None
    record: dict[str, Any]

    @property
    def shrunk(self) -> bool:
        return bool(self.record["shrunk"])


def architecture_record(spec: NetSpec) -> dict[str, dict[str, Any]]:
    """``{path: {"kernel_sizes": [...], "channels": [...], "queries": n}}`` for every block (JSON-able)."""
    out = {}
    for path, block in spec.blocks():
        b = block.without_empty_groups()
        out[path] = {"kernel_sizes": list(b.kernel_sizes), "channels": list(b.hidden), "queries": b.num_queries}
    return out


def _removed_units(keep: Keep, alive: Keep) -> tuple[int, int]:
    """(units ``keep`` removes that ``alive`` marks dead, units it removes that are alive), channels
    and queries together."""
    killed = cut = 0
    for path, k in keep.items():
        a = alive[path]
        pairs = [(k.channels, a.channels)]
        if k.queries is not None and a.queries is not None:
            pairs.append((k.queries, a.queries))
        for kept, live in pairs:
            removed = ~kept
            killed += int((removed & ~live).sum())
            cut += int((removed & live).sum())
    return killed, cut


class SearchController:
    """Penalty, ρ schedule/control and progressive shrinking for one search run.

    Args:
        model: the supernet (an HRNet built from ``spec``, possibly DDP-wrapped).
        spec: its spec.
        optimizer: its optimizer (only checked to exist; the one passed to :meth:`shrink_now` is remapped).
        ema: the EMA of the model or None.
        input_size: (H, W), the penalty input size at which unit costs, savings and the budget are measured.
        threshold: a unit is dead when |γ| ≤ threshold.
        rho: full weight ρ of the penalty (the starting value when ``budget`` is set).
        rho_free_steps, rho_warmup_steps: the ρ(t) ramp of :func:`hrnas.search.schedule.rho_at`.
        shrink_every: :meth:`should_shrink` is True every this many steps (0 = never; the loop then decides).
        min_saving: a non-final shrink happens only when it saves at least this much (in the cost model's
            unit; the default is 1 M MACs).
        budget: the cost budget at ``input_size`` (in the cost model's unit) or None. When set, the
            network follows a cost path to it: ρ is adapted by a
            :class:`~hrnas.search.budget.RhoController`, scheduled shrinks cut down to the path when the
            penalty is behind it, and the final shrink prunes to the budget.
        total_steps: the run's optimizer steps (required with ``budget``).
        decide_on: ``ema_and_current`` | ``ema`` | ``current``: which γ decide liveness (spec §4.5); the
            final shrink uses the EMA alone when ``ema_and_current``; without an EMA, the current model.
        rho_update_every: steps between ρ updates with a budget (None: 1/200 of the controlled span).
        reach_fraction: where, between ``rho_free_steps`` (the path's start) and the last step, the cost
            path reaches the budget.
        path_tolerance: with a budget, a non-final shrink that leaves the network above
            ``(1 + path_tolerance)·path(step)`` after removing the dead units also cuts the least
            important alive units down to the path's cost (``inf``: never).
        cost_model: prices the units and totals specs (:data:`~hrnas.space.cost_model.MAC_COST`).

    Raises:
        ValueError: bad arguments; :class:`~hrnas.search.budget.BudgetError` for an unreachable budget.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: NetSpec,
        optimizer: torch.optim.Optimizer | None,
        ema: ModelEma | None,
        input_size: HW,
        threshold: float = 1e-3,
        rho: float = 0.0,
        rho_free_steps: int = 0,
        rho_warmup_steps: int = 0,
        shrink_every: int = 0,
        min_saving: float = 1_000_000,
        budget: float | None = None,
        total_steps: int | None = None,
        decide_on: str = "ema_and_current",
        rho_update_every: int | None = None,
        reach_fraction: float = 0.75,
        path_tolerance: float = 0.05,
        cost_model: CostModel = MAC_COST,
    ) -> None:
        if decide_on not in MODES:
            raise ValueError(f"decide_on: unknown {decide_on!r} (known: {', '.join(MODES)})")
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if rho_warmup_steps < rho_free_steps:
            raise ValueError(f"rho_warmup_steps={rho_warmup_steps} is before rho_free_steps={rho_free_steps}")
        if not path_tolerance >= 0:
            raise ValueError(f"path_tolerance must be >= 0, got {path_tolerance}")
        self.spec = spec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.threshold = float(threshold)
        self.rho = float(rho)
        self.rho_free_steps = int(rho_free_steps)
        self.rho_warmup_steps = int(rho_warmup_steps)
        self.shrink_every = int(shrink_every)
        self.min_saving = min_saving
        self.budget = budget
        self.total_steps = total_steps
        self.decide_on = decide_on
        self.path_tolerance = float(path_tolerance)
        self.ema = ema
        self.cost_model = cost_model
        self.num_shrinks = 0
        self.last_rho = 0.0
        self._penalty = ResourcePenalty(model, spec, self.input_size, self.threshold, cost_model=cost_model)
        self.rho_controller: RhoController | None = None
        if self.budget is not None:
            if total_steps is None:
                raise ValueError("a budget needs total_steps (the path to the budget spans the run)")
            if not self.rho > 0:
                raise ValueError("a budget needs rho > 0 as the starting value of the adapted rho")
            floor = min_reachable_cost(spec, self.input_size, cost_model)
            if self.budget < floor:
                unit = cost_model.unit
                raise BudgetError(
                    f"the budget {self.budget} {unit} is below the minimum reachable cost {floor} {unit} at "
                    f"{self.input_size[0]}x{self.input_size[1]}"
                )
            # the path starts where the penalty does; ρ is controlled from the end of its warm-up
            start = self.rho_free_steps
            end = max(start + 1, start + round(reach_fraction * (int(total_steps) - start)))
            every = rho_update_every or max(1, (end - self.rho_warmup_steps) // 200)
            self.rho_controller = RhoController(
                self.rho,
                cost_model.total(spec, self.input_size),
                self.budget,
                start,
                end,
                update_every=every,
                update_from=self.rho_warmup_steps,
            )

    # --- penalty ------------------------------------------------------------------------------------
    @property
    def normalizer(self) -> float:
        """Z of the penalty (in the cost model's unit), fixed for the run."""
        return self._penalty.normalizer

    def current_rho(self) -> float:
        """The full ρ now (adapted when a budget is set)."""
        return self.rho_controller.rho if self.rho_controller is not None else self.rho

    def penalty(self, model: nn.Module, step: int) -> Tensor:
        """``ρ(step)·Σπ|γ|`` (0-d, differentiable w.r.t. the γ; a constant 0 while ρ(step) = 0).

        ``step`` = optimizer steps already taken. With a budget, ρ is updated first when due, from the
        cost the network would have after a shrink now (read from ``model`` and the EMA).
        """
        if self.rho_controller is not None and self.rho_controller.due(step):
            self.rho_controller.update(step, self.predicted_cost(model))
        rho_t = rho_at(step, self.current_rho(), self.rho_free_steps, self.rho_warmup_steps)
        self.last_rho = rho_t
        if rho_t == 0.0:
            return torch.zeros((), device=next(as_hrnet(model).parameters()).device)
        return rho_t * self._penalty(model)

    # --- shrinking ----------------------------------------------------------------------------------
    def _mode(self, final: bool) -> str:
        if self.ema is None:
            return "current"
        if final and self.decide_on == "ema_and_current":
            return "ema"
        return self.decide_on

    def path_cost(self, step: int) -> float | None:
        """The cost (at the penalty input size) the path asks for after ``step`` steps; None without a
        budget."""
        return None if self.rho_controller is None else self.rho_controller.path_cost(step)

    def decide(self, model: nn.Module, final: bool = False, step: int | None = None) -> Keep:
        """The keep decision a shrink would use now. Nothing is mutated.

        The alive units (|γ| > threshold, read as ``decide_on`` says); with a budget:

        - never fewer than the budget needs: when more died, the most important units by |γ| per cost
          up to the budget (near-dead ones included);
        - at the ``final`` shrink, pruned down to the budget and, for a cost model with a channel blocking
          (a latency table), fitted to it as deployed (:func:`~hrnas.search.budget.fit_to_blocking`);
        - otherwise, when ``step`` is given and the alive units cost more than
          ``(1 + path_tolerance)·path_cost(step)``, pruned down to the path's cost (the least
          important alive units go, as :func:`~hrnas.search.budget.prune_to_budget` ranks them).

        Without ``step`` only the units the penalty killed go (what :meth:`predicted_cost` measures).
        """
        return self._decide(model, final, step)[0]

    def _decide(self, model: nn.Module, final: bool, step: int | None) -> tuple[Keep, Keep]:
        """(:meth:`decide`'s keep decision, the alive units it started from)."""
        mode = self._mode(final)
        ema_module = None if self.ema is None else self.ema.module
        alive = alive_masks(model, self.spec, self.threshold, ema_module, mode)
        keep = alive
        if self.budget is not None:
            ranking = ema_module if mode == "ema" and ema_module is not None else model
            cm = self.cost_model
            remaining = cm.total(kept_spec(self.spec, alive), self.input_size)
            if remaining < self.budget:
                # more units died than the budget asks for: never go below it; keep the most important
                # units (by |γ| per cost) up to the budget, near-dead ones included
                keep = prune_to_budget(ranking, self.spec, self.budget, self.input_size, None, cost_model=cm)
            elif final:
                keep = prune_to_budget(ranking, self.spec, self.budget, self.input_size, alive, cost_model=cm)
            elif step is not None:
                path = self.path_cost(step)
                assert path is not None
                if remaining > (1.0 + self.path_tolerance) * path:
                    # the penalty is behind the path: cut the least important alive units down to it
                    keep = prune_to_budget(ranking, self.spec, path, self.input_size, alive, cost_model=cm)
            if final:
                # priced as deployed: groups rounded to the runtime's blocking, padding filled with alive units
                keep = fit_to_blocking(ranking, self.spec, keep, self.budget, self.input_size, cm, restorable=alive)
        return keep, alive

    def predicted_cost(self, model: nn.Module) -> float:
        """Cost (at the penalty input size) of the network left by removing the units the penalty
        killed (no cut to the path): what the ρ control compares with the path."""
        return self.cost_model.total(kept_spec(self.spec, self.decide(model)), self.input_size)

    def should_shrink(self, step: int) -> bool:
        """True every ``shrink_every`` steps (``step`` = optimizer steps taken, > 0)."""
        return self.shrink_every > 0 and step > 0 and step % self.shrink_every == 0

    def shrink_now(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: ModelEma | None,
        step: int,
        final: bool = False,
        sync: Callable[[Any], Any] | None = None,
    ) -> ShrinkResult:
        """Remove the dead units — with a budget, also the units cut to follow the path or, when
        ``final``, to reach the budget (:meth:`decide` at ``step``) — if that saves at least
        ``min_saving`` (any saving when ``final``).

        Args:
            model: the trained model (possibly DDP-wrapped); not modified.
            optimizer: its optimizer; not modified (a remapped one is returned).
            ema: the EMA (or None); its shadow is replaced by the shrunk shadow (mutated).
            step: optimizer steps taken (for the record).
            final: the last shrink of the run: EMA-only decision, pruning to the budget when one is set.
            sync: maps the plain keep decision (:func:`keep_to_lists`) to the one to apply, e.g.
                ``hrnas.utils.distributed.broadcast_object`` so that every rank applies rank 0's.

        Returns:
            :class:`ShrinkResult` with the new spec, a bare (unwrapped) new model in the old model's
            device/dtype/mode, the remapped optimizer, the EMA and a JSON-able record: ``step``,
            ``final``, ``shrunk``, ``decide_on``, ``macs_before``, ``macs``, ``params``, ``saving_macs``
            (MACs and parameters, whatever the cost model), ``target_macs`` (the budget, None without),
            ``input_size``, ``rho`` (full), ``rho_t`` (scheduled), ``blocks`` (:func:`architecture_record`)
            and how far the shrink got in the cost model's unit (``cost_unit``): ``cost_before``,
            ``cost`` (after; = before when not shrunk), ``path_cost`` (the path at ``step``), ``budget``
            (both None without a budget), ``killed_units`` (channels and queries of the decision that
            the penalty killed, |γ| ≤ threshold) and ``cut_units`` (alive ones it removes: to follow
            the path, or at the final shrink to reach the budget). ``saving_macs`` and the unit counts
            describe the decision, applied only when ``shrunk``. The controller's spec and penalty
            follow the new model.
        """
        if ema is not None:
            self.ema = ema
        mode = self._mode(final)
        keep, alive = self._decide(model, final, step)
        if sync is not None:
            keep = keep_from_lists(sync(keep_to_lists(keep)))
        kept = kept_spec(self.spec, keep)
        cm = self.cost_model
        cost_before, cost_after = cm.total(self.spec, self.input_size), cm.total(kept, self.input_size)
        saving = cost_before - cost_after
        do_shrink = saving > 0 and (final or saving >= self.min_saving)
        before, after = cost(self.spec, self.input_size), cost(kept, self.input_size)
        killed, cut = _removed_units(keep, alive)
        record: dict[str, Any] = {
            "step": int(step),
            "final": bool(final),
            "shrunk": bool(do_shrink),
            "decide_on": mode,
            "macs_before": before.macs,
            "macs": after.macs if do_shrink else before.macs,
            "params": after.params if do_shrink else before.params,
            "saving_macs": before.macs - after.macs,
            "target_macs": self.budget if cm.unit == "MACs" else None,  # "budget" holds it in any unit
            "input_size": list(self.input_size),
            "rho": self.current_rho(),
            "rho_t": rho_at(step, self.current_rho(), self.rho_free_steps, self.rho_warmup_steps),
            "cost_unit": cm.unit,
            "cost_before": cost_before,
            "cost": cost_after if do_shrink else cost_before,
            "path_cost": self.path_cost(step),
            "budget": self.budget,
            "killed_units": killed,
            "cut_units": cut,
        }
        if not do_shrink:
            record["blocks"] = architecture_record(self.spec)
            return ShrinkResult(self.spec, model, optimizer, ema, record)
        # the whole model, so that a task model around the HRNet (a detector) comes back rebuilt around it
        new_spec, new_model, maps = shrink(model, self.spec, keep)
        new_optimizer = remap_optimizer(optimizer, model, new_model, maps)
        if ema is not None:
            _, new_shadow, _ = shrink(ema.module, self.spec, keep)
            ema.replace_module(new_shadow)
        self.spec = new_spec
        self._penalty = self._penalty.rebuild(new_model, new_spec)
        self.num_shrinks += 1
        record["blocks"] = architecture_record(new_spec)
        return ShrinkResult(new_spec, new_model, new_optimizer, ema, record)

    # --- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain state to checkpoint with the model: ``normalizer`` (Z), ``num_shrinks`` and the ρ
        controller's state (None without a budget). The spec is checkpointed by the caller."""
        return {
            "normalizer": self.normalizer,
            "num_shrinks": self.num_shrinks,
            "rho_controller": None if self.rho_controller is None else self.rho_controller.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore from :meth:`state_dict`; ``model`` is the (possibly shrunk) model of ``self.spec``."""
        search_blocks(model, self.spec)
        self._penalty = ResourcePenalty(
            model, self.spec, self.input_size, self.threshold, float(state["normalizer"]), self.cost_model
        )
        self.num_shrinks = int(state["num_shrinks"])
        rc = state.get("rho_controller")
        if rc is not None:
            if self.rho_controller is None:
                raise ValueError("the saved search had a budget, this controller has none")
            self.rho_controller.load_state_dict(rc)
