"""Resource-aware L1 penalty: weights are unit MACs / Z, queries at their alive count, gradient ρ·π·sign(γ)."""

from __future__ import annotations

import pytest
import torch

from hrnas.search.controller import SearchController
from hrnas.search.penalty import ResourcePenalty, mean_unit_cost
from hrnas.search.units import collect_units, read_factors
from hrnas.space.network import block_modules
from hrnas.space.zoo import get_spec

SIZE = (64, 64)

# test_seg at 64×64: the stem brings the input to 16×16; branches are 16, 8 and 4 pixels wide.
# (path, C_in, C_out, stride, input side, hidden per kernel, queries), written out by hand.
TEST_SEG_BLOCKS = [
    ("stages[0].fuse[0].block", 8, 8, 1, 16, 8, 4),
    ("stages[0].parallel[0][0]", 8, 8, 1, 16, 8, 4),
    ("stages[1].fuse[0].block", 8, 8, 1, 16, 8, 4),
    ("stages[1].new_branch", 8, 16, 2, 16, 8, 0),
    ("stages[1].parallel[0][0]", 8, 8, 1, 16, 8, 4),
    ("stages[1].parallel[1][0]", 16, 16, 1, 8, 16, 4),
    ("stages[2].fuse[0].block", 8, 8, 1, 16, 8, 4),
    ("stages[2].fuse[1].block", 16, 8, 1, 8, 16, 0),
    ("stages[2].fuse[2].block", 8, 16, 2, 16, 8, 0),
    ("stages[2].fuse[3].block", 16, 16, 1, 8, 16, 4),
    ("stages[2].new_branch", 16, 24, 2, 8, 16, 0),
    ("stages[2].parallel[0][0]", 8, 8, 1, 16, 8, 4),
    ("stages[2].parallel[1][0]", 16, 16, 1, 8, 16, 4),
    ("stages[2].parallel[2][0]", 24, 24, 1, 4, 24, 4),
    ("head.transform", 48, 12, 1, 16, 48, 0),
]
S = 16  # token dimension: 4×4 grid


def transformer_cost(n: int, cin: int, cout: int) -> int:
    """Spec §3.5 with S = grid²: S·n·(C_in + 2 + C_out) + 2·(2n²S + 6nS²)."""
    return 0 if n == 0 else S * n * (cin + 2 + cout) + 2 * (2 * n * n * S + 6 * n * S * S)


def channel_cost(cin: int, cout: int, stride: int, side: int, k: int) -> int:
    out = side // stride
    return cin * side * side + k * k * out * out + cout * out * out


def hand_z() -> float:
    total = count = 0
    for _, cin, cout, stride, side, h, n in TEST_SEG_BLOCKS:
        for k in (3, 5, 7):
            total += h * channel_cost(cin, cout, stride, side, k)
            count += h
        total += n * (transformer_cost(n, cin, cout) - transformer_cost(n - 1, cin, cout))
        count += n
    return total / count


def test_units_follow_the_spec(make_net):
    spec, _ = make_net("test_seg")
    units = collect_units(spec, SIZE)
    assert [
        (p, u.block.in_channels, u.block.out_channels, u.block.stride, u.in_hw[0], u.block.hidden[0], u.num_queries)
        for p, u in units.items()
    ] == TEST_SEG_BLOCKS
    u = units["stages[2].fuse[2].block"]
    assert [(g.kernel_size, g.start, g.stop) for g in u.groups] == [(3, 0, 8), (5, 8, 16), (7, 16, 24)]


def test_channel_weights_equal_unit_macs_over_z(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    penalty = ResourcePenalty(model, spec, SIZE)
    z = hand_z()
    assert penalty.normalizer == pytest.approx(z, rel=1e-12)
    weights = penalty.channel_weights()
    # 8 → 16 stride-2 block at 16×16: c_k = 8·256 + k²·64 + 16·64
    expected = [3648 / z] * 8 + [4672 / z] * 8 + [6208 / z] * 8
    assert weights["stages[2].fuse[2].block"].tolist() == pytest.approx(expected, rel=1e-6)
    for path, cin, cout, stride, side, h, _ in TEST_SEG_BLOCKS:
        want = [channel_cost(cin, cout, stride, side, k) / z for k in (3, 5, 7) for _ in range(h)]
        assert weights[path].tolist() == pytest.approx(want, rel=1e-6), path


def test_query_weight_uses_the_alive_count(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    penalty = ResourcePenalty(model, spec, SIZE, threshold=1e-3)
    z = penalty.normalizer
    path = "stages[1].parallel[1][0]"
    assert penalty.query_weights(model)[path] == pytest.approx(
        (transformer_cost(4, 16, 16) - transformer_cost(3, 16, 16)) / z
    )
    with torch.no_grad():
        block_modules(model)[path].transformer.input_norm.weight[:2] = torch.tensor([5e-4, -5e-4])
    assert penalty.query_weights(model)[path] == pytest.approx(
        (transformer_cost(2, 16, 16) - transformer_cost(1, 16, 16)) / z
    )


def test_penalty_value_and_gradient(make_net):
    spec, model = make_net("test_cls_all", dtype=torch.float32)
    blocks = block_modules(model)
    with torch.no_grad():  # a few exact zeros (no gradient) and a query below the threshold
        first = next(iter(blocks.values()))
        first.dw_bn.weight[:3] = 0.0
        first.transformer.input_norm.weight[0] = 2e-4
    rho = 0.01
    ctl = SearchController(
        model, spec, None, None, SIZE, threshold=1e-3, rho=rho, rho_free_steps=10, rho_warmup_steps=20
    )
    assert float(ctl.penalty(model, 5)) == 0.0
    penalty = ResourcePenalty(model, spec, SIZE)
    channel_pi = penalty.channel_weights()
    query_pi = penalty.query_weights(model)
    factors = read_factors(model, spec)
    by_hand = sum(float((channel_pi[p] * f.channels).sum()) for p, f in factors.items() if f.channels.numel())
    by_hand += sum(query_pi[p] * float(f.queries.sum()) for p, f in factors.items() if f.queries is not None)

    model.zero_grad()
    value = ctl.penalty(model, 15)  # half-way through the ρ ramp
    assert float(value.detach()) == pytest.approx(0.5 * rho * by_hand, rel=1e-5)
    value = ctl.penalty(model, 30)
    assert float(value.detach()) == pytest.approx(rho * by_hand, rel=1e-5)
    value.backward()
    for path, block in blocks.items():
        gamma = block.dw_bn.weight
        torch.testing.assert_close(gamma.grad, rho * channel_pi[path] * torch.sign(gamma.detach()))
        if block.transformer is not None:
            g = block.transformer.input_norm.weight
            torch.testing.assert_close(g.grad, rho * query_pi[path] * torch.sign(g.detach()))
    assert (first.dw_bn.weight.grad[:3] == 0).all()
    alive = int((first.transformer.input_norm.weight.abs() > 1e-3).sum())
    assert alive == first.transformer.num_queries - 1
    assert query_pi[next(iter(blocks))] == pytest.approx(penalty.query_weight(next(iter(blocks)), alive))


def test_rebuild_keeps_z(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    penalty = ResourcePenalty(model, spec, SIZE)
    again = penalty.rebuild(model, spec)
    assert again.normalizer == penalty.normalizer and again.input_size == SIZE
    other = ResourcePenalty(model, spec, (128, 128))
    assert other.normalizer != penalty.normalizer


@pytest.mark.parametrize(
    ("name", "z", "pi_min", "pi_max", "groups"),
    [
        ("hrnas_cls_supernet", 49_438, 0.22, 6.53, 201),
        ("hrnas_cityscapes_supernet", 131_029, 0.084, 9.79, 183),
        ("hrnas_ade20k_supernet", 151_382, 0.073, 10.34, 183),
    ],
)
def test_normaliser_matches_the_papers_code_at_224(name, z, pi_min, pi_max, groups):
    # spec §4.3 [run]: channels only (the authors' code never builds its transformers), profiled at 224²
    units = collect_units(get_spec(name, transformer=False), (224, 224))
    assert mean_unit_cost(units) == pytest.approx(z, abs=0.5)
    pis = [g.unit_cost / mean_unit_cost(units) for u in units.values() for g in u.groups]
    assert len(pis) == groups
    assert min(pis) == pytest.approx(pi_min, abs=0.005) and max(pis) == pytest.approx(pi_max, abs=0.005)
