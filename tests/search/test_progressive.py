"""Progressive shrinking towards a budget: every scheduled shrink makes at least the cost path's progress.

A run too short for ρ to make the penalty kill units at the path's pace still follows the path (the
shrinks cut the least important alive units down to it); when the penalty keeps up, a shrink removes only
the units it killed. The search log says how far each shrink got.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hrnas.search.budget import prune_to_budget
from hrnas.search.controller import SearchController
from hrnas.search.shrink import Keep, kept_spec, rebind_scheduler
from hrnas.space.cost import cost
from hrnas.space.cost_model import MAC_COST
from hrnas.space.network import block_modules, build_model
from hrnas.space.zoo import get_spec
from hrnas.utils.ema import ModelEma

SIZE = (32, 32)
TOLERANCE = 0.05


def _data(gen: torch.Generator, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and 8×8 labels: the class of a cell is its quantised mean red-minus-blue intensity."""
    images = torch.randn(n, 3, *SIZE, generator=gen)
    cells = F.avg_pool2d(images[:, 0] - images[:, 2], 4)
    labels = torch.bucketize(cells, torch.tensor([-0.3, -0.1, 0.1, 0.3]))
    return images, labels


def test_a_short_search_follows_the_path_at_every_shrink() -> None:
    """30 steps to 30 % of ``test_seg``, shrinking every 5: far too few updates for ρ alone."""
    torch.manual_seed(1995)
    gen = torch.Generator().manual_seed(7)
    spec = get_spec("test_seg")
    model: nn.Module = build_model(spec, init="mnas")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    ema = ModelEma(model, decay=0.9)
    total, warmup = 30, 6
    budget = int(0.3 * cost(spec, SIZE).macs)
    ctl = SearchController(
        model, spec, optimizer, ema, SIZE, threshold=2e-2, rho=0.5, rho_free_steps=2, rho_warmup_steps=warmup,
        shrink_every=5, min_saving=0, budget=budget, total_steps=total, path_tolerance=TOLERANCE,
    )
    batches = [_data(gen) for _ in range(4)]
    log = []
    for step in range(total):
        images, labels = batches[step % len(batches)]
        model.train()
        loss = F.cross_entropy(model(images), labels) + ctl.penalty(model, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update(model)
        done = step + 1
        if ctl.should_shrink(done) or done == total:
            result = ctl.shrink_now(model, optimizer, ema, done, final=done == total)
            if result.shrunk:
                model, optimizer = result.model, result.optimizer
                rebind_scheduler(scheduler, optimizer)
            log.append(json.loads(json.dumps(result.record)))

    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30]
    for r in log:
        assert r["budget"] == r["target_macs"] == budget and r["cost_unit"] == "MACs"
        assert r["cost"] == r["macs"] and r["cost_before"] == r["macs_before"]  # the MAC model: the same figures
        assert r["path_cost"] == pytest.approx(ctl.path_cost(r["step"]))
    for r in log:
        if r["step"] >= warmup:
            assert r["cost"] <= (1 + TOLERANCE) * r["path_cost"], r
    assert [r["cost"] for r in log] == sorted((r["cost"] for r in log), reverse=True)
    # ρ could not keep up: shrinks had to cut alive units, and the penalty's pace alone was behind
    assert sum(r["cut_units"] for r in log if not r["final"]) > 0
    final = log[-1]
    assert final["final"] and 0.97 * budget <= final["cost"] <= budget
    assert final["cost"] == cost(ctl.spec, SIZE).macs
    # the last shrinks are small: the budget was approached over the run, not in one final cut
    assert log[-2]["cost"] <= (1 + TOLERANCE) * budget


def _controller(make_net, path_tolerance: float = TOLERANCE):
    spec, model = make_net("test_seg", dtype=torch.float32)
    ema = ModelEma(model, decay=0.5, warmup_cap=False)
    budget = int(0.3 * cost(spec, SIZE).macs)
    ctl = SearchController(
        model, spec, None, ema, SIZE, threshold=1e-3, rho=1e-3, min_saving=0, budget=budget, total_steps=100,
        path_tolerance=path_tolerance,
    )
    return spec, model, ema, ctl


@torch.no_grad()
def _kill(nets: list[nn.Module], keep: Keep) -> None:
    """Set γ = 0 in every net for the units ``keep`` removes (what a penalty that keeps up would do)."""
    for net in nets:
        blocks = block_modules(net)
        for path, k in keep.items():
            block = blocks[path]
            if k.channels.numel():
                block.dw_bn.weight[~k.channels] = 0.0
            if k.queries is not None:
                block.transformer.input_norm.weight[~k.queries] = 0.0


def _removed(keep: Keep) -> int:
    return sum(int((~k.channels).sum()) + (0 if k.queries is None else int((~k.queries).sum())) for k in keep.values())


def test_a_penalty_on_the_path_needs_no_cut(make_net) -> None:
    step = 30
    for where in (1.0, 1.04):  # on the path, and within the tolerance above it
        spec, model, ema, ctl = _controller(make_net)
        path = ctl.path_cost(step)
        assert ctl.path_cost(0) == MAC_COST.total(spec, SIZE) > path > ctl.path_cost(75) == ctl.budget
        dead = prune_to_budget(model, spec, where * path, SIZE)
        _kill([model, ema.module], dead)
        keep = ctl.decide(model, step=step)
        assert all(torch.equal(keep[p].channels, dead[p].channels) for p in keep)
        res = ctl.shrink_now(model, torch.optim.SGD(model.parameters(), lr=0.1), ema, step)
        assert res.shrunk and res.record["cut_units"] == 0 and res.record["killed_units"] == _removed(dead) > 0
        assert res.record["cost"] <= (1 + TOLERANCE) * path


def test_a_penalty_behind_the_path_is_cut_down_to_it(make_net) -> None:
    spec, model, ema, ctl = _controller(make_net)
    step = 30
    path = ctl.path_cost(step)
    total = MAC_COST.total(spec, SIZE)
    # |γ| > threshold everywhere: the penalty killed nothing yet
    assert ctl.predicted_cost(model) == total  # what ρ control sees: no cut
    assert MAC_COST.total(kept_spec(spec, ctl.decide(model)), SIZE) == total
    # the cut ranks the alive units as prune_to_budget does (|γ| per cost, here of the current model)
    expected = prune_to_budget(model, spec, path, SIZE)
    keep = ctl.decide(model, step=step)
    assert all(torch.equal(keep[p].channels, expected[p].channels) for p in keep)
    seen = []

    def sync(obj):
        seen.append(obj)
        return json.loads(json.dumps(obj))  # what a broadcast from rank 0 gives back: a plain copy

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    res = ctl.shrink_now(model, optimizer, ema, step, sync=sync)
    assert len(seen) == 1 and res.shrunk
    r = res.record
    assert 0.97 * path <= r["cost"] <= path and r["path_cost"] == pytest.approx(path)
    assert r["killed_units"] == 0 and r["cut_units"] == _removed(expected) and r["cost_before"] == total


def test_an_infinite_tolerance_never_cuts_before_the_end(make_net) -> None:
    spec, model, ema, ctl = _controller(make_net, path_tolerance=math.inf)
    total = MAC_COST.total(spec, SIZE)
    assert MAC_COST.total(kept_spec(spec, ctl.decide(model, step=60)), SIZE) == total
    final = ctl.decide(model, final=True, step=100)
    assert 0.97 * ctl.budget <= MAC_COST.total(kept_spec(spec, final), SIZE) <= ctl.budget
    with pytest.raises(ValueError, match="path_tolerance"):
        SearchController(model, spec, None, ema, SIZE, path_tolerance=-0.1)
