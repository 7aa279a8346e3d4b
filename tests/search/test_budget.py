"""Budgets (MACs): pruning to a budget lands in [0.97, 1.0]·budget; the ρ controller steers towards a path."""

from __future__ import annotations

import warnings

import pytest
import torch

from hrnas.search.budget import BudgetError, RhoController, min_reachable_cost, prune_to_budget
from hrnas.search.shrink import alive_masks, kept_spec, shrink
from hrnas.space.cost import cost
from hrnas.space.network import block_modules

SIZE = (48, 48)


@pytest.mark.parametrize("name", ["test_seg", "test_cls", "test_cls_all"])
@pytest.mark.parametrize("fraction", [0.9, 0.6, 0.3, 0.05])
def test_prune_to_budget_lands_in_the_window(name, fraction, make_net):
    spec, model = make_net(name, dtype=torch.float32)
    total, floor = cost(spec, SIZE).macs, min_reachable_cost(spec, SIZE)
    target = int(floor + fraction * (total - floor))
    keep = prune_to_budget(model, spec, target, SIZE)
    macs = cost(kept_spec(spec, keep), SIZE).macs
    assert 0.97 * target <= macs <= target


def test_a_window_too_narrow_still_fits_the_budget(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    target = int(0.5 * cost(spec, SIZE).macs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keep = prune_to_budget(model, spec, target, SIZE, tolerance=0.0)
    macs = cost(kept_spec(spec, keep), SIZE).macs
    assert macs <= target
    assert macs == target or any(issubclass(w.category, RuntimeWarning) for w in caught)


def test_least_important_units_go_first(make_net):
    spec, model = make_net("test_cls_all", dtype=torch.float32)
    blocks = block_modules(model)
    cheap_path, query_path = "stages[2].parallel[2][0]", "head.down[1]"
    with torch.no_grad():
        blocks[cheap_path].dw_bn.weight[:5] = 1e-6  # nearly dead channels
        blocks[query_path].transformer.input_norm.weight[:3] = 1e-6  # nearly dead queries
        blocks[query_path].transformer.input_norm.weight[3] = 1.0
    total = cost(spec, SIZE).macs
    keep = prune_to_budget(model, spec, int(0.98 * total), SIZE)
    assert not keep[cheap_path].channels[:5].any()
    assert keep[query_path].queries.tolist() == [False, False, False, True]
    new_spec, new_model, _ = shrink(model, spec, keep)
    assert cost(new_spec, SIZE).macs <= 0.98 * total
    assert block_modules(new_model)[query_path].transformer.num_queries == 1


def test_prune_to_budget_respects_a_prior_keep_and_fits_already(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    with torch.no_grad():
        block_modules(model)["head.transform"].dw_bn.weight[::2] = 0.0
    prior = alive_masks(model, spec, mode="current")
    pruned_macs = cost(kept_spec(spec, prior), SIZE).macs
    same = prune_to_budget(model, spec, pruned_macs + 10, SIZE, keep=prior)
    assert all(torch.equal(same[p].channels, prior[p].channels) for p in prior)
    target = int(0.7 * pruned_macs)
    keep = prune_to_budget(model, spec, target, SIZE, keep=prior)
    for path in prior:
        assert not (keep[path].channels & ~prior[path].channels).any()  # nothing comes back
    assert 0.97 * target <= cost(kept_spec(spec, keep), SIZE).macs <= target


def test_unreachable_target_names_both_numbers(make_net):
    spec, model = make_net("test_cls", dtype=torch.float32)
    floor = min_reachable_cost(spec, SIZE)
    with pytest.raises(BudgetError, match=rf"the budget 1000 MACs is below the minimum reachable cost {floor} MACs"):
        prune_to_budget(model, spec, 1000, SIZE)
    keep = prune_to_budget(model, spec, floor, SIZE)  # the floor itself is reachable
    assert cost(kept_spec(spec, keep), SIZE).macs == floor
    assert all(not k.channels.any() for k in keep.values())


def test_rho_controller_path_and_direction():
    ctl = RhoController(1e-3, start_cost=1000, target_cost=250, start_step=100, end_step=300, max_factor=1.5)
    assert ctl.path_cost(0) == 1000 and ctl.path_cost(100) == 1000
    assert ctl.path_cost(200) == pytest.approx(500)
    assert ctl.path_cost(300) == pytest.approx(250) and ctl.path_cost(1000) == pytest.approx(250)
    assert not ctl.due(99) and ctl.due(100)
    assert ctl.update(200, 600) == pytest.approx(1.2e-3)  # 20 % above the path: ρ × 1.2
    assert not ctl.due(200)
    assert ctl.update(201, 10_000) == pytest.approx(1.8e-3)  # clipped at max_factor
    assert ctl.update(202, 250) < 1.8e-3  # below the path: ρ decreases
    for step in range(203, 400):
        ctl.update(step, 1e9)
    assert ctl.rho == pytest.approx(ctl.rho_max) == pytest.approx(0.1)
    state = ctl.state_dict()
    other = RhoController(1.0, 10, 5, 0, 1)
    other.load_state_dict(state)
    assert other.state_dict() == state
    legacy = {("start_macs" if k == "start_cost" else "target_macs" if k == "target_cost" else k): v
              for k, v in state.items()}  # the keys of checkpoints written before costs were cost-neutral
    older = RhoController(1.0, 10, 5, 0, 1)
    older.load_state_dict(legacy)
    assert older.state_dict() == state
    with pytest.raises(KeyError, match="unknown"):
        older.load_state_dict({"path_cost": 3})
    with pytest.raises(ValueError, match="rho > 0"):
        RhoController(0.0, 10, 5, 0, 1)


def test_rho_controller_steers_a_simulated_search():
    # a plant whose MACs relax towards a level that decreases with ρ: the controller must track the path
    ctl = RhoController(1e-4, start_cost=1_000_000, target_cost=400_000, start_step=0, end_step=300)
    macs = 1_000_000.0
    for step in range(400):
        if ctl.due(step):
            ctl.update(step, macs)
        level = 1_000_000 / (1 + ctl.rho / 1e-3)
        macs += 0.05 * (level - macs)
    assert macs == pytest.approx(400_000, rel=0.05)


def test_rho_control_starts_after_the_path():
    # the path starts where the penalty does; ρ is controlled only from the end of its warm-up
    ctl = RhoController(1e-3, start_cost=1000, target_cost=250, start_step=10, end_step=110, update_from=40)
    assert ctl.path_cost(10) == 1000.0 and ctl.path_cost(60) == pytest.approx(500) and ctl.path_cost(110) == 250.0
    assert not any(ctl.due(s) for s in range(40)) and ctl.due(40)
    state = ctl.state_dict()
    assert state["update_from"] == 40
    older = {k: v for k, v in state.items() if k != "update_from"}  # a checkpoint written before update_from
    other = RhoController(1.0, 10, 5, 0, 1, update_from=7)
    other.load_state_dict(older)
    assert other.update_from == 7 and other.start_step == 10
