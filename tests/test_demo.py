"""``hrnas demo --quick``: the whole segmentation demo pipeline (scenes, search, retrain, evaluate,
predict, ONNX export checked in ONNX Runtime) on scenes built from a small synthetic Fashion-MNIST."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from hrnas.cli import main
from hrnas.data.fashion_mnist import SPLIT_FILES


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.tobytes())


def _fake_fashion_mnist(folder: Path, count: int = 40) -> Path:
    """Filled ellipses of random shape, labels cycling through the 10 classes."""
    folder.mkdir(parents=True)
    ys, xs = np.mgrid[0:28, 0:28]
    for seed, split in enumerate(("train", "test")):
        rng = np.random.default_rng(seed)
        items = np.zeros((count, 28, 28), np.uint8)
        for i in range(count):
            (cy, cx), (ry, rx) = rng.uniform(11, 17, 2), rng.uniform(5, 12, 2)
            items[i] = np.clip((1.3 - ((ys - cy) / ry) ** 2 - ((xs - cx) / rx) ** 2) * 400, 0, 230).astype(np.uint8)
        _write_idx(folder / SPLIT_FILES[split][0], items)
        _write_idx(folder / SPLIT_FILES[split][1], (np.arange(count) % 10).astype(np.uint8))
    return folder


def test_quick_segmentation_demo_writes_every_artefact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HRNAS_FASHION_MNIST", str(_fake_fashion_mnist(tmp_path / "fashion")))
    out, data = tmp_path / "run", tmp_path / "scenes"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    assert report["searched"]["macs"] <= report["target_macs"] < report["supernet"]["macs"]
    assert 0.0 <= report["val_miou"] <= 1.0 and 0.0 < report["background_baseline_miou"] < 1.0
    # the export check ran (on validation images) and passed, or export_onnx would have raised
    assert report["onnx"]["max_abs_diff"] is not None
    for part in ("search/arch.json", "search/arch.png", "retrain/final.pt", "model.onnx"):
        assert (out / part).is_file(), part
    assert len(list((out / "predictions").iterdir())) >= 4
    assert "val mIoU" in printed and "ONNX" in printed
