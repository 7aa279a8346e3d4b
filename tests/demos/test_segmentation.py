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
