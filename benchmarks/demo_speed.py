"""Step times of both demos at the start and the end of their search, and of their retrain.

Reads the run folders that ``hrnas demo`` and ``hrnas demo --task kitti`` write (``runs/demo``,
``runs/demo_kitti``: ``search/metrics.jsonl``, ``retrain/metrics.jsonl``, ``report.json``); with
``--run`` it runs the demos first (each one alone, one after the other), so the figures come from this
machine now. Time it on an otherwise idle machine.

    python benchmarks/demo_speed.py                 # the figures of the last demo runs
    python benchmarks/demo_speed.py --run           # run both demos, then print
    python benchmarks/demo_speed.py --run --task segmentation --root /tmp/demos

For each demo: MACs and seconds per step over the first and the last few logging windows of the search
(the first window of the run is left out: warm-up), their ratio, the retrain's mean step, and the
phases and wall time the demo's report gives.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

DEMOS = {"segmentation": "demo", "kitti": "demo_kitti"}


def _windows(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "train/step_time_s" in r]


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.fmean(values) if values else float("nan")


def summarise(run: Path, windows: int = 3) -> dict:
    """Step figures of one demo run folder (see the module docstring)."""
    search = _windows(run / "search" / "metrics.jsonl")[1:]
    retrain = _windows(run / "retrain" / "metrics.jsonl")[1:]
    start, end = search[:windows], search[-windows:]
    report = json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}
    return {
        "run": str(run),
        "search_start": {
            "step": start[0]["step"],
            "macs": _mean(start, "train/macs"),
            "s": _mean(start, "train/step_time_s"),
        },
        "search_end": {"step": end[-1]["step"], "macs": _mean(end, "train/macs"), "s": _mean(end, "train/step_time_s")},
        "retrain_s": _mean(retrain, "train/step_time_s"),
        "retrain_steps": retrain[-1]["step"] if retrain else 0,
        "seconds": report.get("seconds", {}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", nargs="+", choices=sorted(DEMOS), default=sorted(DEMOS, reverse=True))
    ap.add_argument("--root", type=Path, default=Path("runs"), help="where the demo run folders are (runs/)")
    ap.add_argument("--run", action="store_true", help="run the demos first (hrnas demo --task T --out ROOT/...)")
    ap.add_argument("--windows", type=int, default=3, help="logging windows averaged at each end of the search")
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')!r}")
    rows = []
    for task in args.task:
        run = args.root / DEMOS[task]
        if args.run:
            cmd = [sys.executable, "-m", "hrnas.cli", "demo", "--task", task, "--out", str(run)]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        if not (run / "search" / "metrics.jsonl").is_file():
            print(f"{run}: no demo run here (run `hrnas demo --task {task}` or pass --run)", file=sys.stderr)
            return 2
        rows.append((task, summarise(run, args.windows)))
    print(f"\n{'demo':>13} {'search start':>22} {'search end':>22} {'end/start':>9} {'retrain':>9} {'wall':>13}")
    for task, r in rows:
        a, b = r["search_start"], r["search_end"]
        sec = r["seconds"]
        wall = f"{sec.get('total', float('nan')):.0f} s" if sec else "n/a"
        print(
            f"{task:>13} {a['s']:6.3f} s @ {a['macs'] / 1e6:7.1f}M {b['s']:6.3f} s @ {b['macs'] / 1e6:7.1f}M "
            f"{b['s'] / a['s']:9.2f} {r['retrain_s']:7.3f} s {wall:>13}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
