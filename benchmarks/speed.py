"""Training-step and inference throughput of a zoo network on this machine.

Prints images/s (median and best over the timed steps) of a full training step (forward, backward,
SGD step) with the peak resident memory, and images/s of the deployed (BN-folded) eval forward in
PyTorch and, optionally, compiled by torch.compile or exported to ONNX and run in ONNX Runtime.
Optionally a torch.profiler breakdown.

    python benchmarks/speed.py                       # hrnas_cls_supernet, no transformers, 128², batch 16
    python benchmarks/speed.py --spec hrnas_cityscapes_supernet --input-size 128 256 --profile
    python benchmarks/speed.py --per-kernel-reference --onnxruntime --compile --steps 20

With ``--per-kernel-reference`` the same network is also built with every search block in the paper's
per-kernel form (``benchmarks/per_kernel_reference.py``: plain PyTorch modules, one expansion, depthwise
and projection per kernel size, no BN folding at eval) and the two are timed alternately, step by step,
in one process, so that a noisy machine slows all of them alike; the ratios are printed. The eval
forwards (every runtime asked for) are timed in turn the same way.
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
from hrnas.space.zoo import resolve_spec


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _throughput(steps: dict[str, Callable[[], object]], batch: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name → (median, best) images/s over ``rounds`` timed calls of each step, taken in turn.

    Taking the steps in turn (A, B, A, B, ...) makes a noisy neighbour slow all of them alike; the
    median resists its bursts.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: (batch / statistics.median(t), batch / min(t)) for name, t in times.items()}


def _train_step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()

    return step


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
    ap.add_argument(
        "--per-kernel-reference",
        action="store_true",
        help="also time the per-kernel block form (benchmarks/per_kernel_reference.py), interleaved",
    )
    ap.add_argument("--onnxruntime", action="store_true", help="also time the exported ONNX file in ONNX Runtime")
    ap.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the deployed form (compiles ~1 min)"
    )
    args = ap.parse_args()
    heap_tuned = False if args.no_heap_tuning else tune_heap()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = resolve_spec(args.spec, transformer=args.transformer, key="--spec")
    h, w = args.input_size
    c = cost(spec, (h, w))
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    torch.manual_seed(0)
    models = {"hrnas": build_model(spec).to(memory_format=fmt)}
    if args.per_kernel_reference:
        from per_kernel_reference import to_per_kernel

        reference = build_model(spec)
        to_per_kernel(reference)
        models["per-kernel"] = reference.to(memory_format=fmt)
    x = torch.randn(args.batch, 3, h, w).to(memory_format=fmt)
    if isinstance(spec.head, ClassificationHeadSpec):
        target = torch.randint(0, spec.head.num_classes, (args.batch,))
    else:
        target = torch.randint(0, spec.head.num_outputs, (args.batch, h // 4, w // 4))

    train_steps = {name: _train_step(m.train(), x, target) for name, m in models.items()}
    for step in train_steps.values():
        for _ in range(2):
            step()
    train = _throughput(train_steps, args.batch, args.steps)
    train_rss = peak_rss_mib()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_steps["hrnas"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))

    # hrnas is timed in its deployed (BN-folded) form; the reference as its modules are, in eval mode
    deployed = deploy(models["hrnas"]).to(memory_format=fmt)
    runners: dict[str, Callable[[], object]] = {"hrnas deployed, PyTorch": lambda: deployed(x)}
    if args.compile:
        runners["hrnas deployed, torch.compile"] = _compiled_runner(deployed, x)
    if args.onnxruntime:
        runners["hrnas deployed, ONNX Runtime"] = _onnxruntime_runner(models["hrnas"], x, (h, w))
    if args.per_kernel_reference:
        reference_eval = models["per-kernel"].eval()
        runners["per-kernel, PyTorch eval"] = lambda: reference_eval(x)
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(2):
                run()
        evals = _throughput(runners, args.batch, args.steps)

    print(f"spec             {args.spec} (transformers {'on' if args.transformer else 'off'})")
    print(
        f"input            {args.batch}×3×{h}×{w}, {'NCHW' if args.no_channels_last else 'channels_last'}, "
        f"{torch.get_num_threads()} threads, heap tuning {'on' if heap_tuned else 'off'}"
    )
    print(f"cost             {format_macs(c.macs)} MACs/image, {c.params / 1e6:.3f} M params")
    print("training step (forward, backward, SGD), images/s:")
    for name, (ips, best) in train.items():
        gmacs = 3 * c.macs * ips / 1e9
        print(f"  {name:<30} {ips:6.2f} median {best:6.2f} best  ({gmacs:.1f} GMAC/s as 3× forward)")
    print(f"  peak memory {train_rss:.0f} MiB resident{'' if len(models) == 1 else ' (both networks)'}")
    print("eval forward, images/s:")
    for name, (ips, best) in evals.items():
        print(f"  {name:<30} {ips:6.2f} median {best:6.2f} best")
    if args.per_kernel_reference:
        print("hrnas / per-kernel (medians):")
        print(f"  training step                  ×{train['hrnas'][0] / train['per-kernel'][0]:.2f}")
        for name, (ips, _) in evals.items():
            if name.startswith("hrnas"):
                print(f"  eval, {name[6:]:<24} ×{ips / evals['per-kernel, PyTorch eval'][0]:.2f}")


def _compiled_runner(deployed: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """torch.compile (Inductor, weights frozen as constants) of the deployed module; compiles on the spot."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(deployed)
    start = time.perf_counter()
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        compiled(x)
    print(f"torch.compile    {time.perf_counter() - start:.0f} s to compile", flush=True)
    return lambda: compiled(x)


def _onnxruntime_runner(model: torch.nn.Module, x: torch.Tensor, size: tuple[int, int]) -> Callable[[], object]:
    """The network exported by hrnas.export (checked against PyTorch), run in an ONNX Runtime CPU session
    with as many intra-op threads as torch uses."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    from hrnas.export.onnx import INPUT_NAME, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(model, Path(tmp) / "model.onnx", input_size=size, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    print(f"ONNX Runtime     {ort.__version__}, export checked: max |ORT − torch| {report.max_abs_diff:.2g}")
    feed = {INPUT_NAME: x.contiguous().numpy()}
    return lambda: session.run(None, feed)


if __name__ == "__main__":
    main()
