"""Building a latency table (:mod:`hrnas.space.latency`) by timing a supernet's parts on this machine.

Every part is timed in its deployed form (:func:`hrnas.space.deploy.deploy`, BN folded) at batch 1, in
the runtime it will run in:

- ``onnxruntime``: exported with ``torch.onnx.export(..., dynamo=False, opset_version=17)`` and run by
  ONNX Runtime's CPU provider after its full graph optimisation, so fusions inside a block are counted;
- ``torch``: eager PyTorch under ``inference_mode``, channels_last (on CUDA when a GPU is present).

One protocol everywhere (:class:`Protocol`): ``warmup`` runs, then the median of ``runs`` runs, the thread
count set, ONNX Runtime's spinning recorded. That is repeated in ``rounds`` passes over everything being
timed and each part keeps its fastest pass: on a shared or virtual machine a slow spell lasts seconds, so
repeating a measurement at once does not escape it, while a pass later does. Blocks of the same signature
are timed once. The widths of each kernel group follow the runtime's channel blocking (multiples of
``blocking``, coarser above 64).

Measurements are cached (:class:`MeasurementCache`) by what was timed (the part's spec and input size)
and how (runtime and its version, threads, CPU model, protocol), so a second table of the same supernet,
or of another supernet sharing blocks, times only what is new.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn

from hrnas.space.cost import iter_blocks
from hrnas.space.cost_model import without_units
from hrnas.space.deploy import deploy
from hrnas.space.latency import BlockCurves, LatencyTable, block_key, cpu_model, monotone, skeleton_key
from hrnas.space.layers import SearchBlock
from hrnas.space.network import build_model
from hrnas.space.spec import BlockSpec, NetSpec
from hrnas.utils.atomic import atomic_write_text
from hrnas.utils.errors import HrnasError
from hrnas.utils.progress import progress

HW = tuple[int, int]
RUNTIMES = ("onnxruntime", "torch")

__all__ = [
    "RUNTIMES",
    "MeasurementCache",
    "Protocol",
    "build_latency_table",
    "default_cache_dir",
    "measure_onnx_file",
    "onnx_bytes",
    "pad_for",
    "query_grid",
    "random_subnet",
    "runtime_versions",
    "session_options",
    "time_module",
    "time_modules",
    "width_grid",
]


@dataclass(frozen=True)
class Protocol:
    """How every part is timed: ``runtime``, intra-op ``threads``, ``warmup`` runs, median of ``runs``,
    the fastest of ``rounds`` such medians taken in separate passes, ONNX Runtime's ``spinning`` (its
    intra-op threads busy-wait between kernels), channel ``blocking``."""

    runtime: str = "onnxruntime"
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    spinning: bool = False
    blocking: int = 8
    rounds: int = 3

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise HrnasError(f"--runtime {self.runtime}: expected one of {', '.join(RUNTIMES)}")
        if self.threads < 1:
            raise HrnasError(f"--threads {self.threads}: expected at least 1")
        if self.runs < 50:
            raise HrnasError(f"runs {self.runs}: the protocol takes the median of at least 50 runs")
        if self.blocking < 1:
            raise HrnasError(f"blocking {self.blocking}: expected at least 1")
        if self.rounds < 1:
            raise HrnasError(f"--rounds {self.rounds}: expected at least 1")


def width_grid(max_width: int, blocking: int = 8) -> list[int]:
    """Widths at which a kernel group of up to ``max_width`` channels is timed: multiples of
    ``blocking`` up to 64, then of ``2·blocking`` up to 128, then of ``4·blocking``; ``max_width`` last."""
    widths, w = [], blocking
    while w < max_width:
        widths.append(w)
        w += blocking if w < 64 else 2 * blocking if w < 128 else 4 * blocking
    widths.append(max_width)
    return sorted(set(widths))


def query_grid(max_queries: int) -> list[int]:
    """Query counts timed for a transformer of up to ``max_queries`` queries: 1, 2, 4, ... and the max."""
    counts, n = [], 1
    while n < max_queries:
        counts.append(n)
        n *= 2
    counts.append(max_queries)
    return sorted(set(counts))


def random_subnet(spec: NetSpec, rng: random.Random) -> NetSpec:
    """A sub-network of ``spec``: each block is emptied with p = 0.1; otherwise each kernel group is
    removed with p = 0.2 or keeps a uniform 1..width channels, and each transformer is removed with
    p = 0.3 or keeps 1..queries queries."""
    blocks = {}
    for path, block in spec.blocks():
        if rng.random() < 0.1:
            blocks[path] = replace(block, hidden=(0,) * len(block.hidden), num_queries=0)
            continue
        hidden = tuple(0 if c == 0 or rng.random() < 0.2 else rng.randint(1, c) for c in block.hidden)
        queries = 0 if block.num_queries == 0 or rng.random() < 0.3 else rng.randint(1, block.num_queries)
        blocks[path] = replace(block, hidden=hidden, num_queries=queries)
    return spec.replace_blocks(blocks)


def _median_ms(run: Callable[[], object], protocol: Protocol) -> float:
    for _ in range(protocol.warmup):
        run()
    times = []
    for _ in range(protocol.runs):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def onnx_bytes(module: nn.Module, example: Tensor) -> bytes:
    """``module`` exported as the latency protocol times it: ``torch.onnx.export(..., dynamo=False,
    opset_version=17)``, one input named ``x``, the exporter's warnings silenced."""
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=17, input_names=["x"])
    return buffer.getvalue()


def session_options(protocol: Protocol, optimized_path: str | Path | None = None):  # noqa: ANN201
    """ONNX Runtime session options of ``protocol``: its intra-op threads (one inter-op thread), its
    spinning, the full graph optimisation (saved to ``optimized_path`` when given), warnings off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = protocol.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if protocol.spinning else "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def _runner_factory(module: nn.Module, example: Tensor, protocol: Protocol) -> Callable[[], Callable[[], object]]:
    """Prepare ``module`` once (an ONNX export, or placement for eager PyTorch) and return what makes a
    fresh runner of one forward for each pass: an ONNX Runtime session is created per pass, so only one
    is alive at a time (idle sessions hold memory, and with spinning on they also hold the cores)."""
    if protocol.runtime == "torch":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        module = module.to(device, memory_format=torch.channels_last)
        x = example.to(device, memory_format=torch.channels_last)

        def run() -> None:
            module(x)
            if device.type == "cuda":
                torch.cuda.synchronize()

        return lambda: run
    import onnxruntime as ort

    model_bytes = onnx_bytes(module, example)
    feed = {"x": example.numpy()}

    def make() -> Callable[[], object]:
        session = ort.InferenceSession(model_bytes, session_options(protocol), providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feed)

    return make


def time_modules(
    items: Sequence[tuple[nn.Module, Tensor]], protocol: Protocol, desc: str = "", show_progress: bool = False
) -> list[float]:
    """Milliseconds of one forward of each ``(module, example)`` (modules deployed, eval): ``rounds``
    passes over all of them, each a median of ``runs`` after ``warmup``; each keeps its fastest pass."""
    factories = [_runner_factory(module, example, protocol) for module, example in items]
    best = [math.inf] * len(factories)
    bar = progress(protocol.rounds * len(factories), desc=desc or "timing", enabled=show_progress)
    previous = torch.get_num_threads()
    torch.set_num_threads(protocol.threads)
    try:
        with torch.inference_mode():
            for _ in range(protocol.rounds):
                for i, make in enumerate(factories):
                    best[i] = min(best[i], _median_ms(make(), protocol))
                    bar.update(1)
    finally:
        torch.set_num_threads(previous)
        bar.close()
    return best


def time_module(module: nn.Module, example: Tensor, protocol: Protocol) -> float:
    """Median milliseconds of one forward of ``module`` (already deployed, eval) on ``example``: the
    fastest of ``protocol.rounds`` medians (passes back to back)."""
    return time_modules([(module, example)], protocol)[0]


def runtime_versions(protocol: Protocol) -> dict[str, str]:
    """The versions a measurement with ``protocol`` depends on: torch's, and ONNX Runtime's when it runs."""
    versions = {"torch": torch.__version__}
    if protocol.runtime == "onnxruntime":
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
    return versions


def default_cache_dir() -> Path:
    """Where measurements are cached: ``$HRNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/hrnas``, else
    ``~/.cache/hrnas``."""
    if os.environ.get("HRNAS_CACHE_DIR"):
        return Path(os.environ["HRNAS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hrnas"


class MeasurementCache:
    """Latencies already measured on this machine, one JSON file per measuring context: runtime and its
    version, torch's version, threads, CPU model and the whole protocol. Keys name what was timed (a
    part's spec and input size); values are milliseconds. A file that cannot be read is started afresh
    (it is a cache: losing it costs only time)."""

    def __init__(self, protocol: Protocol, folder: str | os.PathLike[str] | None = None) -> None:
        self.context = {"protocol": asdict(protocol), "versions": runtime_versions(protocol), "cpu": cpu_model()}
        digest = hashlib.sha256(json.dumps(self.context, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(folder if folder is not None else default_cache_dir()) / "latency" / f"{digest}.json"
        self.entries: dict[str, float] = {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("context") == self.context:
                self.entries = {k: float(v) for k, v in data["entries"].items()}
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            pass

    @staticmethod
    def key(what: object, input_hw: HW) -> str:
        """The key of a part: a hash of its plain data (a spec's ``to_dict()``) and its input size."""
        text = json.dumps([what, list(input_hw)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> float | None:
        return self.entries.get(key)

    def put(self, values: dict[str, float]) -> None:
        """Add ``values`` and write the file (atomically; a cache that cannot be written is skipped)."""
        self.entries.update(values)
        if not values:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"context": self.context, "entries": self.entries}) + "\n")
        except OSError:
            pass


def _time_cached(
    named: list[tuple[str, Callable[[], tuple[nn.Module, Tensor]]]],
    protocol: Protocol,
    cache: MeasurementCache | None,
    desc: str,
    show_progress: bool,
) -> dict[str, float]:
    """Time every ``(key, build)`` whose key the cache lacks (``build`` makes the deployed module and its
    example) and return every key's milliseconds."""
    out = {key: cache.get(key) for key, _ in named} if cache is not None else {}
    todo = [(key, build) for key, build in named if out.get(key) is None]
    times = time_modules([build() for _, build in todo], protocol, desc=desc, show_progress=show_progress)
    fresh = {key: ms for (key, _), ms in zip(todo, times, strict=True)}
    if cache is not None:
        cache.put(fresh)
    out.update(fresh)
    return out


def pad_for(protocol: Protocol) -> int:
    """The kernel-group padding of the deploy form timed for ``protocol`` (ONNX Runtime: the blocking)."""
    return protocol.blocking if protocol.runtime == "onnxruntime" else 1


def measure_onnx_file(path: str | Path, protocol: Protocol, optimized_path: str | Path | None = None) -> float | None:
    """Median milliseconds of the ONNX model at ``path`` at batch 1 in ONNX Runtime with ``protocol``'s
    threads and spinning, after its full graph optimisation (saved to ``optimized_path`` when given: that
    file is specific to this machine's instruction set). ``None`` for a model with an input that is not
    float or has a symbolic size other than the batch (a detector's pillar count and coordinates), which
    random inputs do not describe."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path), session_options(protocol, optimized_path), providers=["CPUExecutionProvider"]
    )
    feed = {}
    for i, arg in enumerate(session.get_inputs()):
        shape = list(arg.shape)
        if arg.type != "tensor(float)" or any(not isinstance(d, int) for d in shape[1:]):
            return None  # e.g. pillar coordinates: random values would not be a frame
        shape[0] = 1 if not isinstance(shape[0], int) else shape[0]
        feed[arg.name] = np.random.default_rng(i).standard_normal(shape).astype(np.float32)
    best = math.inf
    for _ in range(protocol.rounds):
        best = min(best, _median_ms(lambda: session.run(None, feed), protocol))
    return best


def _block_module(block: BlockSpec, net: NetSpec, pad_to: int) -> nn.Module:
    module = SearchBlock(
        block,
        activation=net.activation,
        bn_momentum=net.bn_momentum,
        bn_eps=net.bn_eps,
        token_grid=net.token_grid,
        transformer_dropout=net.transformer_dropout,
    )
    return deploy(module, pad_to=pad_to)


def _block_part(
    block: BlockSpec, net: NetSpec, in_hw: HW, protocol: Protocol
) -> Callable[[], tuple[nn.Module, Tensor]]:
    def build() -> tuple[nn.Module, Tensor]:
        torch.manual_seed(0)
        return _block_module(block, net, pad_for(protocol)), torch.randn(1, block.in_channels, *in_hw)

    return build


def _net_part(net: NetSpec, input_size: HW, pad_to: int) -> Callable[[], tuple[nn.Module, Tensor]]:
    def build() -> tuple[nn.Module, Tensor]:
        torch.manual_seed(0)
        return deploy(build_model(net), pad_to=pad_to), torch.randn(1, net.stem.in_channels, *input_size)

    return build


def _block_cache_key(block: BlockSpec, net: NetSpec, in_hw: HW) -> str:
    """What a block's time depends on: its spec and the network-wide settings its module is built with."""
    context = {"activation": net.activation, "bn_eps": net.bn_eps, "token_grid": net.token_grid}
    return MeasurementCache.key({"block": asdict(block), **context}, in_hw)


def build_latency_table(
    spec: NetSpec,
    input_size: HW,
    protocol: Protocol,
    show_progress: bool = True,
    spec_name: str = "",
    calibration_nets: int = 16,
    cache: MeasurementCache | None = None,
) -> LatencyTable:
    """Time ``spec``'s parts (see the module docstring) and return the table.

    The spec is the supernet: every kernel group is timed up to its width in ``spec`` and every
    transformer up to its queries there. Blocks of one signature (:func:`block_key`) are timed once,
    at the widest of them. Then the supernet and ``calibration_nets − 1`` random sub-networks are timed
    end to end to fit how the parts add up (:func:`_calibrate`, stored as ``meta.calibration``).
    Measurements found in ``cache`` are not repeated; new ones are added to it.
    """
    if not isinstance(spec, NetSpec):
        raise HrnasError(f"latency tables cover HRNet-style networks, not {type(spec).__name__}")
    input_size = (int(input_size[0]), int(input_size[1]))
    widest: dict[str, tuple[BlockSpec, HW]] = {}
    for _, block, in_hw in iter_blocks(spec, input_size):
        key = block_key(block, in_hw)
        if key in widest:
            old = widest[key][0]
            groups = dict(zip(old.kernel_sizes, old.hidden, strict=True))
            for k, c in zip(block.kernel_sizes, block.hidden, strict=True):
                groups[k] = max(groups.get(k, 0), c)
            block = replace(
                old,
                kernel_sizes=tuple(groups),
                hidden=tuple(groups.values()),
                num_queries=max(old.num_queries, block.num_queries),
            )
        widest[key] = (block, in_hw)

    jobs: list[tuple[str, str, int, BlockSpec, HW]] = []  # (key, what, size, block, in_hw)
    for key, (block, in_hw) in widest.items():
        empty = replace(block, hidden=(0,) * len(block.hidden), num_queries=0)
        jobs.append((key, "empty", 0, empty, in_hw))
        for i, (k, c) in enumerate(zip(block.kernel_sizes, block.hidden, strict=True)):
            for w in width_grid(c, protocol.blocking) if c > 0 else []:
                hidden = tuple(w if j == i else 0 for j in range(len(block.hidden)))
                jobs.append((key, f"k{k}", w, replace(empty, hidden=hidden), in_hw))
        for n in query_grid(block.num_queries) if block.num_queries > 0 else []:
            jobs.append((key, "queries", n, replace(empty, num_queries=n), in_hw))

    skeleton = without_units(spec)
    fixed_key = MeasurementCache.key({"net": skeleton.to_dict(), "pad_to": 1}, input_size)
    parts = [(fixed_key, _net_part(skeleton, input_size, 1))]
    job_keys = [_block_cache_key(block, spec, in_hw) for _, _, _, block, in_hw in jobs]
    for k, (_, _, _, block, in_hw) in zip(job_keys, jobs, strict=True):
        parts.append((k, _block_part(block, spec, in_hw, protocol)))
    times = _time_cached(list(dict(parts).items()), protocol, cache, "latency table", show_progress)
    fixed_ms = times[fixed_key]
    measured = {(key, what, size): times[k] for k, (key, what, size, _, _) in zip(job_keys, jobs, strict=True)}

    blocks: dict[str, BlockCurves] = {}
    for key, (block, _) in widest.items():
        base = measured[(key, "empty", 0)]
        groups = {}
        for k in block.kernel_sizes:
            pts = [(float(s), ms - base) for (kk, what, s), ms in measured.items() if kk == key and what == f"k{k}"]
            groups[k] = monotone([(x, max(y, 0.0)) for x, y in pts])
        qpts = [(float(s), ms - base) for (kk, what, s), ms in measured.items() if kk == key and what == "queries"]
        blocks[key] = BlockCurves(groups, monotone([(x, max(y, 0.0)) for x, y in qpts]))

    table = LatencyTable(meta={"input_size": list(input_size), "pad_to": pad_for(protocol)},
                         fixed={skeleton_key(spec): fixed_ms}, blocks=blocks)
    calibration = _calibrate(table, spec, input_size, protocol, calibration_nets, show_progress, cache)

    meta = {
        "runtime": protocol.runtime,
        "threads": protocol.threads,
        "cpu": cpu_model(),
        "input_size": list(input_size),
        "batch": 1,
        "pad_to": pad_for(protocol),
        "spec": spec_name or spec.name,
        "protocol": asdict(protocol),
        "versions": runtime_versions(protocol),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "skeleton": skeleton_key(spec),
        "calibration": calibration,
    }
    return LatencyTable(meta=meta, fixed={skeleton_key(spec): fixed_ms}, blocks=blocks)


def _calibrate(
    table: LatencyTable,
    spec: NetSpec,
    input_size: HW,
    protocol: Protocol,
    nets: int,
    show_progress: bool,
    cache: MeasurementCache | None = None,
) -> dict[str, float]:
    """Fit how the parts, timed alone, add up inside the whole network: measured − fixed ≈ offset +
    scale · Σ increments, least squares over the supernet and ``nets − 1`` random sub-networks (seed
    12345; through the origin when fewer than 4). Blocks timed alone run with warm caches and without the
    network's scheduling between them, so the sum of their increments is off by a roughly constant factor,
    and the skeleton timed alone misses the buffers and layout changes that present blocks bring."""
    import numpy as np

    if nets < 1:
        return {"scale": 1.0, "offset_ms": 0.0, "per_group_ms": 0.0, "nets": 0}
    from hrnas.space.latency import LatencyCost

    raw = LatencyCost(table)
    rng = random.Random(12345)
    fixed = raw.fixed(spec, input_size)
    pad_to = pad_for(protocol)
    chosen = [spec] + [random_subnet(spec, rng) for _ in range(nets - 1)]
    keys = [MeasurementCache.key({"net": net.to_dict(), "pad_to": pad_to}, input_size) for net in chosen]
    parts = list(dict(zip(keys, (_net_part(net, input_size, pad_to) for net in chosen), strict=True)).items())
    times = _time_cached(parts, protocol, cache, "calibration", show_progress)
    x = np.array([raw.deployed_total(net, input_size) - fixed for net in chosen])
    y = np.array([times[key] for key in keys]) - fixed
    if nets >= 4 and np.ptp(x) > 0:
        scale, offset = (float(v) for v in np.polyfit(x, y, 1))
        if scale > 0:
            return {"scale": scale, "offset_ms": offset, "per_group_ms": 0.0, "nets": nets}
    # one scale through the origin (a per-group term as well proved unstable: the group count moves with
    # the increments, giving fits that disagreed run to run)
    scale = float(np.dot(x, y) / np.dot(x, x)) if np.dot(x, x) > 0 else 1.0
    return {"scale": scale, "offset_ms": 0.0, "per_group_ms": 0.0, "nets": nets}
