"""Optimizer state follows a shrink: one more step equals the unshrunk step with dead units' gradients zeroed."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from hrnas.engine.optim import param_groups
from hrnas.search.shrink import alive_masks, rebind_scheduler, remap_optimizer, shrink
from hrnas.space.network import HRNet, block_modules

SIZE = (32, 32)

OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.01, momentum=0.9, nesterov=True),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99), eps=1e-8),
    "rmsprop": lambda groups: torch.optim.RMSprop(groups, lr=1e-2, alpha=0.9, momentum=0.9, eps=1e-3, centered=True),
}


@torch.no_grad()
def kill_(model: HRNet, gen: torch.Generator) -> dict[str, Tensor]:
    """γ = 0 for ~30 % of the channels of every block and for every channel of one block."""
    dead = {}
    for i, (path, block) in enumerate(block_modules(model).items()):
        h = block.spec.total_hidden
        mask = torch.rand(h, generator=gen) < 0.3
        if i == 2:
            mask[:] = True
        block.dw_bn.weight[mask] = 0.0
        dead[path] = mask
    return dead


@torch.no_grad()
def zero_dead_grads_(model: HRNet, dead: dict[str, Tensor]) -> None:
    """Zero every gradient entry that belongs to a dead channel (the units a shrink removes)."""
    for path, mask in dead.items():
        block = block_modules(model)[path]
        for p in (
            block.expand.weight,
            block.expand_bn.weight,
            block.expand_bn.bias,
            block.dw_bn.weight,
            block.dw_bn.bias,
        ):
            p.grad[mask] = 0.0
        block.project.weight.grad[:, mask] = 0.0
        start = 0
        for conv in block.depthwise.convs:
            width = conv.out_channels
            conv.weight.grad[mask[start : start + width]] = 0.0
            start += width
        if bool(mask.all()):  # the whole conv path goes
            for p in (block.project.weight, block.project_bn.weight, block.project_bn.bias):
                p.grad.zero_()


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, target: Tensor, dead: dict[str, Tensor] | None = None
) -> None:
    optimizer.zero_grad()
    loss = (torch.tanh(model(x) / 10) - target).square().mean()  # bounded: the random nets have large outputs
    loss.backward()
    if dead is not None:
        zero_dead_grads_(model, dead)
    optimizer.step()


def data(gen: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.randn(2, 3, *SIZE, generator=gen, dtype=torch.float64), torch.rand(
        2, 10, generator=gen, dtype=torch.float64
    )


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_remapped_step_equals_masked_step(opt_name, make_net):
    spec, model = make_net("test_cls_all")
    gen = torch.Generator().manual_seed(1)
    dead = kill_(model, gen)
    optimizer = OPTIMIZERS[opt_name](param_groups(model, 1e-3))
    x, target = data(gen)
    for _ in range(2):  # build up optimizer state
        train_step(model, optimizer, x, target, dead)

    keep = alive_masks(model, spec, mode="current")
    new_spec, new_model, maps = shrink(model, spec, keep)
    new_optimizer = remap_optimizer(optimizer, model, new_model, maps)

    assert type(new_optimizer) is type(optimizer)
    for old_group, new_group in zip(optimizer.param_groups, new_optimizer.param_groups, strict=True):
        assert {k: v for k, v in old_group.items() if k != "params"} == {
            k: v for k, v in new_group.items() if k != "params"
        }
    new_params = {id(p) for p in new_model.parameters()}
    opt_params = [p for g in new_optimizer.param_groups for p in g["params"]]
    assert len(opt_params) == len(new_params) and {id(p) for p in opt_params} == new_params
    for group in new_optimizer.param_groups:  # 1-d parameters stay in the no-decay group
        assert all((p.ndim >= 2) == (group["name"] == "decay") for p in group["params"])
    # no tensor of the new optimizer is shared with the old model or the old optimizer
    old_ptrs = {p.data_ptr() for p in model.parameters()}
    old_ptrs |= {v.data_ptr() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)}
    new_ptrs = {p.data_ptr() for p in opt_params}
    new_ptrs |= {v.data_ptr() for s in new_optimizer.state.values() for v in s.values() if torch.is_tensor(v)}
    assert not old_ptrs & new_ptrs

    x, target = data(gen)
    train_step(model, optimizer, x, target, dead)
    train_step(new_model, new_optimizer, x, target)

    old_params = dict(model.named_parameters())
    for name, p in new_model.named_parameters():
        m = maps[name]
        expected = m.apply(old_params[m.source].detach())
        torch.testing.assert_close(p.detach(), expected, rtol=1e-9, atol=1e-12)
        old_state = optimizer.state[old_params[m.source]]
        new_state = new_optimizer.state[p]
        assert old_state.keys() == new_state.keys()
        for key, value in new_state.items():
            if torch.is_tensor(value) and value.ndim > 0:
                torch.testing.assert_close(value, m.apply(old_state[key]), rtol=1e-9, atol=1e-12, msg=f"{name} {key}")
            else:
                assert float(value) == float(old_state[key]), (name, key)


def test_query_state_is_sliced_with_the_queries(make_net):
    spec, model = make_net("test_seg")
    gen = torch.Generator().manual_seed(4)
    optimizer = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-3)
    x = torch.randn(2, 3, *SIZE, generator=gen, dtype=torch.float64)
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()
    path = "stages[1].parallel[1][0]"
    t = block_modules(model)[path].transformer
    with torch.no_grad():
        t.input_norm.weight[1] = 0.0
    keep = alive_masks(model, spec, mode="current")
    _, new_model, maps = shrink(model, spec, keep)
    new_optimizer = remap_optimizer(optimizer, model, new_model, maps)
    nt = block_modules(new_model)[path].transformer
    rows = torch.tensor([0, 2, 3])
    assert nt.num_queries == 3
    for old_p, new_p, sl in (
        (t.projector.weight, nt.projector.weight, (rows,)),
        (t.query_embed, nt.query_embed, (rows,)),
        (t.reverse.weight, nt.reverse.weight, (slice(None), rows)),
        (t.input_norm.bias, nt.input_norm.bias, (rows,)),
    ):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(new_optimizer.state[new_p][key], optimizer.state[old_p][key][sl])
        assert torch.equal(new_optimizer.state[new_p]["step"], optimizer.state[old_p]["step"])
    assert torch.equal(
        new_optimizer.state[nt.encoder.attn.q.weight]["exp_avg"], optimizer.state[t.encoder.attn.q.weight]["exp_avg"]
    )


def test_scheduler_follows_the_remapped_optimizer(make_net):
    spec, model = make_net("test_seg")
    optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5**s)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    gen = torch.Generator().manual_seed(0)
    kill_(model, gen)
    _, new_model, maps = shrink(model, spec, alive_masks(model, spec, mode="current"))
    new_optimizer = remap_optimizer(optimizer, model, new_model, maps)
    rebind_scheduler(scheduler, new_optimizer)
    assert [g["lr"] for g in new_optimizer.param_groups] == pytest.approx([0.025, 0.025])
    new_optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in new_optimizer.param_groups] == pytest.approx([0.0125, 0.0125])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.025, 0.025])
