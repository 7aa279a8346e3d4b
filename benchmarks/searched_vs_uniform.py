"""Does the search pay? For each MAC target: search the demo supernet under that budget, retrain the
searched network from scratch, and retrain the supernet *uniformly thinned* to the same MACs with the
same recipe and steps. Prints MACs, params and validation mIoU of both, and the search's step time at its
start and end.

    python benchmarks/searched_vs_uniform.py --targets 0.5 0.25 --out runs/svu
    python benchmarks/searched_vs_uniform.py --targets 40M --set data.workers=4   # CUDA machine

A target below 1 is a fraction of the supernet's MACs at the training crop; otherwise MACs (``40M``).
``--set`` applies to every run, ``--search-set`` / ``--retrain-set`` to one phase. The defaults are the
``hrnas demo`` recipe (hrnas.demos.segmentation.DEMO_SEARCH / DEMO_RETRAIN). Budgets, the uniform
thinning and the figures are in MACs (``hrnas.space.cost_model.MAC_COST``, the search's default).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hrnas.demos.segmentation import DEMO_RETRAIN, DEMO_SEARCH
from hrnas.engine.config import load_config, parse_macs
from hrnas.engine.trainer import train
from hrnas.search.uniform import uniformly_thinned
from hrnas.space.cost import cost, format_macs
from hrnas.space.cost_model import MAC_COST
from hrnas.tasks.base import get_task


def _target(text: str, supernet_macs: int) -> int:
    value = float(text) if text.replace(".", "", 1).isdigit() else None
    if value is not None and value < 1:
        return round(value * supernet_macs)
    return parse_macs(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="+", default=["0.5", "0.25"], help="fractions of the supernet or MACs")
    ap.add_argument("--out", type=Path, default=Path("runs/searched_vs_uniform"))
    ap.add_argument("--data", default="data/demo", help="demo scenes root (generated when missing)")
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--retrain-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-uniform", action="store_true", help="only search and retrain the searched net")
    args = ap.parse_args()

    base = [f"data.root={args.data}", *args.common]
    probe = load_config("demo_seg", [*base, *DEMO_SEARCH, *args.search_set])
    size = tuple(probe.penalty_input_size)
    supernet = get_task(probe).build_spec()
    supernet_macs = cost(supernet, size).macs
    rows = []
    for text in args.targets:
        target = _target(text, supernet_macs)
        tag = format_macs(target).replace(".", "_")
        search_cfg = load_config("demo_seg", [*base, *DEMO_SEARCH, f"search.target_macs={target}", *args.search_set])
        retrain_cfg = load_config(
            "demo_seg",
            [*base, *DEMO_SEARCH, f"search.target_macs={target}", *DEMO_RETRAIN, *args.common, *args.retrain_set],
        )
        t0 = time.perf_counter()
        searched = train(search_cfg, args.out / tag / "search")
        t_search = time.perf_counter() - t0
        log = [r for r in searched.search_log if r.get("step_time_s")]
        t0 = time.perf_counter()
        retrained = train(retrain_cfg, args.out / tag / "retrain", arch=searched.spec)
        t_retrain = time.perf_counter() - t0
        row = {
            "target": target,
            "supernet_macs": supernet_macs,
            "searched": {
                "macs": cost(searched.spec, size).macs,
                "params": cost(searched.spec, size).params,
                "miou": retrained.metrics["miou"],
                "search_s": round(t_search, 1),
                "retrain_s": round(t_retrain, 1),
                "step_time_start_s": log[0]["step_time_s"] if log else None,
                "step_time_end_s": log[-1]["step_time_s"] if log else None,
            },
        }
        if not args.no_uniform:
            uniform = uniformly_thinned(supernet, target, size, MAC_COST)
            thin = train(retrain_cfg, args.out / tag / "uniform", arch=uniform)
            row["uniform"] = {
                "macs": cost(uniform, size).macs,
                "params": cost(uniform, size).params,
                "miou": thin.metrics["miou"],
            }
        rows.append(row)
        (args.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")

    print(f"\nsupernet {supernet.name}: {format_macs(supernet_macs)} MACs at {size[0]}×{size[1]}")
    print(f"{'target':>8s} {'network':>9s} {'MACs':>9s} {'ratio':>6s} {'params':>9s} {'mIoU':>7s}")
    for row in rows:
        for name in ("searched", "uniform"):
            if name in row:
                r = row[name]
                print(
                    f"{format_macs(row['target']):>8s} {name:>9s} {format_macs(r['macs']):>9s} "
                    f"{r['macs'] / row['target']:6.3f} {r['params'] / 1e6:8.3f}M {r['miou']:7.4f}"
                )
        s = row["searched"]
        print(f"{'':>8s} search {s['search_s']:.0f} s, step time {s['step_time_start_s']} s → {s['step_time_end_s']} s")
    print(f"summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
