"""``hrnas demo --task kitti --quick``: the whole KITTI demo pipeline on a handful of simulated frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrnas.cli import main


def test_quick_kitti_demo_writes_every_artefact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, data = tmp_path / "run", tmp_path / "sim"
    assert main(["demo", "--task", "kitti", "--quick", "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    rows = report["backbones"]
    assert rows["searched"]["macs_demo_grid"] <= rows["supernet"]["macs_demo_grid"]
    assert rows["pointpillars_bev"]["macs_full_grid"] == pytest.approx(32.69e9, rel=0.01)
    assert report["metrics"]["num_frames"] == 2
    assert set(report["kitti"]) == {"Car", "Pedestrian", "Cyclist"}
    assert report["onnx"]["max_abs_diff"] is not None
    for part in ("search/arch.json", "retrain/final.pt", "model.onnx", "kitti_eval.txt"):
        assert (out / part).is_file(), part
    frame = sorted((data / "ImageSets" / "val.txt").read_text().split())[0]
    for suffix in (".txt", "_bev.png", "_image.png"):
        assert (out / "predictions" / f"{frame}{suffix}").is_file()
    assert "Car bev @0.70" in printed and "pointpillars_bev" in printed


def test_kitti_demo_rejects_an_unknown_task(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--task", "lidar"])
    assert "invalid choice" in capsys.readouterr().err
