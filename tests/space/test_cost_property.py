"""Property test: on random valid specs, cost() equals what FlopCounterMode counts and the parameters."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from hrnas.space import build_model, cost
from hrnas.space.cost import min_input_size
from hrnas.space.spec import NetSpec
from hrnas.space.zoo import supernet_spec


@st.composite
def random_specs(draw: st.DrawFn) -> tuple[NetSpec, tuple[int, int]]:
    num_stages = draw(st.integers(1, 3))
    widths = [draw(st.integers(2, 10)) for _ in range(num_stages)]
    stages = []
    for s in range(num_stages):
        n = s + 1
        stages.append((n, tuple(draw(st.integers(0, 2)) for _ in range(n)), tuple(widths[:n])))
    head = draw(st.sampled_from(["classification", "segmentation", "keypoints"]))
    kernel_pool = draw(st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, max_size=3, unique=True))
    spec = supernet_spec(
        head=head,
        num_outputs=draw(st.integers(1, 6)),
        stages=stages,
        stem=(draw(st.integers(2, 8)),) * draw(st.integers(1, 2)),
        expand_ratio=1.0,
        kernel_sizes=kernel_pool,
        num_queries=draw(st.integers(1, 3)),
        transformer=draw(st.sampled_from(["none", "residual", "all"])),
        last_channels=draw(st.integers(2, 12)),
        cls_head_channels=tuple(draw(st.integers(2, 9)) for _ in range(num_stages)),
        token_grid=draw(st.integers(1, 4)),
    )
    blocks = {}
    for path, block in spec.blocks():
        hidden = tuple(draw(st.integers(0, 5)) for _ in block.hidden)
        queries = draw(st.integers(0, 3)) if block.num_queries else 0
        blocks[path] = type(block)(
            block.in_channels, block.out_channels, block.stride, block.kernel_sizes, hidden, queries
        )
    spec = spec.replace_blocks(blocks)
    low = min_input_size(spec)  # odd sizes included: strided layers round up
    size = (draw(st.integers(low, 40)), draw(st.integers(low, 40)))
    return spec, size


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_specs())
def test_cost_matches_counter_on_random_specs(case: tuple[NetSpec, tuple[int, int]]) -> None:
    spec, size = case
    assert NetSpec.from_json(spec.to_json()) == spec
    model = build_model(spec).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, spec.stem.in_channels, *size))
    c = cost(spec, size)
    assert counter.get_total_flops() == 2 * c.macs
    assert sum(p.numel() for p in model.parameters()) == c.params
