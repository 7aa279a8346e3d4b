"""Shared fixtures of the search tests: tiny zoo networks with random weights and BatchNorm statistics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from hrnas.space.network import HRNet, build_model
from hrnas.space.spec import NetSpec
from hrnas.space.zoo import get_spec


@pytest.fixture(autouse=True)
def _tiny_networks_on_one_thread(single_thread: None) -> None:
    """Every search test runs on one thread (``single_thread`` of tests/conftest.py)."""


@torch.no_grad()
def randomize_norms_(model: nn.Module, gen: torch.Generator) -> None:
    """Random BatchNorm γ (both signs), β, running mean/var and LayerNorm affine parameters, in place."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            m.weight.copy_(sign * (0.5 + torch.rand(n, generator=gen)))
            m.bias.copy_(0.5 * torch.randn(n, generator=gen))
            m.running_mean.copy_(0.5 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=gen)))
        elif isinstance(m, nn.LayerNorm):
            m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


@pytest.fixture
def make_net() -> Callable[..., tuple[NetSpec, HRNet]]:
    """``make_net(name, seed=0, dtype=torch.float64)`` → (spec, eval-mode model with random norms)."""

    def make(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[NetSpec, HRNet]:
        torch.manual_seed(seed)
        spec = get_spec(name)
        model = build_model(spec).to(dtype)
        randomize_norms_(model, torch.Generator().manual_seed(seed + 1))
        return spec, model.eval()

    return make
