"""Progressive shrinking: decide which units are alive and physically remove the others (spec §4.5).

A *keep* decision is a ``{block path: BlockKeep}`` dict of boolean masks over a block's hidden channels
(``dw_bn`` order) and transformer queries. :func:`shrink` turns a model and a keep decision into a new
spec, a new model built from it with weights copied from the old one, and *index maps* that say, for
every parameter and buffer of the new model, which old tensor and which indices it comes from; the same
maps remap the optimizer state (:func:`remap_optimizer`). An EMA shadow has the model's spec, so
``shrink(ema.module, spec, keep)`` gives the new shadow (``ModelEma.replace_module``).

What is removed:

- dead channels: rows of ``expand`` and entries of ``expand_bn``, depthwise filters and ``dw_bn``
  entries, columns of ``project``; kernel groups left without channels; a block left without channels
  keeps only its shortcut (identity or grouped 1×1), its transformer and ``empty_bias``;
- dead queries: rows of the transformer's ``projector``, entries of ``input_norm``, rows of
  ``query_embed``, columns of ``reverse``; a transformer left without queries is removed.

Constant folding keeps eval outputs unchanged: a channel with γ = 0 outputs the constant ``act(β)``
after ``dw_bn`` in eval mode, which reaches the projection as ``W_proj[:, dead] @ act(β_dead)``; that
vector is subtracted from ``project_bn.running_mean`` (in training mode BatchNorm removes a constant
anyway). A block that loses all its channels gets the eval output of ``project_bn`` for that constant
in ``empty_bias``. A transformer without queries would output the eval-mode constant of its
``reverse_norm`` (β − γ·μ/σ); it is added to ``project_bn.bias`` (or ``empty_bias``). For channels
whose γ is small but not 0 (below the threshold, or chosen by a budget) the folding is the first-order
approximation γ → 0. Removing some queries of a transformer is not output-preserving (the others attend
to them); the result equals the transformer sliced to its alive queries.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from hrnas.search.units import as_hrnet, read_factors, search_blocks
from hrnas.space.layers import SearchBlock
from hrnas.space.network import block_modules, build_model
from hrnas.space.spec import BlockSpec, NetSpec
from hrnas.utils.distributed import unwrap_model

__all__ = [
    "BlockKeep",
    "IndexMap",
    "Keep",
    "alive_masks",
    "complete_keep",
    "keep_all",
    "keep_from_lists",
    "keep_to_lists",
    "kept_spec",
    "rebind_scheduler",
    "remap_optimizer",
    "remap_state",
    "shrink",
]

MODES = ("ema_and_current", "ema", "current")
_BN_VECTORS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class BlockKeep:
    """Which units of a block survive: ``channels`` bool (H,) in ``dw_bn`` order (H = the block's hidden
    channels as built, empty kernel groups excluded), ``queries`` bool (n,) or None without transformer."""

    channels: Tensor
    queries: Tensor | None


Keep = dict[str, BlockKeep]


@dataclass(frozen=True)
class IndexMap:
    """How a tensor of the new model is obtained from the old model.

    ``source`` is the old parameter/buffer name (None: the value is computed by the shrink, e.g. a new
    ``empty_bias``, and nothing can be remapped). ``index[d]`` is a 1-d int64 tensor selecting entries
    of dimension ``d`` (None, or a missing trailing entry, = every entry).
    """

    source: str | None
    index: tuple[Tensor | None, ...] = ()

    def apply(self, tensor: Tensor) -> Tensor:
        """The selected entries of ``tensor`` (an old-model-shaped tensor) as a new tensor."""
        out = tensor
        for dim, idx in enumerate(self.index):
            if idx is not None:
                out = out.index_select(dim, idx.to(out.device))
        return out.clone() if out is tensor else out


# --- keep decisions ----------------------------------------------------------------------------------


def keep_all(model: nn.Module, spec: NetSpec) -> Keep:
    """A keep decision that removes nothing (CPU masks)."""
    out: Keep = {}
    for path, module in search_blocks(model, spec).items():
        q = None if module.transformer is None else torch.ones(module.spec.num_queries, dtype=torch.bool)
        out[path] = BlockKeep(torch.ones(module.spec.total_hidden, dtype=torch.bool), q)
    return out


@torch.no_grad()
def alive_masks(
    model: nn.Module,
    spec: NetSpec,
    threshold: float = 1e-3,
    ema_model: nn.Module | None = None,
    mode: str = "ema_and_current",
) -> Keep:
    """The units with ``|γ| > threshold`` (spec §4.5), as CPU bool masks.

    ``mode``: ``current`` reads ``model``; ``ema`` reads ``ema_model``; ``ema_and_current`` keeps a unit
    alive in either (the paper's rule during the search). ``ema_model`` must have ``spec`` too. Nothing is
    mutated.

    Raises:
        ValueError: unknown mode, or a mode that needs ``ema_model`` without one.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    if mode != "current" and ema_model is None:
        raise ValueError(f"mode {mode!r} needs ema_model")
    sources = []
    if mode in ("current", "ema_and_current"):
        sources.append(read_factors(model, spec))
    if mode in ("ema", "ema_and_current"):
        assert ema_model is not None
        sources.append(read_factors(ema_model, spec))
    out: Keep = {}
    for path in sources[0]:
        channels = torch.zeros(sources[0][path].channels.numel(), dtype=torch.bool)
        queries = None
        for factors in sources:
            f = factors[path]
            channels |= (f.channels > threshold).cpu()
            if f.queries is not None:
                alive = (f.queries > threshold).cpu()
                queries = alive if queries is None else queries | alive
        out[path] = BlockKeep(channels, queries)
    return out


def keep_to_lists(keep: Mapping[str, BlockKeep]) -> dict[str, dict[str, list[bool] | None]]:
    """A plain (picklable, JSON-able) form ``{path: {"channels": [bool], "queries": [bool] | None}}``."""
    return {
        path: {
            "channels": [bool(v) for v in k.channels.tolist()],
            "queries": None if k.queries is None else [bool(v) for v in k.queries.tolist()],
        }
        for path, k in keep.items()
    }


def keep_from_lists(data: Mapping[str, Mapping[str, Any]]) -> Keep:
    """Inverse of :func:`keep_to_lists` (CPU bool masks)."""
    out: Keep = {}
    for path, entry in data.items():
        queries = entry.get("queries")
        out[path] = BlockKeep(
            torch.tensor(list(entry["channels"]), dtype=torch.bool),
            None if queries is None else torch.tensor(list(queries), dtype=torch.bool),
        )
    return out


def complete_keep(spec: NetSpec, keep: Mapping[str, BlockKeep]) -> Keep:
    """``keep`` validated against ``spec`` (mask sizes), as CPU bool masks, with every block of ``spec``
    present (missing blocks keep everything). Raises ``ValueError`` naming the offending block."""
    blocks = dict(spec.blocks())
    unknown = sorted(set(keep) - set(blocks))
    if unknown:
        raise ValueError(f"keep names blocks that the spec does not have: {unknown[:5]}")
    out = {}
    for path, block in blocks.items():
        built = block.without_empty_groups()
        k = keep.get(path)
        if k is None:
            q = torch.ones(built.num_queries, dtype=torch.bool) if built.num_queries else None
            out[path] = BlockKeep(torch.ones(built.total_hidden, dtype=torch.bool), q)
            continue
        channels = torch.as_tensor(k.channels).to(device="cpu", dtype=torch.bool).flatten()
        if channels.numel() != built.total_hidden:
            raise ValueError(
                f"{path}: channel mask has {channels.numel()} entries, the block has "
                f"{built.total_hidden} hidden channels"
            )
        queries = None
        if built.num_queries:
            if k.queries is None:
                raise ValueError(f"{path}: the block has {built.num_queries} queries but the keep mask has none")
            queries = torch.as_tensor(k.queries).to(device="cpu", dtype=torch.bool).flatten()
            if queries.numel() != built.num_queries:
                raise ValueError(
                    f"{path}: query mask has {queries.numel()} entries, the block has {built.num_queries} queries"
                )
        elif k.queries is not None and torch.as_tensor(k.queries).numel() > 0:
            raise ValueError(f"{path}: the block has no transformer but the keep mask has queries")
        out[path] = BlockKeep(channels, queries)
    return out


def _kept_block(built: BlockSpec, k: BlockKeep) -> tuple[BlockSpec, list[tuple[int, Tensor]]]:
    """The block spec after ``k`` and, per new kernel group, (old group index, kept local indices)."""
    kernels, hidden, groups = [], [], []
    start = 0
    for g, (ks, h) in enumerate(zip(built.kernel_sizes, built.hidden, strict=True)):
        local = k.channels[start : start + h].nonzero().flatten()
        start += h
        if local.numel() > 0:
            kernels.append(ks)
            hidden.append(int(local.numel()))
            groups.append((g, local))
    queries = 0 if k.queries is None else int(k.queries.sum())
    return replace(built, kernel_sizes=tuple(kernels), hidden=tuple(hidden), num_queries=queries), groups


def kept_spec(spec: NetSpec, keep: Mapping[str, BlockKeep]) -> NetSpec:
    """The spec of the network that keeps exactly the units of ``keep`` (blocks missing from ``keep``
    are unchanged). Kernel groups without channels are dropped from ``kernel_sizes``."""
    keep = complete_keep(spec, keep)
    new_blocks = {path: _kept_block(b.without_empty_groups(), keep[path])[0] for path, b in spec.blocks()}
    return spec.replace_blocks(new_blocks)


# --- the shrink ----------------------------------------------------------------------------------------


def _bn_maps(src: str, dst: str, idx: Tensor | None) -> dict[str, IndexMap]:
    out = {f"{dst}.{a}": IndexMap(f"{src}.{a}", (idx,)) for a in _BN_VECTORS}
    out[f"{dst}.num_batches_tracked"] = IndexMap(f"{src}.num_batches_tracked")
    return out


def _block_maps(
    src: str, dst: str, old: SearchBlock, new: SearchBlock, k: BlockKeep, groups: list[tuple[int, Tensor]]
) -> dict[str, IndexMap]:
    """Index maps of the tensors of block ``new`` (names prefixed ``dst.``) from ``old`` (``src.``)."""
    maps: dict[str, IndexMap] = {}
    names = [n for n, _ in new.named_parameters(prefix=dst)] + [n for n, _ in new.named_buffers(prefix=dst)]
    for name in names:  # default: the same tensor, unchanged
        maps[name] = IndexMap(src + name[len(dst) :])
    if new.spec.total_hidden > 0:
        ch = k.channels.nonzero().flatten()
        maps[f"{dst}.expand.weight"] = IndexMap(f"{src}.expand.weight", (ch,))
        maps.update(_bn_maps(f"{src}.expand_bn", f"{dst}.expand_bn", ch))
        for j, (g, local) in enumerate(groups):
            for p, _ in new.depthwise.convs[j].named_parameters():
                maps[f"{dst}.depthwise.convs.{j}.{p}"] = IndexMap(f"{src}.depthwise.convs.{g}.{p}", (local,))
        maps.update(_bn_maps(f"{src}.dw_bn", f"{dst}.dw_bn", ch))
        maps[f"{dst}.project.weight"] = IndexMap(f"{src}.project.weight", (None, ch))
    elif old.spec.total_hidden > 0:
        maps[f"{dst}.empty_bias"] = IndexMap(None)
    if new.transformer is not None:
        assert k.queries is not None
        q = k.queries.nonzero().flatten()
        t_src, t_dst = f"{src}.transformer", f"{dst}.transformer"
        maps[f"{t_dst}.projector.weight"] = IndexMap(f"{t_src}.projector.weight", (q,))
        maps.update(_bn_maps(f"{t_src}.input_norm", f"{t_dst}.input_norm", q))
        maps[f"{t_dst}.query_embed"] = IndexMap(f"{t_src}.query_embed", (q,))
        maps[f"{t_dst}.reverse.weight"] = IndexMap(f"{t_src}.reverse.weight", (None, q))
    return maps


def _bn_eval(bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """Eval-mode BatchNorm of a per-channel vector ``x`` (C,)."""
    return bn.weight * (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) + bn.bias


@torch.no_grad()
def _fold_constants(old: SearchBlock, new: SearchBlock, k: BlockKeep) -> None:
    """Carry the eval-mode constants of removed channels / a removed transformer into ``new``."""
    if old.spec.total_hidden > 0:
        dead = ~k.channels.to(old.dw_bn.weight.device)
        if bool(dead.any()):
            const = old.act2(old.dw_bn.bias[dead].clone())  # eval output of a channel with γ = 0
            shift = old.project.weight[:, dead, 0, 0] @ const
        else:
            shift = torch.zeros_like(old.project_bn.running_mean)
        if new.spec.total_hidden > 0:
            new.project_bn.running_mean.sub_(shift.to(new.project_bn.running_mean))
        else:
            new.empty_bias.copy_(_bn_eval(old.project_bn, shift))
    if old.transformer is not None and new.transformer is None:
        rn = old.transformer.reverse_norm
        const = _bn_eval(rn, torch.zeros_like(rn.running_mean))
        target = new.project_bn.bias if new.spec.total_hidden > 0 else new.empty_bias
        target.add_(const.to(target))


def _state(model: nn.Module) -> dict[str, Tensor]:
    out = dict(model.named_parameters())
    out.update(dict(model.named_buffers()))
    return out


@torch.no_grad()
def shrink(
    model: nn.Module, spec: NetSpec, keep: Mapping[str, BlockKeep]
) -> tuple[NetSpec, nn.Module, dict[str, IndexMap]]:
    """Remove the units that ``keep`` marks False; return ``(new_spec, new_model, index_maps)``.

    Args:
        model: an HRNet built from ``spec`` (possibly DDP-wrapped), or a task model around one that
            exposes it as ``model.hrnet`` and rebuilds itself with ``model.with_hrnet(new_hrnet)``
            (sharing its other modules, e.g. a detector's PillarVFE and anchor head); not modified.
        spec: its spec.
        keep: masks per block path (:func:`alive_masks`, :func:`~hrnas.search.budget.prune_to_budget`);
            blocks not in ``keep`` keep every unit.

    Returns:
        new_spec: :func:`kept_spec` of ``spec`` and ``keep``.
        new_model: ``build_model(new_spec)`` (wrapped by ``with_hrnet`` for a task model) on the old
            model's device and floating dtype, in the old model's train/eval mode, with every parameter
            and buffer copied (sliced) from ``model``, ``requires_grad`` as in the old parameter, and the
            constants of removed units folded (module docstring): with γ = 0 on every removed channel and
            all queries kept, its eval outputs equal the old model's.
        index_maps: ``{new name: IndexMap}`` for every parameter and buffer name of the new HRNet (names
            relative to the HRNet, as :func:`remap_optimizer` reads them).

    Raises:
        ValueError: the model does not match ``spec`` or a mask has the wrong size.
    """
    outer = unwrap_model(model)
    old_model = as_hrnet(model)
    old_blocks = search_blocks(old_model, spec)
    keep = complete_keep(spec, keep)
    new_spec = kept_spec(spec, keep)
    first = next(old_model.parameters())
    new_model = build_model(new_spec, init="default").to(device=first.device, dtype=first.dtype)
    new_blocks = block_modules(new_model)
    old_names = {id(m): n for n, m in old_model.named_modules()}
    new_names = {id(m): n for n, m in new_model.named_modules()}

    maps: dict[str, IndexMap] = {}
    for path, old in old_blocks.items():
        new = new_blocks[path]
        _, groups = _kept_block(old.spec, keep[path])
        maps.update(_block_maps(old_names[id(old)], new_names[id(new)], old, new, keep[path], groups))
    old_state = _state(old_model)
    new_state = _state(new_model)
    for name in new_state:
        maps.setdefault(name, IndexMap(name))
    for name, target in new_state.items():
        m = maps[name]
        if m.source is None:
            continue
        if m.source not in old_state:
            raise RuntimeError(f"shrink: {name} maps to {m.source}, which the old model does not have")
        value = m.apply(old_state[m.source])
        if value.shape != target.shape:
            raise RuntimeError(
                f"shrink: {name} has shape {tuple(target.shape)} but its source {m.source} gives {tuple(value.shape)}"
            )
        target.copy_(value)
    old_params = dict(old_model.named_parameters())
    for name, param in new_model.named_parameters():
        src = maps[name].source
        if src in old_params:
            param.requires_grad_(old_params[src].requires_grad)
    for path, old in old_blocks.items():
        _fold_constants(old, new_blocks[path], keep[path])
    new_model.train(old_model.training)
    if outer is not old_model:
        wrapped = outer.with_hrnet(new_model)
        wrapped.train(outer.training)
        return new_spec, wrapped, maps
    return new_spec, new_model, maps


# --- optimizer state -----------------------------------------------------------------------------------


def remap_state(state: Mapping[str, Any], param: Tensor, index_map: IndexMap) -> dict[str, Any]:
    """One parameter's optimizer state sliced like the parameter: tensors shaped like ``param`` go through
    ``index_map``; other tensors (``step``) are cloned; other values are copied."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if torch.is_tensor(value):
            out[key] = index_map.apply(value) if value.shape == param.shape and value.ndim > 0 else value.clone()
        else:
            out[key] = copy.deepcopy(value)
    return out


def remap_optimizer(
    old_optimizer: torch.optim.Optimizer,
    old_model: nn.Module,
    new_model: nn.Module,
    index_maps: Mapping[str, IndexMap],
) -> torch.optim.Optimizer:
    """A new optimizer of the same class over ``new_model`` with the old state sliced by ``index_maps``.

    Every parameter of ``new_model`` whose source parameter was in a group of ``old_optimizer`` joins
    that group (old order kept); groups keep all their hyper-parameters (``lr``, ``initial_lr``,
    ``betas``, ``weight_decay``, ``name``…). Per-parameter state (``momentum_buffer``, ``square_avg``,
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``grad_avg``…) is sliced, ``step`` is copied.
    Parameters of removed units leave the optimizer; parameters of the optimizer that are not in
    ``old_model`` are carried over as they are. The old optimizer is not modified, but an LR scheduler
    still points to it: see :func:`rebind_scheduler`.

    Works for the stock ``torch.optim`` classes (SGD, RMSprop, Adam, AdamW, …) whose state entries
    are per-parameter tensors or scalars.
    """
    old_net, new_net = as_hrnet(old_model), as_hrnet(new_model)
    old_names = {id(p): n for n, p in old_net.named_parameters()}
    new_of_old: dict[str, tuple[str, Tensor]] = {}
    for name, param in new_net.named_parameters():
        m = index_maps.get(name)
        if m is None:
            raise ValueError(f"index_maps has no entry for the new parameter {name}")
        if m.source is not None:
            new_of_old[m.source] = (name, param)
    groups = []
    moved: list[tuple[Tensor, Tensor, str | None]] = []  # (old param, new param, new name)
    for group in old_optimizer.param_groups:
        params = []
        for p in group["params"]:
            old_name = old_names.get(id(p))
            if old_name is None:  # not a model parameter: carried as is
                params.append(p)
                moved.append((p, p, None))
            elif old_name in new_of_old:
                new_name, new_p = new_of_old[old_name]
                params.append(new_p)
                moved.append((p, new_p, new_name))
        entry = {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
        entry["params"] = params
        groups.append(entry)
    # every hyper-parameter is set in the groups; the fused/foreach choice is also a constructor flag
    flags = {k: True for k in ("fused", "foreach") if old_optimizer.defaults.get(k)}
    new_optimizer = type(old_optimizer)(groups, **flags)
    new_optimizer.defaults = copy.deepcopy(old_optimizer.defaults)
    for old_p, new_p, new_name in moved:
        state = old_optimizer.state.get(old_p)
        if not state:
            continue
        if new_name is None:
            new_optimizer.state[new_p] = {
                k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()
            }
        else:
            new_optimizer.state[new_p] = remap_state(state, old_p, index_maps[new_name])
    return new_optimizer


def rebind_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> None:
    """Point an LR scheduler (stock ``torch.optim.lr_scheduler``) at the remapped ``optimizer``.

    The scheduler's own state (step count, base lrs) is kept; the groups' hyper-parameters were carried
    over by :func:`remap_optimizer`, so the schedule continues where it was. Mutates ``scheduler``.
    """
    if len(optimizer.param_groups) != len(scheduler.optimizer.param_groups):
        raise ValueError("the remapped optimizer has a different number of parameter groups")
    scheduler.optimizer = optimizer
