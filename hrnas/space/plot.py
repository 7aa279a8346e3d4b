"""A picture of an architecture in the style of HR-NAS Fig. 4: the network drawn as its multi-resolution layout.

One row per branch (resolution 1/4, 1/8, … of the input), blocks in construction order from left to right,
grouped by stage into the fusion module (blocks arriving from the branch above — stride 2 —, from the same
branch, from the branch below — upsampled — and the stride-2 block that creates a new branch) and the
parallel module (the chain of blocks of every branch). The head comes last: the classification head's
``incre``/``down`` blocks sit in the rows of the branches they compute at, the dense head's ``transform``
block gets a row of its own.

Every block is a small stacked bar of its hidden (depthwise) channels, one colour per kernel size, with a
second, thinner bar for the transformer's queries. Given the supernet the architecture was searched from,
the supernet's capacity is drawn as a light outline behind each bar, so the removed units are visible, and
blocks whose convolution path was removed entirely (identity or grouped 1×1 shortcut) are marked.

Bar heights are scaled per row (the row's largest block, in channels, is printed beside the row): channel
counts differ by two orders of magnitude between the 1/4 branch and the head, and a common scale would make
most of the network invisible. Query bars share one scale over the whole figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from hrnas.space.cost import check_input_size, cost, format_macs
from hrnas.space.spec import BlockSpec, ClassificationHeadSpec, NetSpec, SpecError
from hrnas.utils.atomic import atomic_path

KERNEL_COLOURS = {3: "#4C72B0", 5: "#55A868", 7: "#DD8452"}
QUERY_COLOUR = "#8172B3"
_EXTRA_COLOURS = ("#C44E52", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")
_GHOST_EDGE = "#9A9A9A"
_GHOST_FILL = "#F2F2F2"

# layout constants, in data units (one block column is 1 wide, one row is 1 high)
_BAR_HEIGHT = 0.72  # tallest bar of a row, as a fraction of the row
_BAR_BOTTOM = 0.12
_QUERY_HEIGHT = 0.45  # bar of the largest query count, as a fraction of the row
_CH_BAR = (-0.34, 0.42)  # x offset and width of the channel bar inside its column
_Q_BAR = (0.12, 0.2)  # x offset and width of the query bar
_SUB_GAP = 0.5  # between the fusion and the parallel module of a stage
_STAGE_GAP = 0.9  # between stages and before the head


@dataclass(frozen=True)
class _Slot:
    """Where one block is drawn: its spec path, the spec, its row and x position, and how it is wired."""

    path: str
    block: BlockSpec
    row: int
    x: float
    kind: str  # "down", "same", "up", "new", "parallel", "head"


@dataclass(frozen=True)
class _Section:
    """A labelled span of columns (a fusion module, a parallel module or the head)."""

    label: str
    stage: str
    start: float
    end: float


def _layout(spec: NetSpec) -> tuple[list[_Slot], list[_Section], int]:
    """Block positions in construction order, the sections they belong to, and the number of rows."""
    slots: list[_Slot] = []
    sections: list[_Section] = []
    x = 0.0
    num_branches = 1
    for s, stage in enumerate(spec.stages):
        start = x
        # fusion module: one column per kind of edge present (from above, same branch, from below)
        rel_kind = {1: "down", 0: "same", -1: "up"}
        present = sorted({fs.dst - fs.src for fs in stage.fuse}, reverse=True)
        column = {rel: start + i for i, rel in enumerate(present)}
        for f, fs in enumerate(stage.fuse):
            rel = fs.dst - fs.src
            slots.append(_Slot(f"stages[{s}].fuse[{f}].block", fs.block, fs.dst, column[rel], rel_kind[rel]))
        x = start + len(present)
        if stage.new_branch is not None:
            slots.append(_Slot(f"stages[{s}].new_branch", stage.new_branch, num_branches, x, "new"))
            x += 1
            num_branches += 1
        sections.append(_Section("fusion", f"stage {s}", start, x))
        x += _SUB_GAP
        start = x
        depth = max((len(chain) for chain in stage.parallel), default=0)
        for b, chain in enumerate(stage.parallel):
            for i, block in enumerate(chain):
                slots.append(_Slot(f"stages[{s}].parallel[{b}][{i}]", block, b, start + i, "parallel"))
        x = start + depth
        if depth:
            sections.append(_Section("parallel", f"stage {s}", start, x))
        x += _STAGE_GAP
    start = x
    head = spec.head
    rows = num_branches
    if isinstance(head, ClassificationHeadSpec):
        for i, block in enumerate(head.incre):
            slots.append(_Slot(f"head.incre[{i}]", block, i, start, "head"))
        for i, block in enumerate(head.down):
            slots.append(_Slot(f"head.down[{i}]", block, i + 1, start + 1 + i, "down"))
        x = start + 1 + len(head.down)
    else:
        rows += 1
        slots.append(_Slot("head.transform", head.transform, num_branches, start, "head"))
        x = start + 1
    sections.append(_Section("head", "head", start, x))
    return slots, sections, rows


def _kernel_colour(kernel: int, extra: dict[int, str]) -> str:
    if kernel in KERNEL_COLOURS:
        return KERNEL_COLOURS[kernel]
    if kernel not in extra:
        extra[kernel] = _EXTRA_COLOURS[len(extra) % len(_EXTRA_COLOURS)]
    return extra[kernel]


def _ghost_bar(x: float, y: float, width: float, height: float) -> Rectangle:
    """The light dashed outline of a supernet's capacity, drawn behind a block's bar."""
    return Rectangle((x, y), width, height, facecolor=_GHOST_FILL, edgecolor=_GHOST_EDGE, lw=0.5, ls="--", zorder=1)


def _check_same_structure(spec: NetSpec, supernet: NetSpec) -> dict[str, BlockSpec]:
    mine = spec.blocks()
    theirs = dict(supernet.blocks())
    if [p for p, _ in mine] != list(theirs):
        missing = sorted({p for p, _ in mine} ^ set(theirs))
        raise SpecError(
            f"supernet: {supernet.name or 'the supernet'} has a different block structure from "
            f"{spec.name or 'the spec'} (paths only in one of them: {', '.join(missing[:5])})"
        )
    for path, block in mine:
        ref = theirs[path]
        if (block.in_channels, block.out_channels, block.stride) != (ref.in_channels, ref.out_channels, ref.stride):
            raise SpecError(
                f"supernet: {path} is {block.in_channels}→{block.out_channels} stride {block.stride}, "
                f"the supernet's is {ref.in_channels}→{ref.out_channels} stride {ref.stride}"
            )
    return theirs


def _write_atomically(fig: Figure, out_path: Path, dpi: int) -> None:
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")


def plot_architecture(
    spec: NetSpec,
    out_path: str | os.PathLike[str],
    supernet: NetSpec | None = None,
    title: str | None = None,
    input_size: Sequence[int] = (224, 224),
    dpi: int = 150,
) -> Path:
    """Draw ``spec`` as its multi-resolution layout (HR-NAS Fig. 4 style) and save it to ``out_path``.

    Args:
        spec: the architecture to draw (any valid spec: supernet, searched or shrunk network; kernel lists
            may differ between blocks, e.g. ``(3, 7)`` after a shrink).
        out_path: the image file; its suffix picks the format (``.png``, ``.pdf``, ``.svg``; PNG when there
            is none). Parent folders are created; the file is written to a temporary name and renamed, so a
            failed call leaves no partial file.
        supernet: the network ``spec`` was derived from. It must have the same blocks (same paths, input and
            output channels and strides); its hidden channels and queries are drawn as light outlines.
        title: first title line (default: ``spec.name``); a second line always gives MACs and parameters.
        input_size: (H, W) of the input image used for the MACs in the title.
        dpi: resolution of raster formats.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        SpecError (a ``ValueError``): ``supernet`` does not have the block structure of ``spec``,
            ``input_size`` is not two positive integers or is too small for the network
            (:func:`hrnas.space.cost.check_input_size`), or ``spec`` is not a NetSpec (e.g. the fixed
            PointPillars backbone, which has no search blocks).
    """
    for what, s in (("spec", spec), ("supernet", supernet)):
        if s is not None and not isinstance(s, NetSpec):
            name = getattr(s, "name", "") or type(s).__name__
            raise SpecError(f"{what}: {name} is a fixed {type(s).__name__} without search blocks; plot draws NetSpecs")
    out_path = Path(out_path)
    hw = check_input_size(supernet or spec, [int(side) for side in input_size], f"input_size {tuple(input_size)}")
    ghosts = _check_same_structure(spec, supernet) if supernet is not None else {}
    slots, sections, num_rows = _layout(spec)
    num_branches = len(spec.branch_channels())
    stem_levels = len(spec.stem.channels)

    # scales: per row for channels, one for queries
    row_max = [1] * num_rows
    for slot in slots:
        ghost = ghosts.get(slot.path)
        total = max(slot.block.total_hidden, ghost.total_hidden if ghost else 0)
        row_max[slot.row] = max(row_max[slot.row], total)
    query_max = max([1] + [slot.block.num_queries for slot in slots] + [g.num_queries for g in ghosts.values()])

    width = max(slots[-1].x + 1.0, 8.0)
    fig = Figure(figsize=(1.3 + 0.36 * width, 1.5 + 1.05 * num_rows), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-2.1, width + 0.2)
    ax.set_ylim(-0.05, num_rows + 0.75)
    ax.set_axis_off()

    def base(row: int) -> float:
        return num_rows - 1 - row

    # row bands and labels
    last_channels = spec.branch_channels()
    for row in range(num_rows):
        y0 = base(row)
        if row % 2 == 0:
            ax.add_patch(Rectangle((-2.1, y0), width + 2.3, 1.0, color="#FAFAFA", zorder=0, lw=0))
        if row < num_branches:
            name = f"1/{2 ** (stem_levels + row)}"
            detail = f"{last_channels[row]} ch"
        else:
            name = "head"
            detail = f"1/{2**stem_levels}"
        ax.text(-2.0, y0 + 0.6, name, fontsize=9, fontweight="bold", va="center", ha="left")
        ax.text(-2.0, y0 + 0.38, detail, fontsize=6.5, va="center", ha="left", color="#555555")
        ax.text(-2.0, y0 + 0.18, f"scale {row_max[row]} ch", fontsize=5.5, va="center", ha="left", color="#888888")

    # stage separators and labels
    top = num_rows
    stage_spans: dict[str, list[float]] = {}
    for sec in sections:
        span = stage_spans.setdefault(sec.stage, [sec.start, sec.end])
        span[0], span[1] = min(span[0], sec.start), max(span[1], sec.end)
        mid = (sec.start + sec.end) / 2 - 0.5
        if sec.label != "head":
            ax.text(mid, top + 0.08, sec.label, fontsize=6, ha="center", va="bottom", color="#666666")
        if sec.label == "parallel":
            ax.axvline(sec.start - 0.5 - _SUB_GAP / 2, ymin=0.02, ymax=0.9, color="#CCCCCC", lw=0.6, ls=":")
    for i, (stage, (start, end)) in enumerate(stage_spans.items()):
        ax.text((start + end) / 2 - 0.5, top + 0.38, stage, fontsize=8.5, ha="center", va="bottom")
        if i:
            ax.axvline(start - 0.5 - _STAGE_GAP / 2, ymin=0.01, ymax=0.97, color="#999999", lw=0.8, ls="--")

    # blocks
    extra: dict[int, str] = {}
    kernels_seen: set[int] = set()
    any_queries = any_identity = any_shortcut = False
    arrows = {"down": "↓", "new": "↓", "up": "↑"}
    for slot in slots:
        block, ghost = slot.block, ghosts.get(slot.path)
        y0 = base(slot.row) + _BAR_BOTTOM
        scale = _BAR_HEIGHT / row_max[slot.row]
        cx, cw = slot.x + _CH_BAR[0], _CH_BAR[1]
        if ghost is not None and ghost.total_hidden:
            ax.add_patch(_ghost_bar(cx, y0, cw, ghost.total_hidden * scale))
        bottom = y0
        for k, h in zip(block.kernel_sizes, block.hidden, strict=True):
            if h == 0:
                continue
            kernels_seen.add(k)
            ax.add_patch(Rectangle((cx, bottom), cw, h * scale, color=_kernel_colour(k, extra), lw=0, zorder=2))
            bottom += h * scale
        if block.total_hidden:
            ax.text(
                cx + cw / 2, bottom + 0.01, str(block.total_hidden), fontsize=4.5, ha="center", va="bottom", zorder=4
            )
        else:
            marker = "o" if block.residual else "s"
            any_identity |= block.residual
            any_shortcut |= not block.residual
            ax.plot(cx + cw / 2, y0 + 0.06, marker=marker, ms=3.5, mfc="white", mec="#333333", mew=0.7, zorder=3)
        qx, qw = slot.x + _Q_BAR[0], _Q_BAR[1]
        qscale = _QUERY_HEIGHT / query_max
        if ghost is not None and ghost.num_queries:
            ax.add_patch(_ghost_bar(qx, y0, qw, ghost.num_queries * qscale))
        if block.num_queries:
            any_queries = True
            ax.add_patch(Rectangle((qx, y0), qw, block.num_queries * qscale, color=QUERY_COLOUR, lw=0, zorder=2))
            ax.text(
                qx + qw / 2,
                y0 + block.num_queries * qscale + 0.01,
                str(block.num_queries),
                fontsize=4.5,
                ha="center",
                va="bottom",
                color=QUERY_COLOUR,
                zorder=4,
            )
        if slot.kind in arrows:
            ax.text(slot.x - 0.05, y0 - 0.02, arrows[slot.kind], fontsize=6, ha="center", va="top", color="#555555")

    # head output description
    head = spec.head
    last = slots[-1]
    if isinstance(head, ClassificationHeadSpec):
        note = f"1×1 conv {head.last_channels}\npool, FC {head.num_classes}"
    elif head.kind == "detection":
        note = f"{head.num_outputs} BEV features\n→ anchor head"
    else:
        note = f"1×1 conv → {head.num_outputs}\n({head.kind})"
    ax.text(last.x + 0.55, base(last.row) + 0.5, note, fontsize=5.5, ha="left", va="center", color="#444444")

    # title and legend
    c = cost(spec, hw)
    lines = [title if title is not None else (spec.name or "architecture")]
    summary = f"{format_macs(c.macs)} MACs, {c.params / 1e6:.3g} M params at {hw[0]}×{hw[1]}"
    if supernet is not None:
        sc = cost(supernet, hw)
        summary += f"  (supernet: {format_macs(sc.macs)} MACs, {sc.params / 1e6:.3g} M params)"
    lines.append(summary)
    fig.suptitle("\n".join(lines), fontsize=10)

    handles: list[Patch | Line2D] = [
        Patch(color=_kernel_colour(k, extra), label=f"{k}×{k} channels") for k in sorted(kernels_seen | {3, 5, 7})
    ]
    if any_queries or any(g.num_queries for g in ghosts.values()):
        handles.append(Patch(color=QUERY_COLOUR, label="transformer queries"))
    if ghosts:
        handles.append(Patch(facecolor=_GHOST_FILL, edgecolor=_GHOST_EDGE, ls="--", label="supernet capacity"))
    if any_identity:
        handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec="#333333", label="identity (no conv)"))
    if any_shortcut:
        handles.append(Line2D([], [], marker="s", ls="", mfc="white", mec="#333333", label="1×1 shortcut only"))
    handles.append(Line2D([], [], ls="", marker="$↓$", color="#555555", label="stride 2 / ↑ upsampled"))
    ncol = len(handles) if width >= 20 else (len(handles) + 1) // 2
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=7, frameon=False)

    _write_atomically(fig, out_path, dpi)
    return out_path


__all__ = ["KERNEL_COLOURS", "QUERY_COLOUR", "plot_architecture"]
