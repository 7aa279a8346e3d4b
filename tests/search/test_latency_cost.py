"""LatencyCost on a synthetic table (no timing): its prices keep the cost seam's contract, the penalty stays
differentiable, a budget in milliseconds lands in its window, and bad or foreign tables are one-line errors."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hrnas.search.budget import fit_to_blocking, prune_to_budget
from hrnas.search.penalty import ResourcePenalty
from hrnas.search.shrink import kept_spec
from hrnas.space.cost import iter_blocks
from hrnas.space.latency import (
    BlockCurves,
    LatencyCost,
    LatencyTable,
    LatencyTableError,
    block_key,
    monotone,
    skeleton_key,
)
from hrnas.space.network import build_model
from hrnas.space.spec import NetSpec

SIZE = (32, 32)


def synthetic_table(
    spec: NetSpec, size: tuple[int, int] = SIZE, pad_to: int = 8, calibration: dict | None = None
) -> LatencyTable:
    """Curves on a grid of 8 with a fixed cost per group (its first point), convex in width, and a
    quadratic transformer curve; the fixed part 0.5 ms."""
    blocks = {}
    for _, block, in_hw in iter_blocks(spec, size):
        area = in_hw[0] * in_hw[1] / 1024
        groups = {}
        for k, c in zip(block.kernel_sizes, block.hidden, strict=True):
            top = max(c, 16)
            grid = sorted({*range(8, top + 1, 8), top})
            groups[k] = [(0.0, 0.0)] + [(float(w), area * (0.02 + 0.001 * k * w + 1e-5 * w * w)) for w in grid]
        queries = [(0.0, 0.0)] + [(float(n), 0.01 + 0.003 * n + 0.0004 * n * n) for n in range(1, 17)]
        blocks[block_key(block, in_hw)] = BlockCurves(groups, queries)
    meta = {"runtime": "onnxruntime", "threads": 1, "cpu": "test cpu", "input_size": list(size), "pad_to": pad_to}
    if calibration is not None:
        meta["calibration"] = calibration
    return LatencyTable(meta=meta, fixed={skeleton_key(spec): 0.5}, blocks=blocks)


@pytest.mark.parametrize(
    "calibration", [None, {"scale": 1.2, "per_group_ms": 0.05}, {"scale": 0.9, "offset_ms": -0.2, "per_group_ms": 0}]
)
def test_prices_are_exact_differences_of_the_total(calibration, make_net):
    spec, _ = make_net("test_seg")
    cost = LatencyCost(synthetic_table(spec, calibration=calibration))
    assert cost.fixed(spec, SIZE) == pytest.approx(0.5 + (calibration or {}).get("offset_ms", 0.0))
    for path, block, in_hw in list(iter_blocks(spec, SIZE))[:4]:
        for i, k in enumerate(block.kernel_sizes):
            for width in (block.hidden[i], 9, 8, 1):  # on and off the grid, down to the group's last channel
                hidden = tuple(width if j == i else h for j, h in enumerate(block.hidden))
                wider = replace(block, hidden=hidden)
                narrower = replace(block, hidden=tuple(h - 1 if j == i else h for j, h in enumerate(hidden)))
                before = cost.total(spec.replace_blocks({path: wider}), SIZE)
                after = cost.total(spec.replace_blocks({path: narrower}), SIZE)
                assert before - after == pytest.approx(cost.channel_price(wider, in_hw, k), rel=1e-9, abs=1e-12)
                assert cost.channel_price(wider, in_hw, k) >= 0
        if block.num_queries:
            fewer = replace(block, num_queries=block.num_queries - 1)
            drop = cost.total(spec, SIZE) - cost.total(spec.replace_blocks({path: fewer}), SIZE)
            assert drop == pytest.approx(cost.query_price(block, in_hw, block.num_queries, spec.token_grid))


def test_a_group_first_channel_carries_its_fixed_cost(make_net):
    spec, _ = make_net("test_seg")
    cost = LatencyCost(synthetic_table(spec))
    _, block, in_hw = next(iter_blocks(spec, SIZE))
    one = replace(block, hidden=(1, *block.hidden[1:]))
    two = replace(block, hidden=(2, *block.hidden[1:]))
    k = block.kernel_sizes[0]
    assert cost.channel_price(one, in_hw, k) > 5 * cost.channel_price(two, in_hw, k)
    calibrated = LatencyCost(synthetic_table(spec, calibration={"scale": 1.0, "per_group_ms": 0.25}))
    assert calibrated.channel_price(one, in_hw, k) == pytest.approx(cost.channel_price(one, in_hw, k) + 0.25)
    assert calibrated.channel_price(two, in_hw, k) == pytest.approx(cost.channel_price(two, in_hw, k))


def test_deployed_total_pads_each_group_to_the_blocking(make_net):
    spec, _ = make_net("test_seg")
    cost = LatencyCost(synthetic_table(spec, pad_to=8))
    path, block, _ = next(iter_blocks(spec, SIZE))
    odd = spec.replace_blocks({path: replace(block, hidden=(9, *block.hidden[1:]))})
    padded = spec.replace_blocks({path: replace(block, hidden=(16, *block.hidden[1:]))})
    assert cost.deployed_total(odd, SIZE) == pytest.approx(cost.total(padded, SIZE))
    assert cost.total(odd, SIZE) < cost.deployed_total(odd, SIZE)


def test_penalty_is_differentiable_in_milliseconds(make_net):
    spec, model = make_net("test_seg", dtype=torch.float32)
    penalty = ResourcePenalty(model, spec, SIZE, cost_model=LatencyCost(synthetic_table(spec)))
    value = penalty(model)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert value.item() > 0 and grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("fraction", [0.7, 0.4])
def test_a_millisecond_budget_lands_in_its_window(fraction, make_net):
    spec, model = make_net("test_cls_all", dtype=torch.float32)
    cost = LatencyCost(synthetic_table(spec))
    total, floor = cost.total(spec, SIZE), cost.fixed(spec, SIZE)
    budget = floor + fraction * (total - floor)
    keep = prune_to_budget(model, spec, budget, SIZE, cost_model=cost)
    assert 0.97 * budget <= cost.total(kept_spec(spec, keep), SIZE) <= budget


@pytest.mark.parametrize("fraction", [0.7, 0.4])
def test_the_final_prune_fits_the_deployed_network_to_the_budget(fraction, make_net):
    """Rounded to the blocking, the deployed network (every group padded to 8) fits the budget, and the
    padding of each group off the blocking is filled with alive units the budget cut."""
    with_transformers, _ = make_net("test_cls_all")
    spec = with_transformers.replace_blocks({p: replace(b, num_queries=0) for p, b in with_transformers.blocks()})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    gen = torch.Generator().manual_seed(1)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.weight.data = torch.rand(bn.weight.shape, generator=gen)  # distinct importances
    cost = LatencyCost(synthetic_table(spec, pad_to=8))
    total, floor = cost.total(spec, SIZE), cost.fixed(spec, SIZE)
    budget = floor + fraction * (total - floor)
    keep = prune_to_budget(model, spec, budget, SIZE, cost_model=cost)
    assert cost.deployed_total(kept_spec(spec, keep), SIZE) > budget  # the padding the prune did not price
    alive = {p: replace(k, channels=torch.ones_like(k.channels)) for p, k in keep.items()}
    fitted = fit_to_blocking(model, spec, keep, budget, SIZE, cost, restorable=alive)
    deployed = cost.deployed_total(kept_spec(spec, fitted), SIZE)
    assert 0.85 * budget <= deployed <= budget
    supernet = dict(spec.blocks())
    for path, block in kept_spec(spec, fitted).blocks():
        full = dict(zip(supernet[path].kernel_sizes, supernet[path].hidden, strict=True))
        for k, width in zip(block.kernel_sizes, block.hidden, strict=True):
            assert width % 8 == 0 or width == full[k]  # filled, unless the group has no more channels
    without_restore = fit_to_blocking(model, spec, keep, budget, SIZE, cost)
    assert cost.deployed_total(kept_spec(spec, without_restore), SIZE) == pytest.approx(deployed)
    assert all(int(k.channels.sum()) <= int(fitted[p].channels.sum()) for p, k in without_restore.items())
    filled = sum(int(k.channels.sum()) for k in fitted.values())
    assert sum(int(k.channels.sum()) for k in without_restore.values()) < filled
    unchanged = fit_to_blocking(model, spec, keep, budget, SIZE, LatencyCost(synthetic_table(spec, pad_to=1)))
    assert all(torch.equal(unchanged[p].channels, k.channels) for p, k in keep.items())
    with pytest.warns(RuntimeWarning, match="no kernel group is left to round down"):
        empty = fit_to_blocking(model, spec, keep, 0.5 * floor, SIZE, cost)
    assert all(not k.channels.any() for k in empty.values())


def test_a_table_for_another_machine_is_named_in_one_line(make_net):
    spec, _ = make_net("test_seg")
    table = synthetic_table(spec)
    assert table.mismatch("onnxruntime", 1, cpu="test cpu") is None
    line = table.mismatch("onnxruntime", 2, cpu="other cpu")
    assert line is not None and "\n" not in line and "2 threads" in line and "other cpu" in line
    cost = LatencyCost(table, source="t.json")
    with pytest.raises(LatencyTableError, match="t.json: measured at input size"):
        cost.total(spec, (64, 64))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d.update(format=99), "format: 99"),
        (lambda d: d.pop("fixed"), "fixed: missing"),
        (lambda d: d["meta"].pop("cpu"), "meta.cpu: missing"),
        (lambda d: d["meta"].update(input_size=[0, 32]), "meta.input_size"),
        (lambda d: next(iter(d["blocks"].values()))["groups"]["3"].append([8, -1]), "is not a [width >= 0, ms >= 0]"),
        (lambda d: next(iter(d["blocks"].values()))["groups"].update(x=[[0, 0]]), "kernel size 'x'"),
    ],
)
def test_a_corrupt_table_is_a_one_line_error(edit, fragment, make_net, tmp_path):
    spec, _ = make_net("test_seg")
    data = synthetic_table(spec).to_dict()
    edit(data)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    assert str(path) in str(info.value) and fragment in str(info.value) and "\n" not in str(info.value)


def test_unreadable_and_missing_tables(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "format": 1}')
    with pytest.raises(LatencyTableError, match="bad.json"):
        LatencyTable.load(bad)
    with pytest.raises(LatencyTableError, match="no such latency table"):
        LatencyTable.load(tmp_path / "none.json")


def test_round_trip_keeps_every_curve(make_net, tmp_path):
    spec, _ = make_net("test_seg")
    table = synthetic_table(spec)
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert LatencyCost(again).total(spec, SIZE) == pytest.approx(LatencyCost(table).total(spec, SIZE))


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory: pytest.TempPathFactory):
    from hrnas.demos.scenes import generate_demo_scenes

    root = tmp_path_factory.mktemp("latency-demo") / "scenes"
    generate_demo_scenes(root, num_train=16, num_val=4, size=64, seed=3, progress=False)
    return root


def test_a_search_to_a_latency_target_lands_on_it(tiny_scenes, tmp_path):
    from hrnas.engine.config import load_config
    from hrnas.engine.trainer import train
    from hrnas.tasks.base import get_task

    overrides = [
        f"data.root={tiny_scenes}",
        "model.spec=test_seg",
        "data.crop_size=[64, 64]",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "train.steps=6",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.log_every=2",
        "train.bn_calib_batches=1",
        "schedule.warmup_steps=1",
        "search.shrink_every=3",
        "search.rho_free_steps=0",
        "search.rho_warmup_steps=2",
        "search.target_macs=null",
    ]
    supernet = get_task(load_config("demo_seg", overrides)).build_spec()
    table_path = tmp_path / "table.json"
    synthetic_table(supernet, size=(64, 64)).save(table_path)
    cost = LatencyCost(LatencyTable.load(table_path))
    target = cost.fixed(supernet, (64, 64)) + 0.6 * (cost.total(supernet, (64, 64)) - cost.fixed(supernet, (64, 64)))
    cfg = load_config(
        "demo_seg", [*overrides, f"search.target_latency_ms={target}", f"search.latency_table={table_path}"]
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert 0.95 * target <= cost.total(result.spec, (64, 64)) <= target
    assert result.search_log and all("cost" in entry for entry in result.search_log)
    assert all(e["budget"] == target and e["target_macs"] is None and e["cost_unit"] == "ms" for e in result.search_log)
    latency = json.loads((tmp_path / "run" / "latency.json").read_text())
    assert latency["target_ms"] == target and latency["measured_ms"] > 0 and latency["macs"] > 0
    assert latency["predicted_ms"] == pytest.approx(cost.deployed_total(result.spec, (64, 64)))


def test_flat_stretches_of_a_measured_curve_keep_prices_positive(make_net):
    spec, model = make_net("test_cls_all", dtype=torch.float32)
    table = synthetic_table(spec)
    for curves in table.blocks.values():  # noise: a curve that falls, then stays flat
        for k, points in curves.groups.items():
            raw = [(x, points[1][1]) for x, _ in points[1:]]
            curves.groups[k] = monotone(raw)
    path = Path(tempfile.mkdtemp()) / "flat.json"
    table.save(path)
    cost = LatencyCost(LatencyTable.load(path))
    for _, block, in_hw in iter_blocks(spec, SIZE):
        for k in block.kernel_sizes:
            assert cost.channel_price(block, in_hw, k) > 0
    budget = cost.fixed(spec, SIZE) + 0.5 * (cost.total(spec, SIZE) - cost.fixed(spec, SIZE))
    keep = prune_to_budget(model, spec, budget, SIZE, cost_model=cost)
    assert cost.total(kept_spec(spec, keep), SIZE) <= budget


def test_a_block_that_lost_a_whole_kernel_group_keeps_the_skeleton(make_net):
    spec, _ = make_net("test_seg")
    path, block = spec.blocks()[0]
    fewer = replace(block, kernel_sizes=block.kernel_sizes[1:], hidden=block.hidden[1:])
    assert skeleton_key(spec.replace_blocks({path: fewer})) == skeleton_key(spec)
    assert LatencyCost(synthetic_table(spec)).total(spec.replace_blocks({path: fewer}), SIZE) > 0
