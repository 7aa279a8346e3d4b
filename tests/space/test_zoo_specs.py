"""One suite over every zoo spec: shapes, finiteness, gradients, exact cost, JSON round trip, deploy."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hrnas.space import build_model, cost
from hrnas.space.deploy import deploy
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import ClassificationHeadSpec, NetSpec
from hrnas.space.zoo import get_spec, list_specs, load_spec_file

ZOO = sorted(list_specs())
SIZES = {"test": (35, 29), "default": (32, 40)}


def _size(name: str) -> tuple[int, int]:
    return SIZES["test"] if name.startswith("test") else SIZES["default"]


def _in_channels(spec: NetSpec | PointPillarsSpec) -> int:
    return spec.in_channels if isinstance(spec, PointPillarsSpec) else spec.stem.in_channels


def _expected_shape(spec: NetSpec | PointPillarsSpec, batch: int, hw: tuple[int, int]) -> tuple[int, ...]:
    if isinstance(spec, PointPillarsSpec):
        return (batch, spec.out_channels, hw[0] // spec.out_stride, hw[1] // spec.out_stride)
    if isinstance(spec.head, ClassificationHeadSpec):
        return (batch, spec.head.num_classes)
    h, w = hw
    for _ in spec.stem.channels:
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return (batch, spec.head.num_outputs, h, w)


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) * 0.2 + 0.1
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("transformer", [True, False])
def test_cost_equals_counter_and_params(name: str, transformer: bool) -> None:
    spec = get_spec(name, transformer=transformer)
    hw = _size(name)
    model = build_model(spec).eval()
    with FlopCounterMode(display=False) as counter:
        out = model(torch.randn(1, _in_channels(spec), *hw))
    c = cost(spec, hw)
    assert counter.get_total_flops() == 2 * c.macs
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert tuple(out.shape) == _expected_shape(spec, 1, hw)
    assert sum(i.macs for i in c.items) == c.macs


@pytest.mark.parametrize("name", ZOO)
def test_forward_backward_every_parameter_gets_gradient(name: str) -> None:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build_model(spec).train()
    hw = _size(name)
    out = model(torch.randn(2, _in_channels(spec), *hw))
    assert tuple(out.shape) == _expected_shape(spec, 2, hw)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing[:5]}"
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"all-zero gradient for {zero[:5]}"


@pytest.mark.parametrize("name", ZOO)
def test_json_round_trip(name: str, tmp_path) -> None:
    spec = get_spec(name)
    assert type(spec).from_json(spec.to_json()) == spec
    spec.save(tmp_path / "arch.json")
    assert type(spec).load(tmp_path / "arch.json") == spec
    assert load_spec_file(tmp_path / "arch.json") == spec


@pytest.mark.parametrize("name", ZOO)
def test_deploy_matches_eval_outputs(name: str) -> None:
    spec = get_spec(name)
    torch.manual_seed(1)
    model = build_model(spec).eval()
    _randomise_bn(model)
    x = torch.randn(2, _in_channels(spec), *_size(name))
    deployed = deploy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in deployed.modules())
    with torch.no_grad():
        ref = model(x)
        got = deployed(x)
        got_cl = deployed.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    scale = max(1.0, ref.abs().max().item())
    assert (ref - got).abs().max().item() <= 1e-5 * scale
    assert (ref - got_cl).abs().max().item() <= 1e-5 * scale
    assert model.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
