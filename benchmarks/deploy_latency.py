"""Deployed latency per MAC: our networks next to torchvision's mobile nets, in ONNX Runtime, one process.

Every network is exported with ``torch.onnx.export(..., dynamo=False, opset_version=17)`` (ours in their
deploy form, ``hrnas.space.deploy.deploy``, with kernel groups padded to ``--pad-to`` channels and, for
comparison, unpadded, and with each block's kernel groups merged into one depthwise convolution,
``deploy(..., merge_groups=True)``) and run by ONNX Runtime's CPU provider at batch 1 with ``--threads`` intra-op
threads and spinning off (idle sessions with spinning on steal the cores). All sessions are created
first and timed in alternating rounds, so a noisy machine slows all of them alike; the median over the
rounds is printed with ms per GMAC and the ratio to MobileNetV2's ms per GMAC.

    python benchmarks/deploy_latency.py                 # 2 threads, 30 rounds
    python benchmarks/deploy_latency.py --threads 1 --rounds 50 --skip-large

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import onnxruntime as ort
import torch
import torchvision
from torch import nn

from hrnas.export.latency import Protocol, onnx_bytes, session_options
from hrnas.space.cost import cost
from hrnas.space.deploy import deploy
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec


def _session(module: nn.Module, size: tuple[int, int], threads: int) -> Callable[[], object]:
    x = torch.randn(1, 3, *size)
    options = session_options(Protocol(threads=threads))  # spinning off
    session = ort.InferenceSession(onnx_bytes(module.eval(), x), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def _torchvision_macs(model: nn.Module, size: tuple[int, int]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, *size))
    return counter.get_total_flops() / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--pad-to", type=int, default=8)
    parser.add_argument("--skip-large", action="store_true", help="leave out the 512x1024 and 256x512 networks")
    args = parser.parse_args()
    torch.manual_seed(0)

    rows: list[tuple[str, float, Callable[[], object]]] = []  # (name, MACs, run)

    def add_torchvision(name: str, model: nn.Module, size: tuple[int, int]) -> None:
        rows.append(
            (
                f"torchvision {name} @{size[0]}x{size[1]}",
                _torchvision_macs(model, size),
                _session(model, size, args.threads),
            )
        )

    def add_ours(name: str, size: tuple[int, int], transformer: bool) -> None:
        spec = get_spec(name, transformer=transformer)
        model = build_model(spec).eval()
        macs = cost(spec, size).macs
        tag = "" if transformer else ", no transformer"
        for pad in (1, args.pad_to):
            label = f"{name}{tag} @{size[0]}x{size[1]}, pad {pad}"
            rows.append((label, macs, _session(deploy(model, pad_to=pad), size, args.threads)))
        label = f"{name}{tag} @{size[0]}x{size[1]}, merged, pad {args.pad_to}"
        merged = deploy(model, pad_to=args.pad_to, merge_groups=True)
        rows.append((label, macs, _session(merged, size, args.threads)))

    seg = torchvision.models.segmentation
    add_torchvision("MobileNetV2", torchvision.models.mobilenet_v2(), (224, 224))
    add_torchvision("MobileNetV3-Large", torchvision.models.mobilenet_v3_large(), (224, 224))
    add_torchvision("LR-ASPP-MobileNetV3-Large", seg.lraspp_mobilenet_v3_large(weights_backbone=None), (128, 128))
    if not args.skip_large:
        lraspp = seg.lraspp_mobilenet_v3_large(weights_backbone=None)
        add_torchvision("LR-ASPP-MobileNetV3-Large", lraspp, (512, 1024))
    add_ours("hrnas_demo_supernet", (128, 128), transformer=False)
    if not args.skip_large:
        add_ours("hrnas_cityscapes_supernet", (256, 512), transformer=False)
    add_ours("hrnas_imagenet_ref", (224, 224), transformer=True)

    for _, _, run in rows:  # warm-up
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, _, run in rows:
            t0 = time.perf_counter()
            run()
            times[name].append(1e3 * (time.perf_counter() - t0))
    print(
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.threads} intra-op threads, spinning off, "
        f"batch 1, median of {args.rounds} alternating rounds; load {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    reference = None
    print(f"{'network':62s} {'GMACs':>7} {'ms':>8} {'ms/GMAC':>8} {'× MNv2':>7}")
    for name, macs, _ in rows:
        ms = statistics.median(times[name])
        per = ms / (macs / 1e9)
        reference = reference or per
        print(f"{name:62s} {macs / 1e9:7.3f} {ms:8.2f} {per:8.1f} {per / reference:7.2f}")


if __name__ == "__main__":
    main()
