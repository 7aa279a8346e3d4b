"""benchmarks/pareto.py --quick: every stage runs and writes its files; a rerun skips finished runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "pareto.py"


def _pareto():
    spec = importlib.util.spec_from_file_location("pareto", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pareto"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_reference_width_is_matched_to_the_budget() -> None:
    pareto = _pareto()
    small = pareto.measured_macs(pareto.torchvision_reference("lraspp_mobilenet_v3_large", 0.5, 11), 3, (64, 64))[0]
    large = pareto.measured_macs(pareto.torchvision_reference("lraspp_mobilenet_v3_large", 1.0, 11), 3, (64, 64))[0]
    assert small < large
    assert pareto.choose_width("lraspp_mobilenet_v3_large", small, 11, 3, (64, 64)) == 0.5
    logits = pareto.torchvision_reference("lraspp_mobilenet_v3_large", 0.5, 11).eval()(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 11, 64, 64)


@pytest.mark.filterwarnings("ignore")
def test_quick_run_writes_results_latency_plot_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pareto = _pareto()
    out = tmp_path / "out"
    argv = ["demo_seg", "--quick", "--out", str(out), "--data", str(tmp_path / "demo"), "--device", "cpu"]
    assert pareto.main(argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keys = {r["key"] for r in rows}
    assert keys == {
        "searched/0.5/s0",
        "uniform/0.5/s0",
        "reference/s0",
        "searched/0.5/s1",
        "uniform/0.5/s1",
        "reference/s1",
    }
    for r in rows:
        assert r["macs"] > 0 and 0.0 <= r["metrics"]["miou"] <= 1.0
        assert r["steps"] == 8  # uniform and reference: search + retrain steps
    uniform = next(r for r in rows if r["kind"] == "uniform")
    assert uniform["macs"] <= uniform["target_macs"]
    reference = next(r for r in rows if r["kind"] == "reference")
    assert reference["reference"] == "lraspp_mobilenet_v3_large" and reference["width_mult"] > 0
    latency = [json.loads(line) for line in (out / "latency.jsonl").read_text().splitlines()]
    assert {r["key"] for r in latency} == keys and all(r["ms"] > 0 for r in latency)
    summary = json.loads((out / "summary.json").read_text())
    assert {p["kind"] for p in summary["points"]} == {"searched", "uniform", "reference"}
    assert summary["searched_minus_uniform"][0]["seeds"] == 2
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert set(summary["learning_curves"]) == keys
    assert "searched − uniform" in capsys.readouterr().out

    # a rerun trains nothing and times nothing again
    assert pareto.main([*argv, "--no-latency"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done, skipped") == 6
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
