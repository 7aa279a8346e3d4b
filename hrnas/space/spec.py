"""The architecture spec: one typed, serialisable description of a high-resolution network.

A :class:`NetSpec` is the single source of truth for the supernet, a searched network, the zoo,
cost accounting and export (HR-NAS §2). It is made of frozen dataclasses with a strict JSON form:
unknown keys, keys given twice and inconsistent values are rejected with the path of the offending
value, e.g. ``stages[2].parallel[1][0].hidden: 2 entries but kernel_sizes has 3``. The JSON methods
(:class:`SpecJson`: ``to_json``, ``from_dict``, ``from_json``, atomic ``save``, ``load``) are shared with
the other spec kind, :class:`~hrnas.space.pointpillars.PointPillarsSpec`.

Layout (spec §2.3): a stem of stride-2 3×3 convolutions brings the input to 1/2^len(stem), then every
stage is a *fusion module* (neighbour-only exchange between branches, plus optionally one new,
lower-resolution branch made from the fused lowest-resolution branch by a stride-2 block) followed by
a *parallel module* (a chain of blocks inside each branch). Branch ``b`` runs at 1/2^b of the stem's
resolution. A head (classification or dense prediction) reads the branches of the last stage.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, TypeVar

from hrnas.utils.atomic import atomic_write_text
from hrnas.utils.errors import HrnasError, parse_json_text, read_json

ACTIVATIONS = ("relu", "swish")
DENSE_HEAD_KINDS = ("segmentation", "keypoints", "detection")


class SpecError(HrnasError, ValueError):
    """A spec is malformed or inconsistent; the message starts with the path of the bad value (and the file,
    when read from one)."""


# --- the JSON form shared by the spec kinds ---------------------------------------------------------


def parse_json(text: str, source: str = "<json>") -> Any:
    """Plain data from JSON ``text``; raises :class:`SpecError` naming ``source`` when the text is empty or
    not valid JSON (with its line) or an object gives a key twice (JSON would silently keep the last value)."""
    return parse_json_text(text, source, SpecError)


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """Plain data from a spec JSON file; errors (missing, unreadable, empty, invalid, a key given twice) are
    :class:`SpecError` naming the file."""
    return read_json(path, SpecError, what="spec file")


_S = TypeVar("_S", bound="SpecJson")


class SpecJson:
    """The JSON methods of a spec kind. A subclass (a frozen dataclass) implements :meth:`to_dict` and
    :meth:`_from_plain` (plain data → validated spec, :class:`SpecError` naming the bad value)."""

    def to_dict(self) -> dict[str, Any]:
        """The plain (JSON-able) form."""
        raise NotImplementedError

    @classmethod
    def _from_plain(cls: type[_S], data: Any) -> _S:
        raise NotImplementedError

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls: type[_S], data: Any, source: str | None = None) -> _S:
        """The spec of plain ``data``; errors are prefixed with ``source`` when given."""
        try:
            return cls._from_plain(data)
        except SpecError as exc:
            if source is None:
                raise
            raise SpecError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls: type[_S], text: str, source: str = "<json>") -> _S:
        return cls.from_dict(parse_json(text, source), source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form to ``path`` atomically (readers see the old file or the new one)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[_S], path: str | os.PathLike[str]) -> _S:
        return cls.from_dict(read_json_file(path), source=str(path))


@dataclass(frozen=True)
class BlockSpec:
    """One search block (spec §2.6) with its optional lightweight transformer (§3).

    ``hidden[i]`` depthwise channels use a ``kernel_sizes[i]``×``kernel_sizes[i]`` kernel; entries may be
    0 (an empty kernel group). A block whose hidden channels are all 0 is an identity (residual block)
    or its grouped 1×1 shortcut. ``num_queries > 0`` attaches a transformer whose output is added to the
    block's output; its placement follows from the block: beside the residual of a stride-1 block with
    equal widths, or beside the shortcut (producing ``out_channels`` at the block's stride) otherwise.
    """

    in_channels: int
    out_channels: int
    stride: int = 1
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    hidden: tuple[int, ...] = (0, 0, 0)
    num_queries: int = 0

    @property
    def residual(self) -> bool:
        """True when the block adds its input unchanged (stride 1 and equal widths)."""
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def total_hidden(self) -> int:
        return sum(self.hidden)

    @property
    def shortcut_groups(self) -> int:
        return math.gcd(self.in_channels, self.out_channels)

    def without_empty_groups(self) -> BlockSpec:
        """The same block with kernel groups of 0 channels dropped."""
        kept = [(k, h) for k, h in zip(self.kernel_sizes, self.hidden, strict=True) if h > 0]
        return replace(self, kernel_sizes=tuple(k for k, _ in kept), hidden=tuple(h for _, h in kept))


@dataclass(frozen=True)
class FuseSpec:
    """A block of a fusion module carrying branch ``src`` into branch ``dst`` (|src − dst| ≤ 1).

    ``dst == src + 1``: stride-2 block (down). ``dst == src``: stride-1 block. ``dst == src − 1``: stride-1
    block at the source resolution followed by nearest ×2 upsampling (up).
    """

    src: int
    dst: int
    block: BlockSpec


@dataclass(frozen=True)
class StageSpec:
    """A fusion module (``fuse`` blocks, ordered by ``(dst, src)``; optional ``new_branch``) followed by a
    parallel module (``parallel[b]`` = the chain of blocks of branch ``b``, possibly empty)."""

    fuse: tuple[FuseSpec, ...]
    parallel: tuple[tuple[BlockSpec, ...], ...]
    new_branch: BlockSpec | None = None


@dataclass(frozen=True)
class StemSpec:
    """Stride-2 3×3 ConvBNAct layers; ``channels[i]`` output channels of layer ``i``."""

    in_channels: int = 3
    channels: tuple[int, ...] = (24, 24)


@dataclass(frozen=True)
class ClassificationHeadSpec:
    """HR-NAS classification head (spec §2.7): ``incre[b]`` per branch, ``down[i]`` stride-2 blocks from
    branch ``i`` to ``i+1`` merged progressively, a 1×1 ConvBNAct to ``last_channels``, global average
    pooling, dropout and a linear classifier."""

    num_classes: int
    incre: tuple[BlockSpec, ...]
    down: tuple[BlockSpec, ...]
    last_channels: int = 1600
    dropout: float = 0.2
    kind: str = "classification"


@dataclass(frozen=True)
class DenseHeadSpec:
    """Dense head (segmentation logits or keypoint heatmaps, spec §2.7): every branch is bilinearly
    upsampled to branch 0, concatenated, passed through the ``transform`` block and a 1×1 conv with bias
    to ``num_outputs`` channels at the resolution of branch 0.

    ``kind="detection"`` (KITTI, docs/kitti.md) ends at the ``transform`` block: its ``num_outputs`` =
    ``transform.out_channels`` channels are the BEV features an anchor head reads (no 1×1 conv here)."""

    num_outputs: int
    transform: BlockSpec
    kind: str = "segmentation"


HeadSpec = ClassificationHeadSpec | DenseHeadSpec


@dataclass(frozen=True)
class NetSpec(SpecJson):
    """A whole network: stem, stages and head, plus the layer conventions shared by every block."""

    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    name: str = ""
    activation: str = "relu"
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3
    token_grid: int = 8
    transformer_dropout: float = 0.1

    def __post_init__(self) -> None:
        validate(self)

    # --- derived structure -------------------------------------------------------------------------
    def branch_channels(self) -> list[int]:
        """Channels of each branch after the last stage."""
        return _walk(self)[-1]

    def blocks(self) -> list[tuple[str, BlockSpec]]:
        """Every search block with its path, in construction order."""
        out: list[tuple[str, BlockSpec]] = []
        for s, stage in enumerate(self.stages):
            for f, fuse in enumerate(stage.fuse):
                out.append((f"stages[{s}].fuse[{f}].block", fuse.block))
            if stage.new_branch is not None:
                out.append((f"stages[{s}].new_branch", stage.new_branch))
            for b, chain in enumerate(stage.parallel):
                for i, block in enumerate(chain):
                    out.append((f"stages[{s}].parallel[{b}][{i}]", block))
        head = self.head
        if isinstance(head, ClassificationHeadSpec):
            out += [(f"head.incre[{i}]", blk) for i, blk in enumerate(head.incre)]
            out += [(f"head.down[{i}]", blk) for i, blk in enumerate(head.down)]
        else:
            out.append(("head.transform", head.transform))
        return out

    def replace_blocks(self, new_blocks: dict[str, BlockSpec]) -> NetSpec:
        """A copy with the blocks at the given paths (as in :meth:`blocks`) replaced."""
        unknown = set(new_blocks) - {p for p, _ in self.blocks()}
        if unknown:
            raise SpecError(f"unknown block paths: {sorted(unknown)}")

        def pick(path: str, block: BlockSpec) -> BlockSpec:
            return new_blocks.get(path, block)

        stages = []
        for s, stage in enumerate(self.stages):
            fuse = tuple(
                replace(fs, block=pick(f"stages[{s}].fuse[{f}].block", fs.block)) for f, fs in enumerate(stage.fuse)
            )
            nb = None if stage.new_branch is None else pick(f"stages[{s}].new_branch", stage.new_branch)
            par = tuple(
                tuple(pick(f"stages[{s}].parallel[{b}][{i}]", blk) for i, blk in enumerate(chain))
                for b, chain in enumerate(stage.parallel)
            )
            stages.append(StageSpec(fuse=fuse, parallel=par, new_branch=nb))
        head = self.head
        if isinstance(head, ClassificationHeadSpec):
            head = replace(
                head,
                incre=tuple(pick(f"head.incre[{i}]", b) for i, b in enumerate(head.incre)),
                down=tuple(pick(f"head.down[{i}]", b) for i, b in enumerate(head.down)),
            )
        else:
            head = replace(head, transform=pick("head.transform", head.transform))
        return replace(self, stages=tuple(stages), head=head)

    def without_transformers(self) -> NetSpec:
        """A copy with every transformer removed (``num_queries = 0`` in every block)."""
        return self.replace_blocks({p: replace(b, num_queries=0) for p, b in self.blocks() if b.num_queries})

    # --- serialisation (SpecJson) ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def _from_plain(cls, data: Any) -> NetSpec:
        return _parse_net(data)


# --- JSON conversion -------------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    return obj


def _expect_mapping(data: Any, path: str, cls: type) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(f"{path or 'spec'}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise SpecError(f"{where}: unknown key (known: {', '.join(sorted(known))})")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    for key in required:
        if key not in data:
            raise SpecError(f"{path + '.' if path else ''}{key}: missing")
    return data


def _int(value: Any, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}: expected an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{path}: must be >= {minimum}, got {value}")
    return value


def _float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{path}: expected a number, got {value!r}")
    return float(value)


def _int_list(value: Any, path: str, minimum: int = 0) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise SpecError(f"{path}: expected a list, got {value!r}")
    return tuple(_int(v, f"{path}[{i}]", minimum) for i, v in enumerate(value))


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise SpecError(f"{path}: expected a list, got {type(value).__name__}")
    return list(value)


def _parse_block(data: Any, path: str) -> BlockSpec:
    d = _expect_mapping(data, path, BlockSpec)
    kernel_sizes = _int_list(d.get("kernel_sizes", [3, 5, 7]), f"{path}.kernel_sizes", 1)
    hidden = _int_list(d.get("hidden", [0] * len(kernel_sizes)), f"{path}.hidden", 0)
    return BlockSpec(
        in_channels=_int(d["in_channels"], f"{path}.in_channels", 1),
        out_channels=_int(d["out_channels"], f"{path}.out_channels", 1),
        stride=_int(d.get("stride", 1), f"{path}.stride", 1),
        kernel_sizes=kernel_sizes,
        hidden=hidden,
        num_queries=_int(d.get("num_queries", 0), f"{path}.num_queries", 0),
    )


def _parse_stage(data: Any, path: str) -> StageSpec:
    d = _expect_mapping(data, path, StageSpec)
    fuse = []
    for i, item in enumerate(_list(d["fuse"], f"{path}.fuse")):
        fp = f"{path}.fuse[{i}]"
        fd = _expect_mapping(item, fp, FuseSpec)
        fuse.append(
            FuseSpec(
                src=_int(fd["src"], f"{fp}.src"),
                dst=_int(fd["dst"], f"{fp}.dst"),
                block=_parse_block(fd["block"], f"{fp}.block"),
            )
        )
    parallel = tuple(
        tuple(
            _parse_block(blk, f"{path}.parallel[{b}][{i}]")
            for i, blk in enumerate(_list(chain, f"{path}.parallel[{b}]"))
        )
        for b, chain in enumerate(_list(d["parallel"], f"{path}.parallel"))
    )
    nb = d.get("new_branch")
    return StageSpec(
        fuse=tuple(fuse),
        parallel=parallel,
        new_branch=None if nb is None else _parse_block(nb, f"{path}.new_branch"),
    )


def _parse_head(data: Any, path: str) -> HeadSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected an object, got {type(data).__name__}")
    kind = data.get("kind", "segmentation")
    if kind == "classification":
        d = _expect_mapping(data, path, ClassificationHeadSpec)
        return ClassificationHeadSpec(
            num_classes=_int(d["num_classes"], f"{path}.num_classes", 1),
            incre=tuple(
                _parse_block(b, f"{path}.incre[{i}]") for i, b in enumerate(_list(d["incre"], f"{path}.incre"))
            ),
            down=tuple(_parse_block(b, f"{path}.down[{i}]") for i, b in enumerate(_list(d["down"], f"{path}.down"))),
            last_channels=_int(d.get("last_channels", 1600), f"{path}.last_channels", 1),
            dropout=_float(d.get("dropout", 0.2), f"{path}.dropout"),
        )
    if kind in DENSE_HEAD_KINDS:
        d = _expect_mapping(data, path, DenseHeadSpec)
        return DenseHeadSpec(
            num_outputs=_int(d["num_outputs"], f"{path}.num_outputs", 1),
            transform=_parse_block(d["transform"], f"{path}.transform"),
            kind=kind,
        )
    known = ", ".join(("classification",) + DENSE_HEAD_KINDS)
    raise SpecError(f"{path}.kind: unknown head kind {kind!r} (known: {known})")


def _parse_net(data: Any) -> NetSpec:
    d = _expect_mapping(data, "", NetSpec)
    stem = _expect_mapping(d["stem"], "stem", StemSpec)
    return NetSpec(
        stem=StemSpec(
            in_channels=_int(stem.get("in_channels", 3), "stem.in_channels", 1),
            channels=_int_list(stem.get("channels", [24, 24]), "stem.channels", 1),
        ),
        stages=tuple(_parse_stage(s, f"stages[{i}]") for i, s in enumerate(_list(d["stages"], "stages"))),
        head=_parse_head(d["head"], "head"),
        name=str(d.get("name", "")),
        activation=str(d.get("activation", "relu")),
        bn_momentum=_float(d.get("bn_momentum", 0.01), "bn_momentum"),
        bn_eps=_float(d.get("bn_eps", 1e-3), "bn_eps"),
        token_grid=_int(d.get("token_grid", 8), "token_grid", 1),
        transformer_dropout=_float(d.get("transformer_dropout", 0.1), "transformer_dropout"),
    )


# --- validation ------------------------------------------------------------------------------------


def _check_block(block: BlockSpec, path: str, in_channels: int | None = None, stride: int | None = None) -> None:
    if not isinstance(block, BlockSpec):
        raise SpecError(f"{path}: expected a BlockSpec, got {type(block).__name__}")
    for name in ("in_channels", "out_channels", "stride"):
        value = getattr(block, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{path}.{name}: must be a positive integer, got {value!r}")
    if block.stride not in (1, 2):
        raise SpecError(f"{path}.stride: must be 1 or 2, got {block.stride}")
    if len(block.hidden) != len(block.kernel_sizes):
        raise SpecError(f"{path}.hidden: {len(block.hidden)} entries but kernel_sizes has {len(block.kernel_sizes)}")
    for i, k in enumerate(block.kernel_sizes):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise SpecError(f"{path}.kernel_sizes[{i}]: must be a positive odd integer, got {k!r}")
    if len(set(block.kernel_sizes)) != len(block.kernel_sizes):
        raise SpecError(f"{path}.kernel_sizes: repeated kernel size in {list(block.kernel_sizes)}")
    for i, h in enumerate(block.hidden):
        if isinstance(h, bool) or not isinstance(h, int) or h < 0:
            raise SpecError(f"{path}.hidden[{i}]: must be a non-negative integer, got {h!r}")
    if isinstance(block.num_queries, bool) or not isinstance(block.num_queries, int) or block.num_queries < 0:
        raise SpecError(f"{path}.num_queries: must be a non-negative integer, got {block.num_queries!r}")
    if in_channels is not None and block.in_channels != in_channels:
        raise SpecError(f"{path}.in_channels: {block.in_channels} but its input has {in_channels} channels")
    if stride is not None and block.stride != stride:
        raise SpecError(f"{path}.stride: must be {stride} here, got {block.stride}")


def _walk(spec: NetSpec) -> list[list[int]]:
    """Validate the wiring; return the branch channels after the stem and after every stage."""
    if spec.activation not in ACTIVATIONS:
        raise SpecError(f"activation: unknown {spec.activation!r} (known: {', '.join(ACTIVATIONS)})")
    if not spec.stem.channels:
        raise SpecError("stem.channels: needs at least one layer")
    for i, c in enumerate(spec.stem.channels):
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise SpecError(f"stem.channels[{i}]: must be a positive integer, got {c!r}")
    if not spec.stages:
        raise SpecError("stages: needs at least one stage")
    channels = [spec.stem.channels[-1]]
    history = [list(channels)]
    for s, stage in enumerate(spec.stages):
        path = f"stages[{s}]"
        n_in = len(channels)
        fused: list[int | None] = [None] * n_in
        order = []
        for f, fs in enumerate(stage.fuse):
            fp = f"{path}.fuse[{f}]"
            if not 0 <= fs.src < n_in:
                raise SpecError(f"{fp}.src: branch {fs.src} does not exist ({n_in} input branches)")
            if not 0 <= fs.dst < n_in:
                raise SpecError(f"{fp}.dst: branch {fs.dst} does not exist ({n_in} input branches)")
            if abs(fs.src - fs.dst) > 1:
                raise SpecError(f"{fp}: only neighbouring branches are fused (src {fs.src}, dst {fs.dst})")
            stride = 2 if fs.dst == fs.src + 1 else 1
            _check_block(fs.block, f"{fp}.block", channels[fs.src], stride)
            if fused[fs.dst] is None:
                fused[fs.dst] = fs.block.out_channels
            elif fused[fs.dst] != fs.block.out_channels:
                raise SpecError(
                    f"{fp}.block.out_channels: {fs.block.out_channels} but branch {fs.dst} has {fused[fs.dst]}"
                )
            order.append((fs.dst, fs.src))
        if order != sorted(set(order)):
            raise SpecError(f"{path}.fuse: blocks must be unique and ordered by (dst, src), got {order}")
        for b, c in enumerate(fused):
            if c is None:
                raise SpecError(f"{path}.fuse: no block produces branch {b}")
        out = [int(c) for c in fused]  # type: ignore[arg-type]
        if stage.new_branch is not None:
            _check_block(stage.new_branch, f"{path}.new_branch", out[-1], 2)
            out.append(stage.new_branch.out_channels)
        if len(stage.parallel) != len(out):
            raise SpecError(f"{path}.parallel: {len(stage.parallel)} branches but the fusion module gives {len(out)}")
        for b, chain in enumerate(stage.parallel):
            for i, block in enumerate(chain):
                _check_block(block, f"{path}.parallel[{b}][{i}]", out[b], 1)
                out[b] = block.out_channels
        channels = out
        history.append(list(channels))
    head = spec.head
    if isinstance(head, ClassificationHeadSpec):
        if len(head.incre) != len(channels):
            raise SpecError(f"head.incre: {len(head.incre)} blocks but the body has {len(channels)} branches")
        if len(head.down) != len(channels) - 1:
            raise SpecError(f"head.down: {len(head.down)} blocks, needs {len(channels) - 1}")
        for i, block in enumerate(head.incre):
            _check_block(block, f"head.incre[{i}]", channels[i], 1)
        for i, block in enumerate(head.down):
            _check_block(block, f"head.down[{i}]", head.incre[i].out_channels, 2)
            if block.out_channels != head.incre[i + 1].out_channels:
                raise SpecError(
                    f"head.down[{i}].out_channels: {block.out_channels} but head.incre[{i + 1}] gives "
                    f"{head.incre[i + 1].out_channels}"
                )
        if not 0.0 <= head.dropout < 1.0:
            raise SpecError(f"head.dropout: must be in [0, 1), got {head.dropout}")
    elif isinstance(head, DenseHeadSpec):
        if head.kind not in DENSE_HEAD_KINDS:
            raise SpecError(f"head.kind: unknown dense head kind {head.kind!r}")
        _check_block(head.transform, "head.transform", sum(channels), 1)
        if head.kind == "detection" and head.num_outputs != head.transform.out_channels:
            raise SpecError(
                f"head.num_outputs: {head.num_outputs} but a detection head outputs its transform's "
                f"{head.transform.out_channels} channels"
            )
    else:
        raise SpecError(f"head: expected a head spec, got {type(head).__name__}")
    return history


def validate(spec: NetSpec) -> None:
    """Raise :class:`SpecError` naming the first inconsistent value of ``spec``."""
    _walk(spec)


__all__ = [
    "ACTIVATIONS",
    "BlockSpec",
    "ClassificationHeadSpec",
    "DenseHeadSpec",
    "FuseSpec",
    "HeadSpec",
    "NetSpec",
    "SpecError",
    "SpecJson",
    "StageSpec",
    "StemSpec",
    "parse_json",
    "read_json_file",
    "validate",
]
