"""Distributed utilities: single-process no-ops and a real two-process gloo group (torchrun's env)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from hrnas.utils import distributed as D

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    from hrnas.utils import distributed as D
    from hrnas.engine.bn_calibration import calibrate_bn

    info = D.init_distributed(device="cpu")
    rank = info.rank
    out = {"rank": rank, "world": info.world_size, "local": info.local_rank, "device": str(info.device),
           "is_main": D.is_main(), "is_distributed": D.is_distributed()}
    out["broadcast"] = D.broadcast_object({"arch": [3, 5, 7], "from": rank} if rank == 0 else None)
    out["mean"] = D.all_reduce_mean(torch.tensor([float(rank), 10.0 * rank])).tolist()
    summed = torch.tensor([rank + 1.0])
    D.all_reduce_sum_(summed)
    out["sum"] = summed.item()
    bn = nn.BatchNorm1d(2)
    calibrate_bn(bn, [torch.full((4, 2), float(rank))], num_batches=1)
    out["bn_mean"] = bn.running_mean.tolist()
    D.barrier()
    D.cleanup()
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = D.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.local_rank, info.device) == (0, 1, 0, torch.device("cpu"))
    assert info.is_main and D.is_main() and not D.is_distributed()
    t = torch.tensor([1, 2])
    assert D.all_reduce_mean(t).tolist() == [1.0, 2.0] and D.all_reduce_sum_(t) is t
    obj = {"a": 1}
    assert D.broadcast_object(obj) is obj
    D.barrier()
    D.cleanup()


def test_unwrap_model():
    inner = nn.Linear(2, 2)
    assert D.unwrap_model(nn.DataParallel(inner)) is inner
    holder = nn.Module()
    holder._orig_mod = inner
    assert D.unwrap_model(holder) is inner


def test_two_process_gloo_group(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"rank{rank}.json")],
                                      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120)[0].decode())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, res in enumerate(results):
        assert (res["rank"], res["world"], res["local"], res["device"]) == (rank, 2, rank, "cpu")
        assert res["is_main"] == (rank == 0) and res["is_distributed"]
        assert res["broadcast"] == {"arch": [3, 5, 7], "from": 0}
        assert res["mean"] == [0.5, 5.0]
        assert res["sum"] == 3.0
        assert res["bn_mean"] == [0.5, 0.5]  # per-rank means 0 and 1, averaged after calibration
