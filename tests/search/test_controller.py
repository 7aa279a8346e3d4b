"""SearchController: the contract a training loop relies on (penalty, cadence, shrink with optimizer/EMA)."""

from __future__ import annotations

import json

import pytest
import torch

from hrnas.engine.optim import param_groups
from hrnas.search.budget import BudgetError, min_reachable_cost
from hrnas.search.controller import SearchController
from hrnas.search.shrink import keep_from_lists
from hrnas.space.cost import cost
from hrnas.space.network import block_modules
from hrnas.utils.ema import ModelEma

SIZE = (32, 32)


def setup(make_net, name="test_seg", **kw):
    spec, model = make_net(name, dtype=torch.float32)
    model.train()
    ema = ModelEma(model, decay=0.5, warmup_cap=False)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-3)
    args = dict(threshold=1e-3, rho=1e-3, min_saving=0)
    args.update(kw)
    ctl = SearchController(model, spec, optimizer, ema, SIZE, **args)
    return spec, model, ema, optimizer, ctl


def step(model, optimizer, ctl, ema, i):
    x = torch.randn(2, 3, *SIZE)
    loss = model(x).square().mean() + ctl.penalty(model, i)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ema.update(model)


def test_should_shrink_cadence(make_net):
    *_, ctl = setup(make_net, shrink_every=10)
    assert [s for s in range(35) if ctl.should_shrink(s)] == [10, 20, 30]
    *_, never = setup(make_net)
    assert not any(never.should_shrink(s) for s in range(50))


def test_shrink_now_replaces_model_optimizer_and_ema(make_net):
    spec, model, ema, optimizer, ctl = setup(make_net, min_saving=10**12)
    step(model, optimizer, ctl, ema, 0)
    path = "stages[1].parallel[1][0]"
    with torch.no_grad():
        for net in (model, ema.module):
            block_modules(net)[path].dw_bn.weight[:16] = 0.0  # the whole 3×3 group
            block_modules(net)["stages[2].fuse[1].block"].dw_bn.weight.zero_()  # a whole block
    res = ctl.shrink_now(model, optimizer, ema, step=1)
    assert not res.shrunk and res.model is model and res.optimizer is optimizer and res.spec is spec
    assert res.record["saving_macs"] > 0

    ctl.min_saving = 0
    res = ctl.shrink_now(model, optimizer, ema, step=2)
    assert res.shrunk and res.model is not model and ctl.spec is res.spec
    record = json.loads(json.dumps(res.record))
    assert record["macs"] == cost(res.spec, SIZE).macs < record["macs_before"] == cost(spec, SIZE).macs
    assert record["params"] == sum(p.numel() for p in res.model.parameters())
    assert record["blocks"][path] == {"kernel_sizes": [5, 7], "channels": [16, 16], "queries": 4}
    assert record["blocks"]["stages[2].fuse[1].block"]["channels"] == []
    assert res.ema is ema and dict(ema.module.named_parameters()).keys() == dict(res.model.named_parameters()).keys()
    for (n, a), (_, b) in zip(ema.module.state_dict().items(), res.model.state_dict().items(), strict=True):
        assert a.shape == b.shape, n
    assert res.model.training
    # training continues on the new objects
    for i in range(3, 5):
        step(res.model, res.optimizer, ctl, ema, i)


def test_ema_and_current_rule_and_final_uses_the_ema(make_net):
    spec, model, ema, optimizer, ctl = setup(make_net)
    path = "head.transform"
    with torch.no_grad():
        block_modules(model)[path].dw_bn.weight[:4] = 0.0  # dead in the model only
        block_modules(ema.module)[path].dw_bn.weight[4:8] = 0.0  # dead in the EMA only
        block_modules(model)[path].dw_bn.weight[8:10] = 0.0  # dead in both
        block_modules(ema.module)[path].dw_bn.weight[8:10] = 0.0
    keep = ctl.decide(model)[path].channels
    assert keep[:8].all() and not keep[8:10].any()
    final = ctl.decide(model, final=True)[path].channels
    assert final[:4].all() and not final[4:10].any()
    res = ctl.shrink_now(model, optimizer, ema, step=5, final=True)
    assert res.record["decide_on"] == "ema" and res.record["final"]
    assert dict(res.spec.blocks())[path].hidden == (48 - 6, 48, 48)


def test_final_shrink_meets_the_target_and_sync_decides(make_net):
    spec, model, ema, optimizer, _ = setup(make_net)
    target = int(0.6 * cost(spec, SIZE).macs)
    ctl = SearchController(model, spec, optimizer, ema, SIZE, rho=1e-3, budget=target, total_steps=100)
    seen = []

    def sync(obj):
        seen.append(obj)
        return json.loads(json.dumps(obj))  # what a broadcast from rank 0 gives back: a plain copy

    res = ctl.shrink_now(model, optimizer, ema, step=100, final=True, sync=sync)
    assert len(seen) == 1 and isinstance(seen[0]["head.transform"]["channels"], list)
    assert res.shrunk and 0.97 * target <= res.record["macs"] <= target
    assert res.spec != spec
    assert cost(res.spec, SIZE).macs == res.record["macs"]
    assert keep_from_lists(seen[0]).keys() == dict(spec.blocks()).keys()


def test_bad_arguments(make_net):
    spec, model, ema, optimizer, _ = setup(make_net)
    floor = min_reachable_cost(spec, SIZE)
    with pytest.raises(BudgetError, match=str(floor)):
        SearchController(model, spec, optimizer, ema, SIZE, rho=1e-3, budget=floor - 1, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        SearchController(model, spec, optimizer, ema, SIZE, rho=1e-3, budget=floor + 1)
    with pytest.raises(ValueError, match="rho > 0"):
        SearchController(model, spec, optimizer, ema, SIZE, budget=floor + 1, total_steps=10)
    with pytest.raises(ValueError, match="decide_on"):
        SearchController(model, spec, optimizer, ema, SIZE, decide_on="never")


def test_state_dict_round_trip(make_net):
    spec, model, ema, optimizer, _ = setup(make_net)
    target = int(0.6 * cost(spec, SIZE).macs)
    ctl = SearchController(model, spec, optimizer, ema, SIZE, rho=1e-3, budget=target, total_steps=100)
    ctl.rho_controller.update(10, 10**9)
    state = json.loads(json.dumps(ctl.state_dict()))
    again = SearchController(model, spec, optimizer, ema, SIZE, rho=1e-3, budget=target, total_steps=100)
    again.load_state_dict(state, model)
    assert again.current_rho() == ctl.current_rho() != 1e-3
    assert again.normalizer == ctl.normalizer


def test_short_search_with_target(make_net):
    spec, model, ema, optimizer, _ = setup(make_net)
    total = 24
    target = int(0.55 * cost(spec, SIZE).macs)
    ctl = SearchController(
        model,
        spec,
        optimizer,
        ema,
        SIZE,
        rho=1e-2,
        rho_free_steps=2,
        rho_warmup_steps=6,
        shrink_every=8,
        min_saving=0,
        budget=target,
        total_steps=total,
    )
    records = []
    for i in range(total):
        step(model, optimizer, ctl, ema, i)
        if ctl.should_shrink(i + 1) or i + 1 == total:
            res = ctl.shrink_now(model, optimizer, ema, i + 1, final=i + 1 == total)
            model, optimizer = res.model, res.optimizer
            records.append(res.record)
    assert records[-1]["final"] and 0.97 * target <= records[-1]["macs"] <= target
    assert ctl.current_rho() > 1e-2  # the network was above its path: ρ went up
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, *SIZE))
    assert out.shape[1] == 5 and torch.isfinite(out).all()
    assert ema.module(torch.randn(1, 3, *SIZE)).shape == out.shape
