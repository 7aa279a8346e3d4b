"""Measured latency as a cost: the latency table of a supernet and :class:`LatencyCost`, its cost model.

A table (built by ``hrnas latency-table``, :mod:`hrnas.export.latency`) holds, for one runtime, thread
count, CPU and input size, in milliseconds at batch 1:

- ``fixed``: the whole network with every unit removed (every kernel group empty, no transformer), timed
  end to end, keyed by that skeleton (:func:`skeleton_key`): stem, fusion resizes and sums, shortcuts,
  head — everything no removal of channels or queries can reach;
- per block signature (:func:`block_key`: widths, stride, kernel sizes, input size), the *increment* of
  each kernel group as a function of its hidden channels, ``g_k(c)``, and of the transformer as a
  function of its queries, ``t(n)``: the block timed alone with only that group (or transformer) minus
  the block timed empty. ``g_k(0) = t(0) = 0``; the first point above 0 carries the group's fixed cost
  (its dispatch and layout reorders), which only disappears with the whole group.

The latency of a spec is predicted as ``fixed + offset + Σ_blocks Σ_parts (scale · g(width) + per_group_ms)``
over its present kernel groups and transformers (``g`` = ``g_k`` or ``t``), where ``scale`` and ``offset``
(``meta.calibration``, ``offset_ms``) are fitted on whole networks timed end to end (``per_group_ms``, a
cost per present part, is read when a table gives one; tables built here set 0); between grid points
(multiples of the runtime's channel blocking) the curves are interpolated linearly. ONNX Runtime runs
convolutions of other widths in a far slower layout, so its deploy form pads every kernel group to the
blocking (``meta.pad_to``); :meth:`LatencyCost.deployed_total` predicts that padded network. A unit's price is
the difference of the curve at its block's current width and one below — the contract of
:class:`~hrnas.space.cost_model.CostModel` holds exactly, since :meth:`LatencyCost.total` sums the same
curves. Curves are made non-decreasing when read (measurement noise must not give a negative price).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnas.space.cost import iter_blocks
from hrnas.space.cost_model import CostModel, without_units
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import BlockSpec, NetSpec, read_json_file
from hrnas.utils.atomic import atomic_write_text
from hrnas.utils.errors import HrnasError

HW = tuple[int, int]
TABLE_FORMAT = 1

__all__ = [
    "LatencyCost",
    "LatencyTable",
    "LatencyTableError",
    "block_key",
    "cpu_model",
    "monotone",
    "skeleton_key",
]


class LatencyTableError(HrnasError, ValueError):
    """A latency table that cannot be read or does not cover the network asked about."""


def block_key(block: BlockSpec, in_hw: HW) -> str:
    """The signature a block's curves are stored under: what its latency depends on except its units
    (each kernel group has its own curve inside the entry, so the kernel sizes are not part of it)."""
    return f"{block.in_channels}>{block.out_channels} s{block.stride} @{in_hw[0]}x{in_hw[1]}"


def _without_groups(value: Any) -> Any:
    """Plain spec data with every block's ``kernel_sizes`` and ``hidden`` left out (a shrink may drop an
    emptied kernel group from a block, which changes neither what remains nor its cost)."""
    if isinstance(value, dict):
        return {k: _without_groups(v) for k, v in value.items() if k not in ("kernel_sizes", "hidden")}
    if isinstance(value, list):
        return [_without_groups(v) for v in value]
    return value


def skeleton_key(spec: NetSpec) -> str:
    """A short hash of ``spec`` with every unit removed (every subnet of one supernet shares it)."""
    text = json.dumps(_without_groups(without_units(spec).to_dict()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


MIN_SLOPE_MS = 1e-6
"""The least a unit may cost (ms per channel or query): a stretch where measurement noise made a curve
fall is held this much above flat, so every unit keeps a positive price."""


def monotone(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(x, ms)`` points sorted by x with ``(0, 0)`` first and ms made increasing (running max, plus
    :data:`MIN_SLOPE_MS` per unit of x)."""
    out: list[tuple[float, float]] = [(0.0, 0.0)]
    for x, y in sorted((float(x), float(y)) for x, y in points if x > 0):
        px, py = out[-1]
        out.append((x, max(y, py + MIN_SLOPE_MS * (x - px))))
    return out


def _interpolate(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear value at ``x`` (beyond the last point: the last segment's slope)."""
    if x <= 0:
        return 0.0
    if len(points) >= 3 and x < points[1][0]:
        # below the first timed width: the first segment's line, so the group's fixed cost (the line's
        # intercept) lies on its first channel rather than spread over the channels below that width
        (x1, y1), (x2, y2) = points[1], points[2]
        return min(y1, max(0.0, y1 - (y2 - y1) / (x2 - x1) * (x1 - x)))
    xs = [p[0] for p in points]
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return points[i][1]
    if i >= len(xs):
        (x0, y0), (x1, y1) = points[-2], points[-1]
    else:
        (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass
class BlockCurves:
    """The increments of one block signature: ``groups[k]`` = g_k points, ``queries`` = t points (ms)."""

    groups: dict[int, list[tuple[float, float]]]
    queries: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 0.0)])


@dataclass
class LatencyTable:
    """A measured latency table (see the module docstring). ``meta`` records how it was measured:
    runtime and its version, threads, spinning, CPU model, input size, batch, protocol."""

    meta: dict[str, Any]
    fixed: dict[str, float]
    blocks: dict[str, BlockCurves]

    @property
    def input_size(self) -> HW:
        h, w = self.meta["input_size"]
        return int(h), int(w)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "meta": self.meta,
            "fixed": self.fixed,
            "blocks": {
                key: {
                    "groups": {str(k): [list(p) for p in pts] for k, pts in curves.groups.items()},
                    "queries": [list(p) for p in curves.queries],
                }
                for key, curves in sorted(self.blocks.items())
            },
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any, source: str = "<table>") -> LatencyTable:
        def fail(where: str, why: str) -> LatencyTableError:
            return LatencyTableError(f"{source}: {where}: {why}")

        if not isinstance(data, dict):
            raise fail("top level", f"expected an object, got {type(data).__name__}")
        if data.get("format") != TABLE_FORMAT:
            found = data.get("format")
            raise fail("format", f"{found!r} is not a latency table format this version reads ({TABLE_FORMAT})")
        for key in ("meta", "fixed", "blocks"):
            if not isinstance(data.get(key), dict):
                raise fail(key, "missing or not an object")
        meta = data["meta"]
        for key in ("runtime", "threads", "cpu", "input_size"):
            if key not in meta:
                raise fail(f"meta.{key}", "missing")
        size = meta["input_size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise fail("meta.input_size", f"{size!r} is not [H, W] of positive integers")

        def points(value: Any, where: str) -> list[tuple[float, float]]:
            if not isinstance(value, list) or not value:
                raise fail(where, "expected a non-empty list of [width, ms] pairs")
            out = []
            for i, pair in enumerate(value):
                ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int | float) for v in pair)
                if not ok or pair[0] < 0 or pair[1] < 0 or pair[1] != pair[1]:
                    raise fail(f"{where}[{i}]", f"{pair!r} is not a [width >= 0, ms >= 0] pair")
                out.append((float(pair[0]), float(pair[1])))
            return monotone(out)

        fixed = {}
        for key, value in data["fixed"].items():
            if not isinstance(value, int | float) or value < 0:
                raise fail(f"fixed.{key}", f"{value!r} is not a latency in ms >= 0")
            fixed[key] = float(value)
        blocks = {}
        for key, entry in data["blocks"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("groups"), dict):
                raise fail(f"blocks[{key!r}]", "expected an object with 'groups'")
            groups = {}
            for k, pts in entry["groups"].items():
                if not str(k).isdigit():
                    raise fail(f"blocks[{key!r}].groups", f"kernel size {k!r} is not an integer")
                groups[int(k)] = points(pts, f"blocks[{key!r}].groups[{k}]")
            queries = points(entry.get("queries", [[0, 0]]), f"blocks[{key!r}].queries")
            blocks[key] = BlockCurves(groups, queries)
        return cls(dict(meta), fixed, blocks)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read a table file; any defect is one :class:`LatencyTableError` line naming the file and key."""
        if not Path(path).is_file():
            raise LatencyTableError(f"{path}: no such latency table (build one with `hrnas latency-table`)")
        try:
            data = read_json_file(path)
        except HrnasError as exc:
            raise LatencyTableError(str(exc)) from None
        return cls.from_dict(data, source=str(path))

    def mismatch(self, runtime: str, threads: int, cpu: str | None = None) -> str | None:
        """Why this table does not describe ``runtime`` at ``threads`` on ``cpu`` (this machine's by
        default), or ``None`` when it does."""
        cpu = cpu_model() if cpu is None else cpu
        found = (self.meta.get("runtime"), self.meta.get("threads"), self.meta.get("cpu"))
        if found != (runtime, threads, cpu):
            return (
                f"latency table measured for runtime {found[0]}, {found[1]} threads on {found[2]!r}, "
                f"used for {runtime}, {threads} threads on {cpu!r}"
            )
        return None


class LatencyCost(CostModel):
    """Milliseconds on the machine and runtime a :class:`LatencyTable` was measured on (batch 1).

    Prices are marginal: the curve of the unit's kernel group (or transformer) at the block's current
    width minus the curve one unit below, so they depend on the width and must be re-asked after every
    change (as the cost seam's contract says). Raises :class:`LatencyTableError` for a block or skeleton
    the table does not cover, or an input size other than the table's.
    """

    unit = "ms"

    def __init__(self, table: LatencyTable, source: str = "latency table") -> None:
        self.table = table
        self.source = source
        calibration = table.meta.get("calibration") or {}
        self.scale = float(calibration.get("scale", 1.0))
        self.per_group_ms = float(calibration.get("per_group_ms", 0.0))
        self.offset_ms = float(calibration.get("offset_ms", 0.0))
        self.blocking = max(1, int(table.meta.get("pad_to", 1)))

    def _part(self, points: list[tuple[float, float]], width: float) -> float:
        """A kernel group's (or transformer's) latency at ``width`` in the network: the calibrated curve
        plus the per-group cost, 0 for an absent one."""
        return self.scale * _interpolate(points, width) + self.per_group_ms if width > 0 else 0.0

    def _curves(self, block: BlockSpec, in_hw: HW) -> BlockCurves:
        key = block_key(block, tuple(in_hw))
        curves = self.table.blocks.get(key)
        if curves is None:
            raise LatencyTableError(
                f"{self.source}: no entry for block {key!r}; build a table for this supernet and input size"
            )
        return curves

    def _group(self, curves: BlockCurves, block: BlockSpec, kernel_size: int) -> list[tuple[float, float]]:
        if kernel_size not in curves.groups:
            raise LatencyTableError(
                f"{self.source}: block {block_key(block, (0, 0))!r} has no curve for kernel size {kernel_size}"
            )
        return curves.groups[kernel_size]

    def channel_price(self, block: BlockSpec, in_hw: HW, kernel_size: int) -> float:
        curves = self._curves(block, in_hw)
        points = self._group(curves, block, kernel_size)
        width = dict(zip(block.kernel_sizes, block.hidden, strict=True)).get(kernel_size, 0)
        width = max(int(width), 1)
        return self._part(points, width) - self._part(points, width - 1)

    def query_price(self, block: BlockSpec, in_hw: HW, alive: int, grid: int) -> float:
        curves = self._curves(block, in_hw)
        alive = max(int(alive), 1)
        return self._part(curves.queries, alive) - self._part(curves.queries, alive - 1)

    def _check_size(self, input_size: HW) -> None:
        if tuple(input_size) != self.table.input_size:
            raise LatencyTableError(
                f"{self.source}: measured at input size {list(self.table.input_size)}, asked about "
                f"{list(input_size)}; build a table at that size"
            )

    def fixed(self, spec: NetSpec, input_size: HW) -> float:
        self._check_size(input_size)
        key = skeleton_key(spec)
        if key not in self.table.fixed:
            raise LatencyTableError(
                f"{self.source}: no fixed part for this network's skeleton {key} (the table was built for "
                f"another supernet: {self.table.meta.get('spec', '?')})"
            )
        return self.table.fixed[key] + self.offset_ms

    def total(self, spec: NetSpec | PointPillarsSpec, input_size: HW) -> float:
        return self._total(spec, input_size, pad_to=1)

    def deployed_total(self, spec: NetSpec, input_size: HW) -> float:
        """The latency of ``spec`` as deployed for the table's runtime: with every kernel group padded
        to the table's ``pad_to`` (``deploy(model, pad_to)``), a group of ``c`` channels runs as one of
        ``ceil(c / pad_to) · pad_to``. Equal to :meth:`total` on widths that are multiples of it."""
        return self._total(spec, input_size, pad_to=self.blocking)

    def _total(self, spec: NetSpec | PointPillarsSpec, input_size: HW, pad_to: int) -> float:
        if not isinstance(spec, NetSpec):
            kind = type(spec).__name__
            raise LatencyTableError(f"{self.source}: latency tables cover HRNet-style networks, not {kind}")
        total = self.fixed(spec, input_size)
        for _, block, in_hw in iter_blocks(spec, tuple(input_size)):
            curves = self._curves(block, in_hw)
            for k, c in zip(block.kernel_sizes, block.hidden, strict=True):
                if c > 0:
                    total += self._part(self._group(curves, block, k), -(-c // pad_to) * pad_to)
            if block.num_queries > 0:
                total += self._part(curves.queries, block.num_queries)
        return total

    def format(self, value: float) -> str:
        return f"{value:.3g}"

    def __repr__(self) -> str:
        return f"LatencyCost({self.source})"


def load_latency_cost(path: str | os.PathLike[str]) -> LatencyCost:
    """The :class:`LatencyCost` of the table file at ``path``."""
    return LatencyCost(LatencyTable.load(path), source=str(Path(path)))
