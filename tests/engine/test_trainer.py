"""End-to-end behaviour of the trainer on tiny demo scenes: search, resume, DDP, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hrnas.engine.checkpoint import load_checkpoint
from hrnas.engine.config import load_config
from hrnas.engine.trainer import load_model_from_checkpoint, train
from hrnas.space.cost import cost
from hrnas.space.spec import NetSpec


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hrnas.demos.scenes import generate_demo_scenes

    root = tmp_path_factory.mktemp("demo") / "scenes"
    generate_demo_scenes(root, num_train=32, num_val=8, size=64, seed=3, progress=False)
    return root


def _overrides(root: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        "model.spec=test_seg",
        "data.crop_size=[64, 64]",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.workers=0",
        "train.log_every=2",
        "train.bn_calib_batches=1",
        "train.eval_every=0",
        "train.deterministic=true",
        "schedule.warmup_steps=2",
        *extra,
    ]


def test_search_reaches_budget_and_writes_outputs(demo_root: Path, tmp_path: Path) -> None:
    base = load_config("demo_seg", _overrides(demo_root))
    from hrnas.tasks.base import get_task

    supernet = get_task(base).build_spec()
    target = int(0.6 * cost(supernet, (64, 64)).macs)
    cfg = load_config(
        "demo_seg",
        _overrides(
            demo_root,
            "train.steps=6",
            "search.enabled=true",
            "search.shrink_every=3",
            "search.rho_free_steps=0",
            "search.rho_warmup_steps=2",
            f"search.target_macs={target}",
            "search.min_saving_macs=0",
        ),
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    arch = NetSpec.load(tmp_path / "run" / "arch.json")
    assert arch == result.spec
    macs = cost(arch, (64, 64)).macs
    assert 0.97 * target <= macs <= target
    log = [json.loads(line) for line in (tmp_path / "run" / "search_log.jsonl").read_text().splitlines()]
    assert log[-1]["final"] and log[-1]["macs"] == macs
    first = log[0]  # the shrink at step 3 of 6 made at least the cost path's progress
    assert first["step"] == 3 and first["budget"] == target and first["cost"] <= 1.05 * first["path_cost"]
    assert (tmp_path / "run" / "config.yaml").exists()
    model, spec, payload = load_model_from_checkpoint(tmp_path / "run" / "final.pt")
    assert spec == arch and payload["kind"] == "inference"
    assert 0.0 <= result.metrics["miou"] <= 1.0
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 11, 16, 16)

    # retrain the searched architecture, inheriting the search's weights, through the CLI
    cmd = [
        sys.executable,
        "-m",
        "hrnas.cli",
        "retrain",
        "demo_seg",
        "--arch",
        str(tmp_path / "run" / "arch.json"),
        "--init",
        "inherit",
        "--run-dir",
        str(tmp_path / "retrain"),
    ]
    for item in _overrides(demo_root, "train.steps=2"):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "miou" in proc.stdout
    retrained = load_checkpoint(tmp_path / "retrain" / "last.pt")
    assert NetSpec.from_dict(retrained["spec"]) == arch and retrained["step"] == 2


def _train_cmd(root: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    # --force: demo_seg's 15M target is above test_seg's cost at the 64×64 crop (the run tests resuming)
    cmd = [sys.executable, "-m", "hrnas.cli", "train", "demo_seg", "--run-dir", str(run_dir), "--force"]
    for item in _overrides(root, f"train.steps={steps}", "train.checkpoint_every=2", *extra):
        cmd += ["--set", item]
    return cmd


def test_resume_after_sigkill_matches_uninterrupted_run(demo_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 40  # long enough that the poll below sees a mid-run checkpoint before the run ends
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(demo_root, reference, steps), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(demo_root, killed, steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        last = killed / "last.pt"
        if last.exists():
            try:
                if load_checkpoint(last)["step"] >= 4:
                    break
            except Exception:  # a checkpoint being replaced; the next poll sees the new one
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(killed / "last.pt")["step"]
    assert 4 <= stopped_at < steps, "the run was not interrupted mid-way"

    resumed = subprocess.run(
        [*_train_cmd(demo_root, killed, steps), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_checkpoint(reference / "last.pt")
    b = load_checkpoint(killed / "last.pt")
    assert a["step"] == b["step"] == steps
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][name].float(), atol=1e-6, rtol=0), name


def test_sigterm_writes_a_resumable_checkpoint_at_the_current_step(demo_root: Path, tmp_path: Path) -> None:
    """Periodic checkpoints off: SIGTERM mid-run still leaves last.pt at the step reached, exit 128+15."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "stopped"
    cmd = _train_cmd(demo_root, run_dir, 400, "train.checkpoint_every=0", "train.log_every=1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().count("train/loss") >= 3):
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else "exited early"
        assert time.time() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "SIGTERM" in lines[-1] and "last.pt" in lines[-1] and "Traceback" not in stderr
    stopped_at = load_checkpoint(run_dir / "last.pt")["step"]
    assert 3 <= stopped_at < 400
    assert not (run_dir / "final.pt").exists()

    resumed = subprocess.run(
        [*_train_cmd(demo_root, run_dir, stopped_at + 2, "train.checkpoint_every=0"), "--resume"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run_dir / "last.pt")["step"] == stopped_at + 2


DDP_SCRIPT = """
import json, os, sys
import hrnas.demos  # registers the demo-scene generator that data.format 'demo' asks for
from hrnas.engine.config import load_config
from hrnas.engine.trainer import train
rank = int(os.environ["RANK"])
# a table path only rank 0 can read: the others must get rank 0's table, not read a shared disk
overrides = [a.replace("RANK0_ONLY", "" if rank == 0 else "missing-") for a in sys.argv[2:]]
cfg = load_config("demo_seg", overrides)
result = train(cfg, sys.argv[1], show_progress=False)
rank = int(os.environ["RANK"])
with open(os.path.join(sys.argv[1], f"arch_rank{rank}.json"), "w") as f:
    f.write(result.spec.to_json())
"""


@pytest.mark.parametrize("budget", ["macs", "latency"])
def test_ddp_two_processes_shrink_identically(
    budget: str, demo_root: Path, tmp_path: Path, linear_latency_table: Callable
) -> None:
    script = tmp_path / "ddp_search.py"
    script.write_text(DDP_SCRIPT)
    run_dir = tmp_path / "ddp"
    extra = []
    if budget == "latency":
        from hrnas.space.latency import LatencyCost
        from hrnas.tasks.base import get_task

        supernet = get_task(load_config("demo_seg", _overrides(demo_root))).build_spec()
        table = linear_latency_table(supernet, (64, 64))
        table.save(tmp_path / "table.json")
        target = 0.8 * LatencyCost(table).total(supernet, (64, 64))
        extra = [f"search.target_latency_ms={target}", f"search.latency_table={tmp_path / 'RANK0_ONLYtable.json'}"]
    overrides = _overrides(
        demo_root,
        "train.steps=4",
        "search.enabled=true",
        "search.shrink_every=2",
        "search.rho_free_steps=0",
        "search.rho_warmup_steps=1",
        "search.rho=0.5",
        "search.threshold=0.5",
        "search.min_saving_macs=0",
        "search.target_macs=null",
        "train.device=cpu",
        *extra,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533" if budget == "macs" else "29534",
        str(script),
        str(run_dir),
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = (run_dir / "arch_rank0.json").read_text()
    b = (run_dir / "arch_rank1.json").read_text()
    assert a == b
    assert NetSpec.from_json(a) == NetSpec.load(run_dir / "arch.json")
    if budget == "latency":
        record = json.loads((run_dir / "latency.json").read_text())
        assert LatencyCost(table).total(NetSpec.from_json(a), (64, 64)) <= target and record["measured_ms"] > 0


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hrnas.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["train", "demo_seg", "--set", "data.format=cityscapes", "--set", "data.root=/nonexistent/x"],
            "/nonexistent/x",
        ),
        (["train", "demo_seg", "--set", "optim.lrr=1"], "optim.lrr"),
        (["cost", "no_such_net"], "no_such_net"),
        (["evaluate", "/nonexistent/ckpt.pt"], "/nonexistent/ckpt.pt"),
    ],
)
def test_cli_bad_input_is_one_line_error(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = _cli(*args, "--run-dir", str(tmp_path / "r")) if args[0] == "train" else _cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "r" / "last.pt").exists()


def test_cli_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  name: segmentation\n optim: [\n")
    proc = _cli("train", str(bad), "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "bad.yaml" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
