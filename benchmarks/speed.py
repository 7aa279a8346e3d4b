"""Training-step and inference throughput of a zoo network on this machine.

Prints images/s (median and best over the timed steps) of a full training step (forward, backward,
SGD step) with the peak resident memory, and images/s of the deployed (BN-folded) eval forward.
Optionally a torch.profiler breakdown.

    python benchmarks/speed.py                       # hrnas_cls_supernet, no transformers, 128², batch 16
    python benchmarks/speed.py --spec hrnas_cityscapes_supernet --input-size 128 256 --profile
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hrnas.engine.allocator import tune_heap
from hrnas.space.cost import cost, format_macs
from hrnas.space.deploy import deploy
from hrnas.space.network import build_model
from hrnas.space.spec import ClassificationHeadSpec
from hrnas.space.zoo import get_spec


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _throughput(step: Callable[[], object], batch: int, steps: int) -> tuple[float, float]:
    """(median, best) images/s over ``steps`` timed calls; the median resists a noisy neighbour."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times), batch / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="hrnas_cls_supernet")
    ap.add_argument("--transformer", action="store_true", help="keep the zoo spec's transformers")
    ap.add_argument("--input-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument(
        "--no-heap-tuning", action="store_true", help="keep glibc's malloc defaults (see hrnas.engine.allocator)"
    )
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one training step")
    args = ap.parse_args()
    heap_tuned = False if args.no_heap_tuning else tune_heap()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = get_spec(args.spec, transformer=args.transformer)
    h, w = args.input_size
    c = cost(spec, (h, w))
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    model = build_model(spec).to(memory_format=fmt)
    x = torch.randn(args.batch, 3, h, w).to(memory_format=fmt)
    if isinstance(spec.head, ClassificationHeadSpec):
        target = torch.randint(0, spec.head.num_classes, (args.batch,))
    else:
        target = torch.randint(0, spec.head.num_outputs, (args.batch, h // 4, w // 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(2):
        train_step()
    train_ips, train_best = _throughput(train_step, args.batch, args.steps)
    train_rss = peak_rss_mib()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))

    eval_model = deploy(model).to(memory_format=fmt)
    with torch.inference_mode():
        for _ in range(2):
            eval_model(x)
        eval_ips, eval_best = _throughput(lambda: eval_model(x), args.batch, args.steps)

    print(f"spec             {args.spec} (transformers {'on' if args.transformer else 'off'})")
    print(
        f"input            {args.batch}×3×{h}×{w}, {'NCHW' if args.no_channels_last else 'channels_last'}, "
        f"{torch.get_num_threads()} threads, heap tuning {'on' if heap_tuned else 'off'}"
    )
    print(f"cost             {format_macs(c.macs)} MACs/image, {c.params / 1e6:.3f} M params")
    gmacs = 3 * c.macs * train_ips / 1e9
    print(f"train step       {train_ips:.2f} img/s median, {train_best:.2f} best  ({gmacs:.1f} GMAC/s as 3× forward)")
    print(f"peak memory      {train_rss:.0f} MiB resident")
    print(f"deployed eval    {eval_ips:.2f} img/s median, {eval_best:.2f} best")


if __name__ == "__main__":
    main()
