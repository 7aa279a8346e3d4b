"""The cost seam: MacCost prices units and totals specs exactly as hrnas.space.cost does, and its prices
are the differences of its totals (the contract the search relies on)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hrnas.space.cost import channel_unit_macs, cost, iter_blocks, query_unit_macs
from hrnas.space.cost_model import MAC_COST, CostModel, MacCost, without_units
from hrnas.space.spec import NetSpec
from hrnas.space.zoo import get_spec

SIZE = (48, 40)
NAMES = ["test_seg", "test_cls_all", "hrnas_demo_supernet", "hrnas_demo_kitti_supernet"]


def _with_block(spec: NetSpec, path: str, **changes: int | tuple[int, ...]) -> NetSpec:
    block = dict(spec.blocks())[path]
    return spec.replace_blocks({path: replace(block, **changes)})


def test_mac_cost_is_the_default_and_an_abstract_cost_model() -> None:
    assert isinstance(MAC_COST, MacCost) and isinstance(MAC_COST, CostModel)
    assert MAC_COST.unit == "MACs"
    with pytest.raises(TypeError):
        CostModel()  # type: ignore[abstract]


@pytest.mark.parametrize("name", [*NAMES, "pointpillars_bev"])
def test_mac_cost_totals_equal_cost(name: str) -> None:
    spec = get_spec(name)
    size = (64, 64)
    assert MAC_COST.total(spec, size) == cost(spec, size).macs
    assert isinstance(MAC_COST.total(spec, size), int)


@pytest.mark.parametrize("name", NAMES)
def test_mac_prices_equal_the_mac_functions(name: str) -> None:
    spec = get_spec(name)
    for _, block, in_hw in iter_blocks(spec, SIZE):
        for k in block.kernel_sizes:
            assert MAC_COST.channel_price(block, in_hw, k) == channel_unit_macs(block, in_hw, k)
        for n in range(1, block.num_queries + 1):
            expected = query_unit_macs(block.in_channels, block.out_channels, n, spec.token_grid)
            assert MAC_COST.query_price(block, in_hw, n, spec.token_grid) == expected


@pytest.mark.parametrize("name", NAMES)
def test_prices_are_differences_of_totals(name: str) -> None:
    """Removing one channel of a group (or one query) saves exactly its price, at any width."""
    spec = get_spec(name)
    for path, block, in_hw in list(iter_blocks(spec, SIZE))[::3]:
        for g, k in enumerate(block.kernel_sizes):
            if block.hidden[g] == 0:
                continue
            hidden = list(block.hidden)
            hidden[g] -= 1
            smaller = _with_block(spec, path, hidden=tuple(hidden))
            saving = MAC_COST.total(spec, SIZE) - MAC_COST.total(smaller, SIZE)
            assert saving == MAC_COST.channel_price(block, in_hw, k)
        if block.num_queries:
            fewer = _with_block(spec, path, num_queries=block.num_queries - 1)
            saving = MAC_COST.total(spec, SIZE) - MAC_COST.total(fewer, SIZE)
            assert saving == MAC_COST.query_price(block, in_hw, block.num_queries, spec.token_grid)


@pytest.mark.parametrize("name", NAMES)
def test_fixed_part_is_the_spec_without_units(name: str) -> None:
    spec = get_spec(name)
    bare = without_units(spec)
    assert all(b.total_hidden == 0 and b.num_queries == 0 for _, b in bare.blocks())
    assert [p for p, _ in bare.blocks()] == [p for p, _ in spec.blocks()]
    fixed = MAC_COST.fixed(spec, SIZE)
    assert fixed == cost(bare, SIZE).macs == CostModel.fixed(MAC_COST, spec, SIZE)
    assert 0 < fixed < MAC_COST.total(spec, SIZE)


def test_format_and_describe() -> None:
    assert MAC_COST.format(259_200_000) == "259.2M"
    assert MAC_COST.describe(1_234_000_000) == "1.234G MACs"
    assert repr(MAC_COST) == "MacCost()"
