"""Does the search pay? Retrain the supernet *uniformly thinned* to the searched network's MACs with the
same recipe as the searched network's retrain, and print both validation metrics.

    hrnas demo --out runs/demo                       # search + retrain (writes runs/demo/{search,retrain})
    python benchmarks/searched_vs_uniform.py runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hrnas.engine.config import load_config
from hrnas.engine.trainer import train
from hrnas.search.uniform import uniformly_thinned
from hrnas.space.cost import cost, format_macs
from hrnas.space.spec import NetSpec
from hrnas.tasks.base import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "run", type=Path, help="a folder with search/arch.json and retrain/{config.yaml,final_metrics.json}"
    )
    args = ap.parse_args()

    cfg = load_config(args.run / "retrain" / "config.yaml")
    searched = NetSpec.load(args.run / "search" / "arch.json")
    size = tuple(cfg.penalty_input_size)
    task = get_task(cfg)
    supernet = task.build_spec()
    target = cost(searched, size).macs
    uniform = uniformly_thinned(supernet, target, size)
    searched_metrics = json.loads((args.run / "retrain" / "final_metrics.json").read_text())
    result = train(cfg, args.run / "uniform", arch=uniform)
    metric = task.metric
    rows = [
        ("searched", cost(searched, size), searched_metrics[metric]),
        ("uniform", cost(uniform, size), result.metrics[metric]),
    ]
    print(f"\n{'network':10s} {'MACs':>10s} {'params':>10s} {metric:>8s}   (same recipe: {cfg.train.steps} steps)")
    for name, c, value in rows:
        print(f"{name:10s} {format_macs(c.macs):>10s} {c.params / 1e6:>9.3f}M {value:8.4f}")
    summary = {name: {"macs": c.macs, "params": c.params, metric: value} for name, c, value in rows}
    (args.run / "searched_vs_uniform.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
