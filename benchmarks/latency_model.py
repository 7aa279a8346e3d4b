"""How well a latency table predicts the measured latency of random sub-networks of its supernet.

Builds (or reads) the latency table of a supernet, draws random sub-networks (random widths per kernel
group, removed groups, blocks and transformers, random query counts), predicts each one's latency with
:class:`hrnas.space.latency.LatencyCost` (``deployed_total``: kernel groups padded to the runtime's
blocking, as ``deploy`` does for it) and measures its deployed export end to end with the same protocol
(its passes spread over all the networks, each keeping its fastest), then prints the share within ±5 %
and ±10 %, the mean absolute percentage error and Kendall's τ, and writes a predicted-vs-measured
scatter plot.

    python benchmarks/latency_model.py                                   # demo supernet, 128², 100 nets
    python benchmarks/latency_model.py --spec hrnas_cityscapes_supernet --input-size 256 512
    python benchmarks/latency_model.py --runtime torch --threads 2 --nets 50 --plot torch.png

Run it on an otherwise idle machine; the table and the sub-networks are timed in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch

from hrnas.export.latency import Protocol, build_latency_table, pad_for, random_subnet, time_modules
from hrnas.space.cost import cost, format_macs
from hrnas.space.deploy import deploy
from hrnas.space.latency import LatencyCost, LatencyTable
from hrnas.space.network import build_model
from hrnas.space.zoo import resolve_spec


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-a of two equally long sequences (O(n²); ties count as neither)."""
    n, score = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (a[i] - a[j]) * (b[i] - b[j])
            score += (s > 0) - (s < 0)
    return 2 * score / (n * (n - 1)) if n > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="hrnas_demo_supernet")
    parser.add_argument("--input-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nets", type=int, default=100, help="random sub-networks")
    parser.add_argument("--rounds", type=int, default=3, help="passes of the protocol (each part keeps its fastest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", help="read this table instead of building one")
    parser.add_argument("--save-table", help="write the table built here to this file")
    parser.add_argument("--rows", help="write every network's predicted and measured ms and MACs (JSON)")
    parser.add_argument("--plot", default="latency_model.png", help="scatter plot (PNG)")
    args = parser.parse_args()

    spec = resolve_spec(args.spec, key="--spec")
    size = tuple(args.input_size)
    protocol = Protocol(runtime=args.runtime, threads=args.threads, rounds=args.rounds)
    print(
        f"{args.spec} @{size[0]}x{size[1]}, {args.runtime}, {args.threads} threads, {args.rounds} rounds, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    t0 = time.perf_counter()
    table = LatencyTable.load(args.table) if args.table else build_latency_table(spec, size, protocol)
    if args.save_table:
        table.save(args.save_table)
    print(
        f"table: {len(table.blocks)} block signatures, {time.perf_counter() - t0:.0f} s, "
        f"calibration {table.meta.get('calibration')}"
    )
    model = LatencyCost(table, source=args.table or "built table")

    rng = random.Random(args.seed)
    nets = [spec] + [random_subnet(spec, rng) for _ in range(args.nets - 1)]
    items = []
    for net in nets:
        torch.manual_seed(0)
        items.append((deploy(build_model(net), pad_to=pad_for(protocol)), torch.randn(1, spec.stem.in_channels, *size)))
    measured = time_modules(items, protocol, desc="sub-networks", show_progress=True)
    rows = [(model.deployed_total(net, size), ms, cost(net, size).macs) for net, ms in zip(nets, measured, strict=True)]
    if args.rows:
        Path(args.rows).write_text(json.dumps([{"predicted_ms": p, "measured_ms": m, "macs": c} for p, m, c in rows]))
    errors = [(p - m) / m for p, m, _ in rows]
    within5 = sum(abs(e) <= 0.05 for e in errors) / len(errors)
    within10 = sum(abs(e) <= 0.10 for e in errors) / len(errors)
    mape = 100 * statistics.mean(abs(e) for e in errors)
    tau = kendall_tau([p for p, _, _ in rows], [m for _, m, _ in rows])
    tau_macs = kendall_tau([c for _, _, c in rows], [m for _, m, _ in rows])
    bias = 100 * statistics.mean(errors)
    print(
        f"\n{len(rows)} networks, measured {min(m for _, m, _ in rows):.2f}–{max(m for _, m, _ in rows):.2f} ms, "
        f"{format_macs(min(c for *_, c in rows))}–{format_macs(max(c for *_, c in rows))} MACs"
    )
    print(
        f"within ±5 %: {100 * within5:.1f} %   within ±10 %: {100 * within10:.1f} %   "
        f"MAPE {mape:.2f} %   mean error {bias:+.2f} %   Kendall τ {tau:.3f} (MACs vs measured: {tau_macs:.3f})"
    )
    print(f"supernet: predicted {rows[0][0]:.3f} ms, measured {rows[0][1]:.3f} ms; load {os.getloadavg()[0]:.2f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter([m for _, m, _ in rows], [p for p, _, _ in rows], s=10)
    lo = min(min(p, m) for p, m, _ in rows)
    hi = max(max(p, m) for p, m, _ in rows)
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="gray", alpha=0.2, label="±10 %")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{args.spec} @{size[0]}x{size[1]}, {args.runtime}, {args.threads} thr")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {Path(args.plot).resolve()}")


if __name__ == "__main__":
    main()
