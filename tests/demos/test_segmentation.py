"""``hrnas demo --quick``: the whole segmentation demo pipeline (scenes, search, retrain, evaluate,
predict, ONNX export checked in ONNX Runtime) on scenes built from a small synthetic Fashion-MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrnas.cli import main


def test_quick_segmentation_demo_writes_every_artefact(
    tmp_path: Path, fashion_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HRNAS_FASHION_MNIST", str(fashion_root))
    out, data = tmp_path / "run", tmp_path / "scenes"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    assert report["searched"]["macs"] <= report["target_macs"] < report["supernet"]["macs"]
    assert 0.0 <= report["val_miou"] <= 1.0 and 0.0 < report["background_baseline_miou"] < 1.0
    per_class = report["val_iou_per_class"]
    assert list(per_class)[0] == "background" and len(per_class) == 11
    present = [v for v in per_class.values() if v == v]  # NaN: a class in neither target nor prediction
    assert abs(sum(present) / len(present) - report["val_miou"]) < 1e-6
    # the export check ran (on validation images) and passed, or export_onnx would have raised
    assert report["onnx"]["max_abs_diff"] is not None
    for part in ("search/arch.json", "search/arch.png", "retrain/final.pt", "model.onnx"):
        assert (out / part).is_file(), part
    assert len(list((out / "predictions").iterdir())) >= 4
    assert "val mIoU" in printed and "ONNX" in printed and "class IoU  background" in printed


def test_quick_demo_searches_to_a_latency_target(
    tmp_path: Path,
    fashion_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    linear_latency_table,  # noqa: ANN001
) -> None:
    from hrnas.demos.scenes import ensure_demo_scenes
    from hrnas.engine.config import load_config
    from hrnas.space.latency import LatencyCost
    from hrnas.tasks.base import get_task

    monkeypatch.setenv("HRNAS_FASHION_MNIST", str(fashion_root))
    out, data = tmp_path / "run", tmp_path / "scenes"
    ensure_demo_scenes(data)
    cfg = load_config("demo_seg", [f"data.root={data}", "model.spec=hrnas_demo_supernet"])
    size = tuple(cfg.penalty_input_size)
    supernet = get_task(cfg).build_spec()
    table = linear_latency_table(supernet, size)
    table.save(tmp_path / "table.json")
    target = round(0.7 * LatencyCost(table).total(supernet, size), 3)
    argv = ["demo", "--quick", "--out", str(out), "--data", str(data), "--set", "search.target_macs=null",
            "--set", f"search.target_latency_ms={target}", "--set", f"search.latency_table={tmp_path / 'table.json'}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["target_latency_ms"] == target and report["target_macs"] is None
    from hrnas.space.spec import NetSpec

    searched = NetSpec.load(out / "search" / "arch.json")
    assert LatencyCost(table).total(searched, size) <= target  # the budget the search keeps (unpadded)
    assert report["latency"]["predicted_ms"] == LatencyCost(table).deployed_total(searched, size)
    assert report["latency"]["measured_ms"] > 0
    assert f"target {target:g} ms (latency)" in printed and "ms predicted" in printed
