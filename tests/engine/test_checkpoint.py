"""Checkpoints: weights-only payloads, clear load errors, atomic writes under failures and SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hrnas.engine import checkpoint as ckpt_mod
from hrnas.engine.checkpoint import (
    FORMAT_KEY,
    CheckpointError,
    capture_rng_state,
    check_task_override,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
)
from hrnas.engine.config import config_to_dict, load_config
from hrnas.space.network import build_model
from hrnas.space.spec import NetSpec
from hrnas.space.zoo import resolve_spec


def tiny_spec() -> NetSpec:
    """A two-class segmentation network small enough to build in milliseconds."""
    spec = resolve_spec("test_seg", transformer=False)
    return replace(spec, head=replace(spec.head, num_outputs=2))


def payload(step: int) -> dict:
    spec = tiny_spec()
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return {
        "task": "segmentation",
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "spec": spec.to_dict(),
        "run_config": config_to_dict(load_config("demo_seg", ["model.transformer=false"])),
        "rng": capture_rng_state(),
    }


def visible_checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pt"))


def test_round_trip_weights_only(tmp_path):
    data = payload(3)
    path = save_checkpoint(tmp_path / "sub" / "latest.pt", data)
    torch.load(path, weights_only=True)  # loadable without unpickling code
    back = load_checkpoint(path, expect_task="segmentation")
    assert back["step"] == 3 and back[FORMAT_KEY] == 1
    assert back["spec"] == data["spec"] and back["run_config"] == data["run_config"]
    for key, value in data["model"].items():
        assert torch.equal(back["model"][key], value)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert os.listdir(tmp_path / "sub") == ["latest.pt"]


def test_rejects_non_plain_values(tmp_path):
    with pytest.raises(TypeError, match=r"payload\['rng'\]\['np'\]: numpy.ndarray cannot be stored"):
        save_checkpoint(tmp_path / "x.pt", {"rng": {"np": np.zeros(3)}})
    with pytest.raises(TypeError, match="Linear"):
        save_checkpoint(tmp_path / "x.pt", {"model": torch.nn.Linear(2, 2)})
    assert not list(tmp_path.iterdir())


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'missing.pt'}: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=rf"{text}: not a checkpoint"):
        load_checkpoint(text)
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(CheckpointError, match="no 'hrnas_checkpoint' marker"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(pickled)
    path = save_checkpoint(tmp_path / "seg.pt", {"task": "segmentation"})
    with pytest.raises(CheckpointError, match=rf"{path}: checkpoint is for task 'segmentation', not 'classification'"):
        load_checkpoint(path, expect_task="classification")
    from_config = save_checkpoint(tmp_path / "cfg.pt", {"run_config": {"task": {"name": "keypoints"}}})
    assert load_checkpoint(from_config, expect_task="keypoints")
    bare = save_checkpoint(tmp_path / "bare.pt", {"step": 1})
    with pytest.raises(CheckpointError, match="does not record its task"):
        load_checkpoint(bare, expect_task="keypoints")


def test_weights_must_fit_the_stored_spec(tmp_path):
    data = payload(1)
    assert load_checkpoint(save_checkpoint(tmp_path / "ok.pt", data))["step"] == 1

    wrong = dict(data, model=dict(data["model"]))
    name = next(k for k, v in wrong["model"].items() if v.ndim == 4)
    have = wrong["model"][name]
    wrong["model"][name] = torch.zeros(have.shape[0] + 1, *have.shape[1:])
    path = save_checkpoint(tmp_path / "resized.pt", wrong)
    shape = ", ".join(str(n) for n in have.shape)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: weights do not match the stored spec: tensor '{name}'")
    assert f"is [{have.shape[0] + 1}, {shape.split(', ', 1)[1]}] in the file, the spec builds [{shape}]" in message
    assert "\n" not in message
    assert load_checkpoint(path, verify_weights=False)["step"] == 1  # the raw payload is still readable

    missing = dict(data, model={k: v for k, v in data["model"].items() if k != name})
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' \[{shape}\] of its network is missing"):
        load_checkpoint(save_checkpoint(tmp_path / "missing.pt", missing))
    extra = dict(data, model={**data["model"], "head.extra.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"'head.extra.weight' \[2, 2\] in the file has no place"):
        load_checkpoint(save_checkpoint(tmp_path / "extra.pt", extra))
    other_spec = dict(data, spec=replace(tiny_spec(), head=replace(tiny_spec().head, num_outputs=5)).to_dict())
    with pytest.raises(CheckpointError, match=r"other.pt: weights do not match the stored spec: tensor 'head"):
        load_checkpoint(save_checkpoint(tmp_path / "other.pt", other_spec))
    ema = dict(data, ema={"module": {k: v for k, v in data["model"].items() if k != name}, "num_updates": 1})
    with pytest.raises(CheckpointError, match=rf"ema.pt: EMA weights do not match the stored spec: tensor '{name}'"):
        load_checkpoint(save_checkpoint(tmp_path / "ema.pt", ema))
    broken = dict(data, spec={"stages": "many"})
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'spec.pt'}: "):
        load_checkpoint(save_checkpoint(tmp_path / "spec.pt", broken))


def test_truncated_checkpoint_is_one_line(tmp_path):
    whole = save_checkpoint(tmp_path / "whole.pt", payload(1))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"^{cut}: not a checkpoint \(") as info:
        load_checkpoint(cut)
    assert "\n" not in str(info.value)


def test_task_override_must_keep_the_checkpoint_task(tmp_path):
    data = payload(1)
    path = tmp_path / "final.pt"
    check_task_override(path, data, ["data.root=x", "task.name=segmentation"])
    with pytest.raises(CheckpointError, match=r"final.pt: checkpoint is for task 'segmentation'; "
                       r"--set task.name=keypoints asks for 'keypoints'"):
        check_task_override(path, data, ["data.root=x", "task.name=keypoints"])


@pytest.mark.parametrize("fail_in", ["save", "fsync", "replace"])
def test_failed_write_keeps_previous(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, payload(1))

    def boom(*args, **kwargs):
        if fail_in == "save" and args and hasattr(args[-1], "write"):
            args[-1].write(b"partial bytes")  # something reached the temp file before the failure
        raise OSError(f"simulated failure in {fail_in}")

    target = {"save": (ckpt_mod.torch, "save"), "fsync": (ckpt_mod.os, "fsync"),
              "replace": (ckpt_mod.os, "replace")}[fail_in]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, payload(2))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["latest.pt"]


def test_sigkill_mid_write_keeps_previous(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"task": "segmentation", "step": 1, "w": torch.ones(4)})
    marker = tmp_path / "writing"
    script = textwrap.dedent(
        f"""
        import os, time, torch
        from hrnas.engine import checkpoint
        real_save = torch.save
        def slow_save(obj, fh, *a, **k):
            fh.write(b"PK partial")      # a torn zip header in the temp file
            fh.flush()
            open({str(marker)!r}, "w").close()
            time.sleep(60)               # killed here
            real_save(obj, fh, *a, **k)
        checkpoint.torch.save = slow_save
        checkpoint.save_checkpoint({str(path)!r}, {{"task": "segmentation", "step": 2,
                                                   "w": torch.zeros(1 << 20)}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, "writer exited before reaching the write"
            assert time.time() < deadline, "writer did not start writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["step"] == 1
    assert visible_checkpoints(tmp_path) == ["latest.pt"]
    leftovers = remove_stale_temp_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".latest.pt.hrnas-tmp-")
    assert sorted(os.listdir(tmp_path)) == ["latest.pt", "writing"]


def test_rng_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = capture_rng_state()
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(10)
    np.random.seed(20)
    torch.manual_seed(30)
    restore_rng_state(load_checkpoint(path)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert got == expected
