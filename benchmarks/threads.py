"""Training-step time under different thread settings, alone and beside one busy single-threaded process.

Each setting runs in its own Python process, because OpenMP reads its environment (``OMP_WAIT_POLICY``,
``OMP_NUM_THREADS``) once, when torch loads. For every setting the step is timed alone and then beside a
process that spins one core (``while True: pass``), which stands for the other program a laptop always
runs. The settings are taken in turn over ``--rounds`` rounds, so a slow minute of the machine hits
them alike, and the median step of every run is kept.

    python benchmarks/threads.py                                   # hrnas_demo_supernet, 128², batch 16
    python benchmarks/threads.py --spec hrnas_kitti_demo_supernet --input-size 192 192 --batch 4

With ``--late`` every run also gets a third case: the busy process starts only after ``--steps`` steps,
and the next ``--steps`` steps are timed (how a setting copes with load that arrives during a run).

Settings:
    torch default   what torch does when nothing is set (threads = cores, libgomp's spin-then-sleep wait)
    passive         OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep at once instead of spinning
    1 thread        OMP_NUM_THREADS=1
    free cores      threads = the cores not busy with other processes when the run starts (measured from
                    /proc/stat over 0.3 s), passive wait
    hrnas default   what the trainer does: ``hrnas.utils.threads.ThreadGovernor`` sets the threads to the
                    free cores at start and re-checks them every ``--interval`` seconds (libgomp's own wait)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS: dict[str, dict[str, str]] = {
    "torch default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "free cores": {"OMP_WAIT_POLICY": "PASSIVE", "HRNAS_BENCH_FREE_CORES": "1"},
    "hrnas default": {"HRNAS_BENCH_GOVERNOR": "1"},
}
class Spinner:
    """A process that keeps one core busy, started detached (not our child) like any other program."""

    def __init__(self) -> None:
        out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                             check=True, capture_output=True, text=True).stdout
        self.pid = int(out.strip())

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def worker(args: argparse.Namespace) -> None:
    """Time ``args.steps`` training steps in this process and print one JSON line."""
    free = None
    if os.environ.get("HRNAS_BENCH_FREE_CORES"):
        from hrnas.utils.threads import free_cores

        free = free_cores()
    import torch
    import torch.nn.functional as F

    from hrnas.engine.allocator import tune_heap
    from hrnas.space.network import build_model
    from hrnas.space.spec import ClassificationHeadSpec
    from hrnas.space.zoo import get_spec

    if free is not None:
        torch.set_num_threads(free)
    governor = None
    if os.environ.get("HRNAS_BENCH_GOVERNOR"):
        from hrnas.utils.threads import ThreadGovernor

        governor = ThreadGovernor(interval_s=args.interval)
    tune_heap()
    spec = get_spec(args.spec, transformer=args.transformer)
    h, w = args.input_size
    torch.manual_seed(0)
    model = build_model(spec).to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch, spec.stem.in_channels, h, w).to(memory_format=torch.channels_last)
    if isinstance(spec.head, ClassificationHeadSpec):
        target = torch.randint(0, spec.head.num_classes, (args.batch,))
    else:
        target = torch.randint(0, spec.head.num_outputs, (args.batch, h // 4, w // 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    spin_at = args.steps + 2 if args.late_worker else None
    spinner = None
    total_steps = args.steps + 2 + (args.steps if args.late_worker else 0)
    for i in range(total_steps):
        if i == spin_at:
            spinner = Spinner()
            times.clear()
        if governor is not None:
            governor.tick()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if out.shape[-2:] != target.shape[-2:] and target.dim() == 3:
            out = F.interpolate(out, size=target.shape[-2:], mode="bilinear", align_corners=False)
        F.cross_entropy(out, target).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    if spinner is not None:
        spinner.stop()
    print(json.dumps({"median": statistics.median(times), "best": min(times), "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}))


def run_setting(name: str, busy: bool | str, args: argparse.Namespace) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(SETTINGS[name])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--spec", args.spec, "--batch",
           str(args.batch), "--steps", str(args.steps), "--interval", str(args.interval),
           "--input-size", *map(str, args.input_size)]
    if busy == "late":
        cmd.append("--late-worker")
    if args.transformer:
        cmd.append("--transformer")
    spinner = Spinner() if busy is True else None
    try:
        if spinner is not None:
            time.sleep(0.5)  # let the spinner take its core before the run measures free cores
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        if spinner is not None:
            spinner.stop()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="hrnas_demo_supernet")
    ap.add_argument("--transformer", action="store_true", help="keep the zoo spec's transformers")
    ap.add_argument("--input-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per run (after 2 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all settings (medians are pooled)")
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between the governor's re-checks")
    ap.add_argument("--late", action="store_true", help="also time load that starts during the run")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--late-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"{args.spec} at {args.input_size[0]}x{args.input_size[1]}, batch {args.batch}, {os.cpu_count()} cores, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    cases: list[bool | str] = [False, True, "late"] if args.late else [False, True]
    results: dict[tuple[str, bool | str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for name in args.settings:
            for busy in cases:
                res = run_setting(name, busy, args)
                results.setdefault((name, busy), []).append(res)
                label = "late" if busy == "late" else "busy" if busy else "alone"
                print(f"  round {r + 1}: {name:14s} {label:5s} "
                      f"{res['median']:.3f} s/step ({res['threads']} threads)", flush=True)
    alone_default = statistics.median(r["median"] for r in results[(args.settings[0], False)])
    late_head = " | busy from mid-run s/step | slowdown" if args.late else ""
    print(f"\n| setting | threads | alone s/step | beside 1 busy process s/step | slowdown{late_head} | alone vs "
          f"{args.settings[0]} |")
    print("| --- " * (8 if args.late else 6) + "|")
    for name in args.settings:
        alone = statistics.median(r["median"] for r in results[(name, False)])
        busy = statistics.median(r["median"] for r in results[(name, True)])
        threads = "/".join(sorted({str(r["threads"]) for runs in (results[(name, False)], results[(name, True)])
                                   for r in runs}))
        late = ""
        if args.late:
            late_s = statistics.median(r["median"] for r in results[(name, "late")])
            late = f" | {late_s:.3f} | ×{late_s / alone:.2f}"
        print(f"| {name} | {threads} | {alone:.3f} | {busy:.3f} | ×{busy / alone:.2f}{late} | "
              f"×{alone / alone_default:.2f} |")


if __name__ == "__main__":
    main()
