"""Building a latency table on this machine: every block of the supernet is covered, the protocol is
recorded, and the table predicts the supernet it was built from (no timing asserted)."""

from __future__ import annotations

import pytest

import hrnas.export.latency as latency_module
from hrnas.export.latency import MeasurementCache, Protocol, build_latency_table, query_grid, width_grid
from hrnas.space.cost import iter_blocks
from hrnas.space.latency import LatencyCost, LatencyTable, block_key
from hrnas.space.zoo import get_spec
from hrnas.utils.errors import HrnasError


def test_grids_follow_the_blocking() -> None:
    assert width_grid(20, 8) == [8, 16, 20]
    assert width_grid(160, 8)[:9] == [8, 16, 24, 32, 40, 48, 56, 64, 80]
    assert width_grid(160, 8)[-2:] == [128, 160]
    assert query_grid(16) == [1, 2, 4, 8, 16] and query_grid(3) == [1, 2, 3]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_table_covers_every_block_and_records_the_protocol(runtime: str, tmp_path) -> None:
    spec = get_spec("test_seg")
    size = (32, 32)
    protocol = Protocol(runtime=runtime, threads=1, warmup=1, runs=50, rounds=1)
    table = build_latency_table(spec, size, protocol, show_progress=False)
    for _, block, in_hw in iter_blocks(spec, size):
        curves = table.blocks[block_key(block, in_hw)]
        assert set(curves.groups) == set(block.kernel_sizes)
    assert table.meta["runtime"] == runtime and table.meta["threads"] == 1
    assert table.meta["protocol"]["runs"] == 50 and table.meta["pad_to"] == (8 if runtime == "onnxruntime" else 1)
    table.save(tmp_path / "table.json")
    cost = LatencyCost(LatencyTable.load(tmp_path / "table.json"))
    assert cost.total(spec, size) > cost.fixed(spec, size) > 0


def test_a_second_table_reads_its_parts_from_the_cache(tmp_path, monkeypatch) -> None:
    spec = get_spec("test_seg")
    protocol = Protocol(runtime="torch", threads=1, warmup=1, runs=50, rounds=1)
    cache = MeasurementCache(protocol, folder=tmp_path)
    first = build_latency_table(spec, (32, 32), protocol, show_progress=False, calibration_nets=4, cache=cache)
    assert cache.path.is_file() and len(cache.entries) > 10

    timed: list[int] = []
    real = latency_module.time_modules

    def counting(items, *args, **kwargs):  # noqa: ANN001, ANN202
        timed.append(len(items))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(latency_module, "time_modules", counting)
    again = build_latency_table(
        spec, (32, 32), protocol, show_progress=False, calibration_nets=4, cache=MeasurementCache(protocol, tmp_path)
    )
    assert sum(timed) == 0
    assert again.blocks == first.blocks and again.fixed == first.fixed
    assert again.meta["calibration"] == first.meta["calibration"]

    other = MeasurementCache(Protocol(runtime="torch", threads=2, warmup=1, runs=50, rounds=1), tmp_path)
    assert other.path != cache.path and not other.entries  # another thread count is another context
    cache.path.write_text("{not json")
    assert not MeasurementCache(protocol, tmp_path).entries  # a damaged cache is started afresh


def test_protocol_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(HrnasError, match="--runtime tvm"):
        Protocol(runtime="tvm")
    with pytest.raises(HrnasError, match="at least 50 runs"):
        Protocol(runs=10)
    with pytest.raises(HrnasError, match="rounds 0"):
        Protocol(rounds=0)


def test_cli_writes_a_table_a_search_can_read(run_cli, tmp_path) -> None:
    out = tmp_path / "table.json"
    result = run_cli(["latency-table", "test_seg", "--input-size", "32", "32", "--runtime", "torch",
                      "--threads", "1", "--rounds", "1", "-o", out])
    assert result.code == 0, result.stderr_lines
    table = LatencyTable.load(out)
    assert table.meta["spec"] == "test_seg" and table.meta["calibration"]["nets"] == 16
    assert "block signatures of test_seg at 32×32" in result.stdout


@pytest.mark.parametrize("value", ["fast", "0ms", "-3"])
def test_a_bad_latency_target_is_one_line(value: str, run_cli) -> None:
    result = run_cli(["search", "demo_seg", "--target-latency", value])
    result.assert_one_line_error("--target-latency", value)
