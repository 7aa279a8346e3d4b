"""hrnas_kitti_supernet is searchable: its units, factors, shrink and budget pruning work like any supernet's."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from hrnas.search.budget import min_reachable_cost, prune_to_budget
from hrnas.search.shrink import BlockKeep, kept_spec, shrink
from hrnas.search.units import collect_units, read_factors, search_blocks
from hrnas.space.cost import cost
from hrnas.space.network import block_modules, build_model
from hrnas.space.zoo import get_spec

GRID = (496, 432)
NAME = "hrnas_kitti_supernet"


def test_units_cover_every_block_at_the_full_grid():
    spec = get_spec(NAME)
    units = collect_units(spec, GRID)
    assert list(units) == [p for p, _ in spec.blocks()]
    first = units["stages[0].parallel[0][0]"]  # 24 → 24 at branch 0 = the 248×216 anchor grid
    assert first.in_hw == (248, 216)
    assert [g.unit_cost for g in first.groups] == [(24 + k * k + 24) * 248 * 216 for k in (3, 5, 7)]
    transform = units["head.transform"]
    assert transform.in_hw == (248, 216) and transform.num_channels == 270 and transform.num_queries == 0
    assert sum(u.num_queries for u in units.values()) == 64 * sum(1 for _, b in spec.blocks() if b.residual)


def test_shrink_of_dead_units_keeps_outputs_and_cost_exact(make_net):
    spec, model = make_net(NAME)
    gen = torch.Generator().manual_seed(5)
    keep = {}
    with torch.no_grad():
        for path, block in block_modules(model).items():
            h = block.spec.total_hidden
            dead = torch.rand(h, generator=gen) < 0.5
            if path == "head.transform":
                dead[:] = True  # the transform falls back to its grouped 1×1 shortcut 270 → 384
            block.dw_bn.weight[dead] = 0.0
            keep[path] = BlockKeep(~dead, None if block.transformer is None else torch.ones(64, dtype=torch.bool))
    factors = read_factors(model, spec)
    assert set(factors) == set(search_blocks(model, spec))
    x = torch.randn(1, 64, 24, 40, dtype=torch.float64)
    new_spec, new_model, _ = shrink(model, spec, keep)
    with torch.no_grad():
        ref, got = model(x), new_model(x)
    with FlopCounterMode(display=False) as counter:
        new_model(x)
    torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-8)
    assert counter.get_total_flops() == 2 * cost(new_spec, (24, 40)).macs
    assert new_spec.head.transform.total_hidden == 0
    assert cost(new_spec, GRID).macs < 0.7 * cost(spec, GRID).macs


def test_budget_pruning_reaches_a_quarter_of_pointpillars():
    spec, target = get_spec(NAME), cost(get_spec("pointpillars_bev"), GRID).macs // 4
    assert min_reachable_cost(spec, GRID) < target
    torch.manual_seed(0)
    keep = prune_to_budget(build_model(spec), spec, target, GRID)
    assert 0.97 * target <= cost(kept_spec(spec, keep), GRID).macs <= target
