"""Resource-aware L1 penalty on the importance factors (HR-NAS spec §4.2–4.3).

The search adds ``ρ(t)·Σ_u π_u·|γ_u|`` to the task loss, summed over every searchable unit ``u``
(hidden channels and transformer queries, :mod:`hrnas.search.units`). The penalty weight of a unit is
its price under a :class:`~hrnas.space.cost_model.CostModel` (MACs by default) divided by a normaliser
``Z``:

- a channel of kernel group ``k`` of a block: its price at the block's widths and the *penalty input
  size* (by default the task's training resolution; the paper uses 224² for every task, spec §4.3 and
  §8 item 6); with MACs ``C_in·A_in + k²·A_out + C_out·A_out``. Channel prices are re-read when the
  penalty is rebuilt after a shrink;
- a query of a transformer with ``n`` alive queries: the price of the ``n``-th query (with MACs the
  marginal cost ``F(n) − F(n − 1)`` of the complete transformer count of spec §3.5). ``n`` counts the
  queries with ``|γ| > threshold`` (absolute value, unlike the paper's code) and is re-counted at every
  call, as the paper updates the token penalty every iteration;
- ``Z = Σ_u c_u / #units``, the channel-weighted mean unit price over all units (queries counted at their
  full initial number), measured once on the network the penalty is first built for (the supernet) and
  kept when the penalty is rebuilt after a shrink, so that ρ keeps its meaning during a run.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrnas.search.units import HW, BlockUnits, as_hrnet, collect_units, iter_factor_modules, search_blocks
from hrnas.space.cost_model import MAC_COST, CostModel
from hrnas.space.spec import NetSpec

__all__ = ["ResourcePenalty", "mean_unit_cost"]


def mean_unit_cost(units: dict[str, BlockUnits]) -> float:
    """Z of spec §4.3: (Σ_channels c + Σ_queries q(n)) / (#channels + #queries), in the units' cost unit.

    Queries of a transformer with ``n`` queries each cost ``q(n)``, the price of the ``n``-th query.
    Raises ``ValueError`` when there is no unit at all.
    """
    total = 0
    count = 0
    for u in units.values():
        for g in u.groups:
            total += g.size * g.unit_cost
            count += g.size
        if u.num_queries > 0:
            total += u.num_queries * u.query_cost(u.num_queries)
            count += u.num_queries
    if count == 0:
        raise ValueError("the network has no searchable unit (no hidden channel and no query)")
    return total / count


def _on_device(tables: dict[str, Tensor], path: str, device: torch.device) -> Tensor:
    """``tables[path]`` on ``device``, moved there (and kept there) on first use."""
    table = tables[path]
    if table.device != device:
        table = tables[path] = table.to(device)
    return table


class ResourcePenalty:
    """``Σ π·|γ|`` over the channels and queries of a model built from ``spec``.

    Args:
        model: the network (an :class:`~hrnas.space.network.HRNet`, possibly DDP-wrapped) built from
            ``spec``; only used to check that it matches.
        spec: its spec.
        input_size: (H, W) at which channel costs are measured (the penalty input size).
        threshold: a query is counted as alive when ``|γ| > threshold``.
        normalizer: ``Z`` in the cost model's unit; None = measure it on ``spec`` (:func:`mean_unit_cost`).
        cost_model: prices the units (:data:`~hrnas.space.cost_model.MAC_COST` by default).

    Calling the penalty on the model returns a 0-d float32 tensor on the model's device that is
    differentiable w.r.t. the γ of every ``dw_bn`` and ``transformer.input_norm``; its gradient w.r.t.
    a γ is ``π·sign(γ)`` (π is treated as a constant). Nothing is mutated.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: NetSpec,
        input_size: HW,
        threshold: float = 1e-3,
        normalizer: float | None = None,
        cost_model: CostModel = MAC_COST,
    ) -> None:
        search_blocks(model, spec)
        self.spec = spec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.threshold = float(threshold)
        self.cost_model = cost_model
        self.units = collect_units(spec, self.input_size, cost_model)
        self.normalizer = float(normalizer) if normalizer is not None else mean_unit_cost(self.units)
        if not self.normalizer > 0:
            raise ValueError(f"the normaliser Z must be positive, got {self.normalizer}")
        self._channel_pi = {
            path: u.channel_costs().div(self.normalizer).float() for path, u in self.units.items() if u.num_channels > 0
        }
        # q(n) for n = 1..num_queries, float64, indexed on the device by the alive count (no host sync)
        self._query_prices = {
            path: torch.tensor([u.query_cost(n) for n in range(1, u.num_queries + 1)], dtype=torch.float64)
            for path, u in self.units.items()
            if u.num_queries > 0
        }

    def rebuild(self, model: nn.Module, spec: NetSpec) -> ResourcePenalty:
        """The penalty for a shrunk ``model``/``spec``, with the same input size, threshold, ``Z`` and
        cost model (channel and query prices are re-read at the new widths)."""
        return ResourcePenalty(model, spec, self.input_size, self.threshold, self.normalizer, self.cost_model)

    # --- weights ------------------------------------------------------------------------------------
    def channel_weights(self) -> dict[str, Tensor]:
        """``{path: π}`` with π (H,) float32 per hidden channel (``dw_bn`` order); blocks without
        channels are absent."""
        return {path: pi.clone() for path, pi in self._channel_pi.items()}

    def query_weight(self, path: str, alive: int) -> float:
        """π of every query of the block at ``path`` when ``alive`` queries are alive."""
        return self.units[path].query_cost(alive) / self.normalizer

    @torch.no_grad()
    def query_weights(self, model: nn.Module) -> dict[str, float]:
        """``{path: π}`` of the queries of every transformer at the model's current alive counts."""
        out = {}
        for path, _, q_bn in iter_factor_modules(search_blocks(model, self.spec)):
            if q_bn is not None:
                alive = int((q_bn.weight.detach().abs() > self.threshold).sum())
                out[path] = self.query_weight(path, alive)
        return out

    # --- the penalty --------------------------------------------------------------------------------
    def __call__(self, model: nn.Module) -> Tensor:
        """``Σ_channels π·|γ| + Σ_queries π(n_alive)·|γ|`` (0-d, differentiable w.r.t. the γ)."""
        terms: list[Tensor] = []
        for path, dw_bn, q_bn in iter_factor_modules(search_blocks(model, self.spec)):
            if dw_bn is not None:
                gamma = dw_bn.weight
                pi = _on_device(self._channel_pi, path, gamma.device)
                terms.append((gamma.abs().float() * pi).sum())
            if q_bn is not None:
                gamma = q_bn.weight
                prices = _on_device(self._query_prices, path, gamma.device)
                # counted on the device (no host sync); π is a constant of the step
                alive = (gamma.detach().abs() > self.threshold).sum().clamp(min=1)
                pi_q = (prices[alive - 1] / self.normalizer).float()
                terms.append(gamma.abs().float().sum() * pi_q)
        if not terms:
            return torch.zeros((), device=next(as_hrnet(model).parameters()).device)
        return torch.stack(terms).sum()
