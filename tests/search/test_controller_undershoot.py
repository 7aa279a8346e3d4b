"""With a target, a shrink never takes the network below the budget, even when most units died."""

from __future__ import annotations

import torch

from hrnas.search.controller import SearchController
from hrnas.space import build_model, cost
from hrnas.space.zoo import get_spec


def test_mass_death_is_clamped_to_the_budget() -> None:
    torch.manual_seed(0)
    spec = get_spec("test_seg")
    model = build_model(spec)
    size = (48, 48)
    target = int(0.5 * cost(spec, size).macs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctl = SearchController(
        model,
        spec,
        opt,
        None,
        size,
        threshold=1e-3,
        rho=1e-3,
        shrink_every=1,
        min_saving=0,
        budget=target,
        total_steps=10,
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(torch.rand_like(m.weight) * 1e-4)  # nearly every factor under the threshold
    for final in (False, True):
        result = ctl.shrink_now(model, opt, None, step=5, final=final)
        macs = cost(result.spec, size).macs
        assert 0.97 * target <= macs <= target, (final, macs, target)
        model, opt = result.model, result.optimizer
