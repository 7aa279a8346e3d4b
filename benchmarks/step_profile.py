"""Where the training step's time goes as the searched network shrinks.

Runs the demo segmentation search (``hrnas_demo_supernet`` on the generated demo scenes, 128² crops,
batch 16, the demo's search settings on a shorter step budget) and then plain training of the network it
found, and prints, per MAC level, the mean step time and its phases as the trainer logs them
(``train/phase_*_s`` in ``metrics.jsonl``: data, forward, penalty, backward, optimizer, EMA,
bookkeeping; the step time is their sum), the first logging window of each level left out (allocations
after a shrink).

    python benchmarks/step_profile.py                      # 200-step search to 40M MACs, 60 plain steps
    python benchmarks/step_profile.py --steps 300 --target 30M --plain-steps 100
    python benchmarks/step_profile.py --set data.workers=1       # data loading in a worker process

Time it on an otherwise idle machine; the thread count follows the free cores unless OMP_NUM_THREADS is
set (print it with the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import hrnas.demos  # noqa: F401  (registers the demo-scene generator)
from hrnas.engine.allocator import tune_heap
from hrnas.engine.config import load_config
from hrnas.engine.trainer import train
from hrnas.space.cost import format_macs

PHASES = ("data", "forward", "penalty", "backward", "optimizer", "ema", "bookkeeping")


def _rows(run_dir: Path) -> list[dict]:
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/step_time_s" in record:
            rows.append(record)
    return rows


def _levels(rows: list[dict], macs: float | None = None) -> list[tuple[float, int, dict[str, float]]]:
    """(MACs, logged windows used, mean of every timed field) per MAC level, in run order."""
    groups: dict[float, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("train/macs", macs), []).append(row)
    out = []
    for level, group in groups.items():
        used = group[1:] if len(group) > 1 else group
        keys = [f"train/phase_{p}_s" for p in PHASES]
        means = {k: statistics.mean(r.get(k, 0.0) for r in used) for k in keys}
        means["step"] = sum(means.values())
        out.append((level, len(used), means))
    return out


def _print(title: str, levels: list[tuple[float, int, dict[str, float]]], reference: float) -> None:
    print(f"\n{title}")
    head = f"{'MACs':>9} {'windows':>7} {'step s':>7} {'× first':>7} " + " ".join(f"{p[:9]:>9}" for p in PHASES)
    print(head)
    for level, windows, means in levels:
        step = means["step"]
        phases = " ".join(f"{means[f'train/phase_{p}_s']:9.4f}" for p in PHASES)
        print(f"{format_macs(level):>9} {windows:7d} {step:7.3f} {step / reference:7.2f} {phases}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="search steps")
    parser.add_argument("--shrink-every", type=int, default=40)
    parser.add_argument("--target", default="40M", help="search.target_macs")
    parser.add_argument("--plain-steps", type=int, default=60, help="plain training steps of the searched net")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tune_heap()  # as the hrnas command does before every run

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        data = work / "scenes"  # the demo's own scenes (2000 + 300), generated on first use
        common = [
            f"data.root={data}",
            "model.spec=hrnas_demo_supernet",
            "train.eval_every=0",
            "train.checkpoint_every=0",
            f"train.log_every={args.log_every}",
            "train.bn_calib_batches=1",
            *args.set,
        ]
        search = [
            f"train.steps={args.steps}",
            "search.enabled=true",
            f"search.shrink_every={args.shrink_every}",
            f"search.rho_free_steps={max(1, args.shrink_every // 4)}",
            f"search.rho_warmup_steps={args.shrink_every}",
            f"search.target_macs={args.target}",
            "search.factor_lr_mult=10",
            "search.threshold=0.05",
        ]
        print(
            f"torch {torch.__version__}, threads at start {torch.get_num_threads()}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')!r}, load {os.getloadavg()[0]:.2f}"
        )
        t0 = time.perf_counter()
        result = train(load_config("demo_seg", common + search), work / "search", show_progress=False)
        search_s = time.perf_counter() - t0
        arch = result.spec
        from hrnas.space.cost import cost

        final_macs = cost(arch, (128, 128)).macs
        t0 = time.perf_counter()
        train(
            load_config("demo_seg", common + [f"train.steps={args.plain_steps}", "search.enabled=false"]),
            work / "plain",
            arch=arch,
            show_progress=False,
        )
        plain_s = time.perf_counter() - t0

        searched = _levels(_rows(work / "search"))
        plain = _levels(_rows(work / "plain"), macs=final_macs)
        first = searched[0][2]["step"]
        _print(f"search ({args.steps} steps, {search_s:.0f} s in all; seconds per step)", searched, first)
        _print(f"plain training of the searched net ({args.plain_steps} steps, {plain_s:.0f} s)", plain, first)
        print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
