"""The search prices units through a CostModel only: with a cost whose prices depend on the current widths
(non-linear, unlike MACs), the penalty, the final prune, the controller and the uniform baseline work in
that model's unit, and the prune tracks its total exactly."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import hrnas.search
from hrnas.search.budget import BudgetError, min_reachable_cost, prune_to_budget
from hrnas.search.controller import SearchController
from hrnas.search.penalty import ResourcePenalty
from hrnas.search.shrink import kept_spec
from hrnas.search.uniform import uniformly_thinned
from hrnas.search.units import collect_units
from hrnas.space.cost_model import CostModel
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import BlockSpec, NetSpec

SIZE = (32, 32)
FIXED = 1000


class SquaredWidthCost(CostModel):
    """A toy cost: ``FIXED + Σ_blocks (Σ_g k_g·h_g)² + 3·Σ_blocks n²`` — a channel's price grows with its
    block's width, a query's with the alive count; no MAC formula involved. Integer, so exact."""

    unit = "sq"

    @staticmethod
    def _width(block: BlockSpec) -> int:
        return sum(k * h for k, h in zip(block.kernel_sizes, block.hidden, strict=True))

    def channel_price(self, block: BlockSpec, in_hw: tuple[int, int], kernel_size: int) -> int:
        w = self._width(block)
        return w * w - (w - kernel_size) ** 2

    def query_price(self, block: BlockSpec, in_hw: tuple[int, int], alive: int, grid: int) -> int:
        return 3 * (alive * alive - (alive - 1) ** 2)

    def total(self, spec: NetSpec | PointPillarsSpec, input_size: tuple[int, int]) -> int:
        assert isinstance(spec, NetSpec)
        return FIXED + sum(self._width(b) ** 2 + 3 * b.num_queries**2 for _, b in spec.blocks())


SQ = SquaredWidthCost()


def test_the_toy_model_keeps_the_contract(make_net):
    spec, _ = make_net("test_seg")
    assert SQ.fixed(spec, SIZE) == FIXED
    path, block = spec.blocks()[0]
    smaller = spec.replace_blocks({path: replace(block, hidden=(block.hidden[0] - 1, *block.hidden[1:]))})
    assert SQ.total(spec, SIZE) - SQ.total(smaller, SIZE) == SQ.channel_price(block, SIZE, block.kernel_sizes[0])


def test_units_and_penalty_weights_come_from_the_model(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    units = collect_units(spec, SIZE, SQ)
    for u in units.values():
        for g in u.groups:
            assert g.unit_cost == SQ.channel_price(u.block, u.in_hw, g.kernel_size)
        if u.num_queries:
            assert u.query_cost(2) == 9
    penalty = ResourcePenalty(model, spec, SIZE, cost_model=SQ)
    z = penalty.normalizer
    for path, pi in penalty.channel_weights().items():
        assert torch.allclose(pi.double(), units[path].channel_costs() / z)
    assert penalty.query_weight("stages[0].fuse[0].block", 4) == pytest.approx(21 / z)
    assert penalty.rebuild(model, spec).cost_model is SQ


@pytest.mark.parametrize("fraction", [0.8, 0.5, 0.2])
def test_prune_to_budget_in_a_width_dependent_unit(fraction, make_net):
    spec, model = make_net("test_cls_all", dtype=torch.float32)
    total, floor = SQ.total(spec, SIZE), min_reachable_cost(spec, SIZE, SQ)
    assert floor == FIXED
    budget = int(floor + fraction * (total - floor))
    keep = prune_to_budget(model, spec, budget, SIZE, cost_model=SQ)  # raises if the tracked total drifts
    assert 0.97 * budget <= SQ.total(kept_spec(spec, keep), SIZE) <= budget
    with pytest.raises(BudgetError, match=f"below the minimum reachable cost {FIXED} sq"):
        prune_to_budget(model, spec, FIXED - 1, SIZE, cost_model=SQ)


def test_controller_and_uniform_baseline_in_the_model_unit(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    model.train()
    budget = int(0.4 * SQ.total(spec, SIZE))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    ctl = SearchController(
        model, spec, optimizer, None, SIZE, rho=1e-2, min_saving=0, budget=budget, total_steps=4, cost_model=SQ
    )
    assert ctl.rho_controller is not None and ctl.rho_controller.target_cost == budget
    for step in range(4):
        loss = model(torch.randn(2, 3, *SIZE)).square().mean() + ctl.penalty(model, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = ctl.shrink_now(model, optimizer, None, 4, final=True)
    assert result.shrunk and 0.97 * budget <= SQ.total(result.spec, SIZE) <= budget
    thin = uniformly_thinned(spec, budget, SIZE, SQ)
    assert SQ.total(thin, SIZE) <= budget < SQ.total(spec, SIZE)


def test_the_search_calls_no_mac_formula():
    """Only ``iter_blocks`` (geometry) and the MAC report of a shrink record come from hrnas.space.cost."""
    allowed = {"units.py": {"iter_blocks"}, "controller.py": {"cost"}}
    for path in sorted(Path(hrnas.search.__file__).parent.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "hrnas.space.cost":
                names |= {a.name for a in node.names}
            if isinstance(node, ast.Import):
                assert all(a.name != "hrnas.space.cost" for a in node.names), path.name
        assert names <= allowed.get(path.name, set()), (path.name, names)
