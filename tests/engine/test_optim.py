"""Optimizers: parameter groups, weight-decay modes, RMSprop epsilon, manual L2."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hrnas.engine.config import OptimConfig
from hrnas.engine.optim import build_optimizer, l2_penalty, param_groups, rmsprop_torch_eps


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, groups=4, bias=False)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(self.ln(y))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_split_by_dimension():
    net = Net()
    groups = param_groups(net, 0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert ids(groups[0]["params"]) == ids([net.conv.weight, net.dw.weight, net.fc.weight])
    assert ids(groups[1]["params"]) == ids([net.bn.weight, net.bn.bias, net.ln.weight, net.ln.bias, net.fc.bias])
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adamw"])
def test_build_each_optimizer(name):
    net = Net()
    opt = build_optimizer(net, OptimConfig(name=name, lr=0.5, weight_decay=1e-4, eps=1e-3, momentum=0.8))
    expected = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adamw": torch.optim.AdamW}[name]
    assert type(opt) is expected
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert all(g["lr"] == 0.5 for g in opt.param_groups)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    if name == "rmsprop":
        assert opt.param_groups[0]["eps"] == pytest.approx(math.sqrt(1e-3))
        assert opt.param_groups[0]["alpha"] == 0.9 and opt.param_groups[0]["momentum"] == 0.8
    if name == "adamw":
        assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_l2_mode_turns_optimizer_decay_off():
    opt = build_optimizer(Net(), OptimConfig(name="adamw", weight_decay=1e-5, wd_mode="l2_conv_linear"))
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)


def test_l2_penalty_matches_hand_sum():
    net = Net()
    hand = sum((w**2).sum() for w in (net.conv.weight, net.dw.weight, net.fc.weight))
    torch.testing.assert_close(l2_penalty(net, 1e-2), 0.5 * 1e-2 * hand)
    with_bias = l2_penalty(net, 1e-2, extra=[net.fc.bias])
    torch.testing.assert_close(with_bias, 0.5 * 1e-2 * (hand + (net.fc.bias**2).sum()))
    l2_penalty(net, 1.0).backward()
    torch.testing.assert_close(net.conv.weight.grad, net.conv.weight.detach())
    assert net.bn.weight.grad is None and net.frozen.weight.grad is None
    assert l2_penalty(nn.BatchNorm2d(3), 1.0).item() == 0.0


def test_rmsprop_eps_translation():
    # eps inside the sqrt (TF) vs sqrt(eps) outside (torch): equal denominators at v = 0
    tf_eps = 1e-3
    assert math.sqrt(0 + tf_eps) == pytest.approx(math.sqrt(0) + rmsprop_torch_eps(tf_eps))
    v = 100.0
    assert math.sqrt(v + tf_eps) == pytest.approx(math.sqrt(v) + rmsprop_torch_eps(tf_eps), rel=5e-3)


def test_no_trainable_parameters():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(frozen, OptimConfig())


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adamw"])
def test_fast_optimizer_steps_match_the_per_tensor_loop(name):
    """The fused (SGD, AdamW) or foreach (RMSprop) step the trainer uses gives the loop's parameters."""
    torch.manual_seed(0)
    fast_net = Net()
    loop_net = Net()
    loop_net.load_state_dict(fast_net.state_dict())
    cfg = OptimConfig(name=name, lr=0.05, weight_decay=1e-2, eps=1e-3, momentum=0.8)
    fast = build_optimizer(fast_net, cfg)
    assert fast.defaults.get("fused") or fast.defaults.get("foreach")
    loop = build_optimizer(loop_net, cfg)
    for group in loop.param_groups:
        group["fused"], group["foreach"] = None, False
    x = torch.randn(4, 3, 8, 8)
    for _ in range(3):
        for net, opt in ((fast_net, fast), (loop_net, loop)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for a, b in zip(fast_net.parameters(), loop_net.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
