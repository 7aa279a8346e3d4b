"""Run logger (JSONL + TensorBoard, rank-0 only) and progress bars."""

from __future__ import annotations

import builtins
import io
import json

import numpy as np
import pytest
import torch

from hrnas.engine.run_log import RunLogger
from hrnas.utils.progress import progress


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_records(tmp_path):
    with RunLogger(tmp_path / "run", tensorboard=False) as logger:
        logger.log(0, {"loss": torch.tensor(1.5), "lr": 0.1, "acc": np.float32(0.25)})
        logger.log(10, {"miou": 0.5, "arch": "3/5/7"}, prefix="val/")
        logger.log(11, {"loss": float("nan")})
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 10, 11]
    assert records[0]["loss"] == 1.5 and records[0]["lr"] == 0.1 and records[0]["acc"] == 0.25
    assert records[1]["val/miou"] == 0.5 and records[1]["val/arch"] == "3/5/7"
    assert records[2]["loss"] == "nan"
    assert all(r["time"] > 1e9 and r["elapsed"] >= 0 for r in records)
    with pytest.raises(RuntimeError, match="after close"):
        logger.log(12, {"loss": 1.0})


def test_reserved_and_non_scalar(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="reserved"):
        logger.log(0, {"step": 3})
    with pytest.raises(ValueError, match="scalar"):
        logger.log(0, {"x": torch.ones(3)})
    logger.close()


def test_disabled_rank_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path / "run", enabled=False)
    logger.log(0, {"loss": 1.0})
    logger.close()
    assert not (tmp_path / "run").exists()


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path) as logger:
        assert logger.has_tensorboard
        logger.log(3, {"loss": 2.0, "note": "text"})
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_degrades_without_tensorboard(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.warns(RuntimeWarning, match="TensorBoard logging disabled"):
        logger = RunLogger(tmp_path)
    assert not logger.has_tensorboard
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["loss"] == 1.0


def test_progress():
    assert list(progress(range(3), "x", enabled=False)) == [0, 1, 2]
    bar = progress(5, "steps", enabled=False)
    bar.update(2)
    assert bar.total == 5 and bar.disable
    bar.close()
    sink = io.StringIO()
    shown = progress(range(2), "y", enabled=True, file=sink)
    assert not shown.disable and list(shown) == [0, 1]
    assert "y" in sink.getvalue() and "2/2" in sink.getvalue()


def test_progress_is_drawn_on_a_terminal_or_when_asked(monkeypatch, capsys):
    monkeypatch.delenv("HRNAS_PROGRESS", raising=False)
    list(progress(range(2), "quiet"))  # pytest's captured stderr is not a terminal
    assert "quiet" not in capsys.readouterr().err
    monkeypatch.setenv("HRNAS_PROGRESS", "1")
    list(progress(range(2), "forced"))
    assert "forced" in capsys.readouterr().err
