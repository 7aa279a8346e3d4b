"""hrnas's deployed network next to the HR-NAS authors' own model code, same architecture, one process.

Both sides build the published searched ImageNet network: hrnas from the zoo spec ``hrnas_imagenet_ref``,
the authors from their repository (https://github.com/dingmyu/HR-NAS, cloned by you; nothing of it is
copied here) the way their ``train.py`` / ``val.py`` do for ``configs/cls_retrain.yml``: ``utils.config``
reads the config into their global ``FLAGS`` (as ``train.py app:configs/cls_retrain.yml`` would), the
block list of ``checkpoint.json`` is put into ``models.hrnet.checkpoint_kwparams`` (the README's retraining
step; the repository ships that line commented out), and ``common.get_model``'s construction is repeated
without its CUDA wrapper: ``importlib.import_module(FLAGS.model).Model(**FLAGS.model_kwparams,
input_size=FLAGS.image_size)`` and the ``reset_param_method`` initialisation. Their files are imported
from ``--repo``, never edited; what a newer PyTorch lacks is stubbed here at run time.

Neither side has trained weights: both keep their own initialisation, and every BatchNorm's running
statistics are then set from one train-mode forward of random images (``calibrate_bn``), so activations
have a trained network's scale rather than growing to ~1e7 at the logits as with the initial statistics.

``--their-block`` picks their block class:

- ``channels`` (default): ``models/hrnet.py`` as it is, ``InvertedResidual(InvertedResidualChannels)``,
  one expansion, depthwise conv and projection per kernel size, no squeeze-and-excitation. Same MACs as
  hrnas's spec.
- ``fused``: the README's retraining recipe, ``InvertedResidual(InvertedResidualChannelsFused)`` (one
  expansion per block, the kernel groups narrowed from it); that class adds squeeze-and-excitation
  (``se_ratio=0.5`` by default) to every block, so it does slightly more work than the spec; the MAC
  difference is printed and traced to those SE layers. The class is swapped in here, not in their file.

Timed, all in one process with ``torch.set_num_threads(--threads)`` and the networks alternated round by
round (A, B, C, A, B, C, ...) so a noisy machine slows all of them alike; medians are printed:

1. eager PyTorch eval forward, batch ``--batch`` (16), 224², ``torch.inference_mode``, channels_last
   (``--no-channels-last`` for NCHW) for every network: theirs in eval mode as built (BatchNorm not
   folded), ours ``deploy(build_model(spec))`` per kernel group and ``deploy(..., merge_groups=True)``
   (kernel groups not padded, as hrnas's torch latency protocol deploys);
2. ONNX Runtime, batch 1, 224²: every network exported with ``hrnas.export.latency.onnx_bytes``
   (``torch.onnx.export(..., dynamo=False, opset_version=17)``), ours deployed with kernel groups padded
   to ``--pad-to`` (8) channels, per group and merged; sessions built with
   ``hrnas.export.latency.session_options`` (``--threads`` intra-op threads, one inter-op thread, full
   graph optimisation, spinning off, so the idle sessions between turns do not hold the cores).

The table gives MACs (hrnas: ``hrnas.space.cost``; theirs and every timed module: ``FlopCounterMode`` / 2),
milliseconds, the ratio theirs / ours and the goals: eager batch 16 ≥ 1.3×, ONNX Runtime batch 1 ≥ 1.5×.

    python benchmarks/authors_reference.py --repo ~/src/HR-NAS --threads 2 --rounds 30
    python benchmarks/authors_reference.py --repo ~/src/HR-NAS --their-block fused
    python benchmarks/authors_reference.py --repo ~/src/HR-NAS --quick      # 2 rounds: checks it runs

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hrnas.export.latency import Protocol, onnx_bytes, runtime_versions, session_options
from hrnas.space.cost import cost
from hrnas.space.deploy import deploy
from hrnas.space.network import build_model
from hrnas.space.zoo import resolve_spec

SIZE = (224, 224)
GOALS = {"eager": 1.3, "onnxruntime": 1.5}  # theirs / ours, from the issue
# top-level names the authors' repository imports as packages/modules from its root
THEIR_TOP_LEVEL = ("utils", "models", "mmseg", "common")


# --- the authors' model --------------------------------------------------------------------------------


def _stub_missing_imports() -> None:
    """Runtime shims for what their import chain names but building and running the model never uses,
    applied only when missing: ``packaging`` (a torch-version check in ``utils/common.py``) and
    ``torch._utils._take_tensors`` (gradient bucketing in ``utils/distributed.py``)."""
    try:
        import packaging.version  # noqa: F401
    except ImportError:
        stub = types.ModuleType("packaging")
        stub.version = types.SimpleNamespace(parse=lambda text: tuple(int(p) for p in text.split(".")[:2]))
        sys.modules["packaging"] = stub
        sys.modules["packaging.version"] = stub.version  # type: ignore[assignment]
    import torch._utils

    if not hasattr(torch._utils, "_take_tensors"):

        def _take_tensors(tensors: object, size_limit: int) -> object:
            raise NotImplementedError("stub: distributed gradient bucketing is not used by this benchmark")

        torch._utils._take_tensors = _take_tensors  # type: ignore[attr-defined]


@contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _import_their_modules(repo: Path, config: Path) -> tuple[object, types.ModuleType, types.ModuleType]:
    """Their ``FLAGS`` (``utils.config`` parses ``app:<config>`` from ``sys.argv`` when first imported, as
    their entry points are started), ``models.hrnet`` and ``models.mobilenet_base``."""
    for name in THEIR_TOP_LEVEL:
        module = sys.modules.get(name)
        if module is not None and not str(getattr(module, "__file__", "") or "").startswith(str(repo)):
            raise SystemExit(f"a module named {name!r} is already imported from elsewhere ({module!r})")
    _stub_missing_imports()
    sys.path.insert(0, str(repo))
    with _argv(["train.py", f"app:{config}"]):
        config_module = importlib.import_module("utils.config")
    flags = config_module.FLAGS
    hrnet = importlib.import_module("models.hrnet")
    mobilenet_base = importlib.import_module("models.mobilenet_base")
    return flags, hrnet, mobilenet_base


def build_theirs(repo: Path, config: Path, checkpoint: Path, block: str) -> nn.Module:
    """Their HighResolutionNet of ``checkpoint``'s block list, built as ``common.get_model`` builds it
    (without ``.cuda()`` and the data-parallel wrapper), in eval mode."""
    flags, hrnet, mb = _import_their_modules(repo, config)
    if flags.model != "models.hrnet":
        raise SystemExit(f"{config}: model {flags.model!r}; this benchmark builds models.hrnet")
    original = hrnet.InvertedResidual
    if block == "fused":
        # README: "class InvertedResidual(InvertedResidualChannelsFused)". Its __init__ calls
        # super(InvertedResidual, self), which reads the module global, so swapping the global suffices.
        hrnet.InvertedResidual = type(
            "InvertedResidual",
            (mb.InvertedResidualChannelsFused,),
            {"__init__": original.__init__, "__module__": hrnet.__name__},
        )
    hrnet.checkpoint_kwparams = json.loads(checkpoint.read_text())
    try:
        model_lib = importlib.import_module(flags.model)
        model = model_lib.Model(**flags.model_kwparams, input_size=flags.image_size)
        left = len(hrnet.checkpoint_kwparams)
    finally:
        hrnet.InvertedResidual = original
        hrnet.checkpoint_kwparams = None
    if left:
        raise SystemExit(f"{checkpoint}: {left} block entries left unused; it does not fit {config}")
    if flags.reset_parameters:
        method = flags.get("reset_param_method", None)
        if method == "mnas":
            model.apply(mb.init_weights_mnas)
        elif method == "slimmable":
            model.apply(mb.init_weights_slimmable)
    return model.eval()


def se_macs(model: nn.Module) -> float:
    """MACs of the squeeze-and-excitation convolutions of their fused blocks (two 1×1 convs on a 1×1 map)."""
    total = 0.0
    for module in model.modules():
        if type(module).__name__ == "SqueezeAndExcitation":
            total += 2 * module.n_feature * module.n_hidden
    return total


# --- measuring -------------------------------------------------------------------------------------------


def counted_macs(model: nn.Module) -> float:
    """Multiply-accumulates of one 224² forward at batch 1 as ``FlopCounterMode`` counts them (/ 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, *SIZE))
    return counter.get_total_flops() / 2


@torch.no_grad()
def calibrate_bn(model: nn.Module, batch: int = 4) -> nn.Module:
    """Set every BatchNorm's running statistics from one train-mode forward of random images (a
    cumulative average, as after their ``bn_calibration``), then eval mode. With the initial statistics
    (mean 0, variance 1) the activations of both networks grow through the residual sums to ~1e7 at the
    logits, far from a trained network and into the range where Swish's sigmoid underflows."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    generator = torch.Generator().manual_seed(0)
    model.train()(torch.randn(batch, 3, *SIZE, generator=generator))
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    return model.eval()


def alternate(runs: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each run over ``rounds`` rounds, one call of each per round, in turn."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(t) for name, t in times.items()}


def ort_runner(model: nn.Module, threads: int) -> tuple[Callable[[], object], float]:
    """An ONNX Runtime session of ``model`` at batch 1 and max |ORT − torch| / max |torch| of its output."""
    import onnxruntime as ort

    x = torch.randn(1, 3, *SIZE)
    options = session_options(Protocol(threads=threads))  # spinning off
    session = ort.InferenceSession(onnx_bytes(model.eval(), x), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    with torch.inference_mode():
        expected = model(x).numpy()
    diff = float(np.abs(session.run(None, feed)[0] - expected).max() / np.abs(expected).max())
    return (lambda: session.run(None, feed)), diff


# --- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True, help="a checkout of github.com/dingmyu/HR-NAS")
    parser.add_argument("--config", type=Path, help="their config (default: REPO/configs/cls_retrain.yml)")
    parser.add_argument("--checkpoint", type=Path, help="their block list (default: REPO/checkpoint.json)")
    parser.add_argument("--their-block", choices=("channels", "fused"), default="channels")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and ONNX Runtime intra-op threads")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 warm-up: checks that it runs")
    parser.add_argument("--batch", type=int, default=16, help="eager PyTorch batch")
    parser.add_argument("--pad-to", type=int, default=8, help="kernel-group padding of ours in ONNX Runtime")
    parser.add_argument("--no-channels-last", action="store_true", help="eager PyTorch in NCHW for all")
    parser.add_argument("--no-onnxruntime", action="store_true", help="time eager PyTorch only")
    args = parser.parse_args()
    repo = args.repo.expanduser().resolve()
    config = (args.config or repo / "configs" / "cls_retrain.yml").expanduser().resolve()
    checkpoint = (args.checkpoint or repo / "checkpoint.json").expanduser().resolve()
    for path in (repo / "models" / "hrnet.py", config, checkpoint):
        if not path.is_file():
            raise SystemExit(f"--repo {args.repo}: {path} not found; give a checkout of github.com/dingmyu/HR-NAS")
    rounds, warmup = (2, 1) if args.quick else (args.rounds, 3)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = resolve_spec("hrnas_imagenet_ref")
    ours_macs = cost(spec, SIZE).macs
    model = calibrate_bn(build_model(spec))
    theirs = calibrate_bn(build_theirs(repo, config, checkpoint, args.their_block))
    theirs_macs = counted_macs(theirs)

    their_name = f"authors, {args.their_block} blocks"
    print(
        f"torch {torch.__version__}, {args.threads} threads; "
        f"their model: {config.relative_to(repo) if config.is_relative_to(repo) else config} + "
        f"{checkpoint.name}, InvertedResidual"
        f"({'InvertedResidualChannelsFused' if args.their_block == 'fused' else 'InvertedResidualChannels'})"
    )
    print(
        f"MACs at 224²: hrnas spec {ours_macs / 1e6:.3f} M, authors {theirs_macs / 1e6:.3f} M (FlopCounterMode); "
        f"params hrnas {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M, "
        f"authors {sum(p.numel() for p in theirs.parameters()) / 1e6:.3f} M"
    )
    if abs(theirs_macs - ours_macs) > 0.5:
        diff = theirs_macs - ours_macs
        se = se_macs(theirs)
        why = (
            f"; their squeeze-and-excitation convolutions count {se / 1e6:+.3f} M"
            f"{' (all of it)' if abs(diff - se) < 0.5 else ''}"
            if se
            else ""
        )
        print(f"  MACs differ: authors − hrnas = {diff / 1e6:+.3f} M{why}")
    else:
        print("  MACs match")

    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    eager_models = {
        their_name: theirs,
        "hrnas deployed, per group": deploy(model),
        "hrnas deployed, merged": deploy(model, merge_groups=True),
    }
    macs = {name: counted_macs(m) for name, m in eager_models.items()}
    eager_models = {name: m.to(memory_format=fmt) for name, m in eager_models.items()}
    x = torch.randn(args.batch, 3, *SIZE).to(memory_format=fmt)
    with torch.inference_mode():
        eager = alternate({name: (lambda m=m: m(x)) for name, m in eager_models.items()}, rounds, warmup)
    tables = [
        (f"eager PyTorch, batch {args.batch}, {'NCHW' if args.no_channels_last else 'channels_last'}", "eager", eager)
    ]

    if not args.no_onnxruntime:
        ort_models = {
            their_name: theirs.to(memory_format=torch.contiguous_format),
            f"hrnas deployed, per group, pad {args.pad_to}": deploy(model, pad_to=args.pad_to),
            f"hrnas deployed, merged, pad {args.pad_to}": deploy(model, pad_to=args.pad_to, merge_groups=True),
        }
        runners, diffs = {}, {}
        for name, m in ort_models.items():
            runners[name], diffs[name] = ort_runner(m, args.threads)
            if name not in macs:
                macs[name] = counted_macs(m)
        versions = runtime_versions(Protocol(threads=args.threads))
        print(
            f"onnxruntime {versions['onnxruntime']}: exports checked, max |ORT − torch| / max |torch| "
            + ", ".join(f"{d:.2g}" for d in diffs.values())
        )
        load = os.getloadavg()[0]
        with torch.inference_mode():
            ort_ms = alternate(runners, rounds, warmup)
        tables.append(
            (f"ONNX Runtime, batch 1, spinning off (load {load:.2f} → {os.getloadavg()[0]:.2f})", "onnxruntime", ort_ms)
        )

    print(f"224², median of {rounds} alternating rounds; MACs per image as FlopCounterMode counts the module run")
    for title, runtime, ms in tables:
        print(f"\n{title}")
        print(f"  {'network':40s} {'MACs':>9} {'ms':>9} {'theirs/ours':>12}")
        reference = ms[their_name]
        for name, value in ms.items():
            ratio = "" if name == their_name else f"×{reference / value:.2f}"
            print(f"  {name:40s} {macs[name] / 1e6:8.1f}M {value:9.2f} {ratio:>12}")
        goal = GOALS[runtime]
        verdicts = ", ".join(
            f"{name.split(', ', 1)[1]} ×{reference / value:.2f} {'met' if reference / value >= goal else 'NOT met'}"
            for name, value in ms.items()
            if name != their_name
        )
        print(f"  goal theirs/ours ≥ {goal}×: {verdicts}")
    if args.quick:
        print("\n(--quick: 2 rounds, for checking that it runs; the numbers mean nothing)")


if __name__ == "__main__":
    main()
