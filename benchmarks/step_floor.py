"""What part of a training step no search can shrink: the step of networks between the supernet and its floor.

Times forward + backward + a fused AdamW step of the demo segmentation model (``hrnas_demo_supernet``,
the demo's head and loss, 128², batch 16, channels_last, random images and labels) for

- the supernet;
- a searched network (``--arch``, an ``arch.json`` of a demo search; default: none) and the same without
  its transformers;
- the supernet uniformly thinned to the searched network's MACs (or to ``--fraction`` of the supernet's),
  with and without transformers;
- the *floor*: every kernel group and transformer removed (the stem, fusion modules, shortcuts, head and
  loss: what stays whatever the search removes),

all built in one process and timed in alternating rounds (A, B, C, ..., A, B, C, ...; medians), so that a
noisy machine slows every network alike. Prints MACs, ms per step and both as a fraction of the supernet.

    python benchmarks/step_floor.py
    python benchmarks/step_floor.py --arch runs/demo/search/arch.json --rounds 12

Time it on an otherwise idle machine; the thread count is ``--threads`` (default: every available core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

import hrnas.demos  # noqa: F401  (registers the demo-scene generator)
from hrnas.engine.allocator import tune_heap
from hrnas.engine.config import load_config
from hrnas.search.uniform import uniformly_thinned
from hrnas.space.cost import cost, format_macs
from hrnas.space.cost_model import without_units
from hrnas.space.spec import NetSpec, read_json_file
from hrnas.space.zoo import spec_from_dict
from hrnas.tasks.base import get_task
from hrnas.utils.threads import available_cores

SIZE = (128, 128)


def no_transformers(spec: NetSpec) -> NetSpec:
    return spec.replace_blocks({path: replace(block, num_queries=0) for path, block in spec.blocks()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", help="arch.json of a searched demo network")
    parser.add_argument("--fraction", type=float, default=0.3, help="uniform thinning without --arch")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=available_cores())
    args = parser.parse_args()
    tune_heap()
    torch.set_num_threads(args.threads)
    task = get_task(load_config("demo_seg", ["model.spec=hrnas_demo_supernet", "task.num_classes=11"]))
    supernet = task.build_spec()
    nets: dict[str, NetSpec] = {"supernet": supernet}
    if args.arch:
        searched = task.build_spec(spec_from_dict(read_json_file(args.arch), source=args.arch))
        nets["searched"] = searched
        nets["searched, no transformers"] = no_transformers(searched)
        target = cost(searched, SIZE).macs
    else:
        target = args.fraction * cost(supernet, SIZE).macs
    uniform = uniformly_thinned(supernet, target, SIZE)
    nets["uniform"] = uniform
    nets["uniform, no transformers"] = no_transformers(uniform)
    nets["floor (every unit removed)"] = without_units(supernet)

    images = torch.randn(16, 3, *SIZE).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 11, (16, *SIZE))
    batch = (images, labels)
    steps: dict[str, Callable[[], None]] = {}
    for name, spec in nets.items():
        torch.manual_seed(0)
        model = task.build_model(spec).to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step(model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
            loss = task.loss(task.forward(model, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[name] = step
    for step in steps.values():
        for _ in range(2):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 16 at {SIZE[0]}², median of "
        f"{args.rounds} alternating rounds; load {load:.2f} → {os.getloadavg()[0]:.2f}"
    )
    macs0 = cost(supernet, SIZE).macs
    ms0 = statistics.median(times["supernet"]) * 1e3
    print(f"{'network':30s} {'MACs':>9} {'× MACs':>7} {'ms/step':>8} {'× time':>7}")
    for name, spec in nets.items():
        macs = cost(spec, SIZE).macs
        ms = statistics.median(times[name]) * 1e3
        print(f"{name:30s} {format_macs(macs):>9} {macs / macs0:7.2f} {ms:8.1f} {ms / ms0:7.2f}")


if __name__ == "__main__":
    main()
