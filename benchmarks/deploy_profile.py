"""Where the deployed networks spend their time in ONNX Runtime: the share of each operator type.

Every network is exported as in ``deploy_latency.py`` (ours in the deploy form with kernel groups padded
to ``--pad-to`` channels), run by ONNX Runtime's CPU provider after its full graph optimisation with
``enable_profiling``, and the profile's node events are summed by operator type (the fused types ONNX
Runtime runs, e.g. ``FusedConv``, ``ReorderInput``). Printed per network: total profiled time per run,
each type's share, and the share of what is not convolution, GEMM or activation ("layout and data
movement": reorders, transposes, resizes, concatenations, slices, copies).

    python benchmarks/deploy_profile.py                      # hrnas_imagenet_ref, demo supernet, MobileNetV2
    python benchmarks/deploy_profile.py --threads 1 --runs 100
    python benchmarks/deploy_profile.py --merge-groups         # one depthwise convolution per block

Run it on an otherwise idle machine (the shares are relative, the totals are not comparable with
``deploy_latency.py``: profiling adds its own cost per node).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import onnxruntime as ort
import torch
import torchvision
from torch import nn

from hrnas.export.latency import Protocol, onnx_bytes, session_options
from hrnas.space.deploy import deploy
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec

MOVEMENT = ("Reorder", "Transpose", "Resize", "Concat", "Slice", "Split", "Gather", "Reshape", "Expand",
            "Pad", "Identity", "Copy", "Upsample")


def profile(module: nn.Module, size: tuple[int, int], threads: int, runs: int) -> tuple[float, dict[str, float]]:
    """Milliseconds per run summed over the profiled nodes, and milliseconds per run per operator type."""
    x = torch.randn(1, 3, *size)
    model = onnx_bytes(module.eval(), x)
    options = session_options(Protocol(threads=threads))  # spinning off
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        for _ in range(10):
            session.run(None, feed)
        session.end_profiling()  # drop the warm-up runs
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_type: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            by_type[event["args"].get("op_name", "?")] += event["dur"] / 1e3 / runs
    return sum(by_type.values()), dict(by_type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pad-to", type=int, default=8)
    parser.add_argument("--top", type=int, default=8, help="operator types listed per network")
    parser.add_argument("--merge-groups", action="store_true", help="our networks in the merged deploy form")
    args = parser.parse_args()
    torch.manual_seed(0)
    nets = [
        ("hrnas_imagenet_ref @224x224",
         deploy(build_model(get_spec("hrnas_imagenet_ref")), pad_to=args.pad_to, merge_groups=args.merge_groups),
         (224, 224)),
        ("hrnas_demo_supernet, no transformer @128x128",
         deploy(build_model(get_spec("hrnas_demo_supernet", transformer=False)), pad_to=args.pad_to,
                merge_groups=args.merge_groups), (128, 128)),
        ("torchvision MobileNetV2 @224x224", torchvision.models.mobilenet_v2(), (224, 224)),
    ]
    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op threads, spinning off, batch 1, {args.runs} runs, "
          f"load {os.getloadavg()[0]:.2f}")
    for name, module, size in nets:
        total, by_type = profile(module, size, args.threads, args.runs)
        movement = sum(ms for op, ms in by_type.items() if any(op.startswith(m) for m in MOVEMENT))
        print(f"\n{name}: {total:.2f} ms per run in {len(by_type)} operator types; "
              f"layout and data movement {100 * movement / total:.1f} %")
        for op, ms in sorted(by_type.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {op:24s} {ms:7.3f} ms  {100 * ms / total:5.1f} %")


if __name__ == "__main__":
    main()
