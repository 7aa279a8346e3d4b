"""Typed run configs: dataclasses loaded from YAML with strict keys (HR-NAS recipes, spec §5).

A run is described by one :class:`RunConfig` made of seven sections (``task``, ``model``, ``data``,
``optim``, ``schedule``, ``train``, ``search``). The ``task`` section belongs to the task it names:
``task.name`` picks a registered task (:mod:`hrnas.tasks.base`) and the rest of the section is read into
that task's options dataclass (``Task.options``, a :class:`~hrnas.tasks.options.TaskOptions`), so
``cfg.task`` is the task's own options object. Configs are read from YAML files or from the presets
shipped in ``hrnas/configs/<name>.yaml`` and validated field by field:

- an unknown key is an error that names its dotted path, where it was written and the valid keys:
  ``cityscapes.yaml:14: unknown key 'optim.lrr' (known: name, lr, momentum, ...)``;
- a value of the wrong type is an error naming the key and the expected type. Ints are accepted for
  floats, strings such as ``1e-3`` (which YAML 1.1 reads as text) are parsed as floats, and MAC budgets
  accept human sizes (``300M``, ``1.4G``);
- malformed YAML is an error naming the file and line;
- a key that an older layout used and a task's options replaced (``TaskOptions.legacy_keys``) is an
  error saying what to rename it to.

A config may start with ``base: <preset name or relative path>`` to inherit another one; mappings are
merged key by key, everything else (lists included) is replaced. ``--set a.b=c`` overrides are applied
last; their value is read with ``yaml.safe_load`` and then type-checked like any other value.

Conventions shared by every section: ``steps`` are optimizer steps (not epochs); ``data.batch_size`` is
the *global* batch summed over all processes and ``optim.lr`` is the learning rate for that batch, so a
config means the same thing on any number of GPUs; MACs are multiply-accumulates (1 MAC = 2 FLOPs).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hrnas.space.cost import check_input_size
from hrnas.space.spec import SpecError
from hrnas.tasks.base import DEFAULT_TASK, TaskError, task_class, task_classes, task_names
from hrnas.tasks.options import TaskOptions, option
from hrnas.utils.atomic import atomic_write_text
from hrnas.utils.errors import HrnasError

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "SearchConfig",
    "TrainConfig",
    "apply_overrides",
    "check_input_sizes",
    "config_from_dict",
    "config_to_dict",
    "list_presets",
    "load_config",
    "parse_macs",
    "preset_path",
    "save_config",
    "update_config",
]


class ConfigError(HrnasError, ValueError):
    """A run config is malformed; the message says where (file:line or ``--set``) and which key."""


@dataclass(frozen=True)
class ModelConfig:
    """Which network is built.

    Attributes:
        spec: a zoo name or the path of a spec JSON file (a supernet to search, or a searched network
            to retrain); resolved by the model zoo, not here.
        transformer: attach the lightweight transformers (spec §3) to the searching blocks that the spec
            allows; ``false`` builds the CNN-only space.
        num_queries: number of transformer queries of every block that has a transformer in the spec
            (64 in the paper's code); 0 keeps the spec's own counts.
        activation: ``relu`` (search configs) | ``swish`` (x·sigmoid(x), the ImageNet retrain config).
        dropout: dropout probability before the classifier (0.2 search, 0.28 retrain); null = keep the
            spec's own value.
        init: ``mnas`` re-initialisation (conv N(0, sqrt(2/fan_out)), linear U(±1/sqrt(fan_out)), BN γ=1,
            β=0; spec §2.1) | ``default`` = the layers' and heads' own initialisation.
    """

    spec: str = ""
    transformer: bool = True
    num_queries: int = option(0, minimum=0)
    activation: str = option("relu", choices=("relu", "swish"))
    dropout: float | None = option(None, minimum=0.0, maximum=1.0)
    init: str = option("mnas", choices=("mnas", "default"))


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is batched and augmented.

    Attributes:
        format: dataset reader, one of the task's ``data_formats`` (each task package documents its
            own; ``demo`` = the generated demo scenes, the default).
        root: dataset root directory ("" = the reader's default location, where it has one).
        train_split: name of the training split (e.g. ``train``, ``train2017``).
        val_split: name of the validation split (e.g. ``val``, ``val2017``).
        crop_size: ``[h, w]`` network input size in training (each task says how it makes it: a random
            crop, a random-resized crop, a box resized, a grid of pillars).
        base_size: short side, in pixels, of a task's reference resize (e.g. before random scaling and at
            evaluation, or before an evaluation centre crop); null = keep the image size.
        scale_range: ``[lo, hi]`` range of the task's random scale augmentation (an image rescale, a crop
            area fraction or a box scale, as the task documents).
        batch_size: *global* training batch summed over all processes (each process loads
            ``batch_size // world_size``); ``optim.lr`` and the EMA decay refer to it.
        eval_batch_size: global evaluation batch (split the same way).
        workers: data-loading worker processes per training process.
        cache_mb: decoded training samples kept in memory, in MiB (0 = decode every sample on every
            read). It fills in the order samples are first read and then admits only what still fits.
            Used with ``workers`` 0 (worker processes live for one epoch and read each sample once) by
            the segmentation readers, where decoding is a large share of a CPU step.
    """

    format: str = "demo"
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, ...] = option((512, 512), length=2, minimum=1)
    base_size: int | None = option(None, minimum=1)
    scale_range: tuple[float, ...] = option((0.5, 2.0), length=2, minimum=0.0)
    batch_size: int = option(16, minimum=1)
    eval_batch_size: int = option(16, minimum=1)
    workers: int = option(4, minimum=0)
    cache_mb: int = option(1024, minimum=0)


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer (built by :func:`hrnas.engine.optim.build_optimizer`).

    Attributes:
        name: ``sgd`` | ``rmsprop`` | ``adamw`` (stock ``torch.optim`` classes).
        lr: peak learning rate for the global batch ``data.batch_size``.
        momentum: SGD / RMSprop momentum (OneCycle may cycle it, see ``schedule``).
        weight_decay: decay coefficient; how it is applied depends on ``wd_mode``.
        wd_mode: ``optimizer`` = the optimizer's own (decoupled for AdamW) weight decay on ≥2-d
            parameters, none on 1-d ones (BN/LN/bias) | ``l2_conv_linear`` = the paper's manual L2,
            ``½·wd·Σw²`` over conv/linear weights added to the loss (``optim.l2_penalty``), optimizer
            weight decay 0.
        eps: numerical epsilon of AdamW (1e-3 in the paper's dense recipes, 1e-8 COCO) and of RMSprop,
            where it is TF-style *inside* the square root (1e-3 ImageNet; ``engine.optim`` explains the
            translation to torch's RMSprop).
        betas: AdamW ``[β1, β2]``.
        alpha: RMSprop smoothing constant (TF ``decay``).
        grad_clip: clip the global gradient L2 norm to this value; null = no clipping.
        nesterov: Nesterov momentum for SGD.
    """

    name: str = option("adamw", choices=("sgd", "rmsprop", "adamw"))
    lr: float = option(1e-3, minimum=0.0)
    momentum: float = option(0.9, minimum=0.0, maximum=1.0)
    weight_decay: float = option(0.0, minimum=0.0)
    wd_mode: str = option("optimizer", choices=("optimizer", "l2_conv_linear"))
    eps: float = option(1e-8, minimum=0.0)
    betas: tuple[float, ...] = option((0.9, 0.999), length=2, minimum=0.0, maximum=1.0)
    alpha: float = option(0.9, minimum=0.0, maximum=1.0)
    grad_clip: float | None = option(None, minimum=0.0)
    nesterov: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, stepped once per optimizer step (``engine.schedules``).

    Attributes:
        name: ``cosine`` | ``poly`` | ``onecycle`` | ``step`` | ``exp_staircase`` | ``constant``.
        warmup_steps: linear warm-up length in steps (not used by ``onecycle``, which has its own).
        warmup_start_factor: lr factor at step 0 of the warm-up, rising linearly to 1 at
            ``warmup_steps`` (the ImageNet recipes start at 0.016, i.e. a factor 256/B for a global
            batch B).
        poly_power: exponent of ``poly``: ``(1 - progress) ** poly_power``.
        min_lr_factor: final lr factor of ``cosine`` and ``poly``.
        milestones: steps at which ``step`` multiplies the lr by ``gamma``.
        gamma: decay factor of ``step`` and ``exp_staircase``.
        decay_every: ``exp_staircase`` period in steps (lr ×gamma every ``decay_every`` steps).
        onecycle_pct_start: fraction of the steps spent rising in ``onecycle``.
        onecycle_div_factor: ``onecycle`` starts at ``lr / onecycle_div_factor``.
        onecycle_final_div_factor: ``onecycle`` ends at ``lr / (div_factor · final_div_factor)``.
        onecycle_cycle_momentum: ``onecycle`` also cycles momentum / β1 between 0.95 and 0.85 (torch's
            defaults, as in the paper's dense-task recipes).
    """

    name: str = option("cosine", choices=("cosine", "poly", "onecycle", "step", "exp_staircase", "constant"))
    warmup_steps: int = option(0, minimum=0)
    warmup_start_factor: float = option(0.01, minimum=0.0, maximum=1.0)
    poly_power: float = option(0.9, minimum=0.0)
    min_lr_factor: float = option(0.0, minimum=0.0, maximum=1.0)
    milestones: tuple[int, ...] = option((), minimum=0)
    gamma: float = option(0.1, minimum=0.0)
    decay_every: int = option(0, minimum=0)
    onecycle_pct_start: float = option(0.3, minimum=0.0, maximum=1.0)
    onecycle_div_factor: float = option(25.0, minimum=0.0)
    onecycle_final_div_factor: float = option(1e4, minimum=0.0)
    onecycle_cycle_momentum: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Attributes:
        steps: total optimizer steps.
        eval_every: validate (EMA weights after BN calibration) every this many steps; 0 = only at the end.
        log_every: write metrics every this many steps.
        checkpoint_every: write ``latest`` checkpoint every this many steps; 0 = at evaluations only.
        ema_decay: fixed EMA decay; null = the paper's rule 0.9999^(B/4096) capped by (1+t)/(10+t)
            (spec §4.6, B = ``data.batch_size``).
        bn_calib_batches: training batches used to re-estimate BN statistics before each validation.
        seed: base random seed (each process adds its rank).
        amp: ``auto`` (bf16 autocast when CUDA supports it, otherwise fp32) | ``fp32`` | ``fp16`` | ``bf16``;
            autocast is only used on CUDA.
        channels_last: use the channels-last memory format on CUDA.
        deterministic: request deterministic kernels (slower).
        device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        compile: wrap the model in ``torch.compile``.
    """

    steps: int = option(1000, minimum=1)
    eval_every: int = option(1000, minimum=0)
    log_every: int = option(20, minimum=1)
    checkpoint_every: int = option(1000, minimum=0)
    ema_decay: float | None = option(None, minimum=0.0, maximum=1.0)
    bn_calib_batches: int = option(10, minimum=0)
    seed: int = 1995
    amp: str = option("auto", choices=("auto", "fp32", "fp16", "bf16"))
    channels_last: bool = True
    deterministic: bool = False
    device: str = "auto"
    compile: bool = False


@dataclass(frozen=True)
class SearchConfig:
    """The architecture search: FLOPs-weighted L1 on BN scales and progressive shrinking (spec §4).

    Attributes:
        enabled: run the search (penalty + shrinking); false = plain training of ``model.spec``.
        rho: full weight ρ of the L1 penalty (1.4e-4 seg, 1.8e-4 ImageNet, 1e-6 COCO).
        rho_free_steps: ρ(t) = 0 before this step.
        rho_warmup_steps: step at which ρ(t) reaches ``rho`` after a linear ramp from
            ``rho_free_steps`` (an absolute step, as ``epoch_warmup`` in the paper's code; ≥ free steps).
        threshold: a unit is dead when |γ| ≤ threshold.
        shrink_every: consider a physical shrink every this many steps (after validation in the
            paper); 0 = at evaluations.
        min_saving_macs: shrink only when the dead units would save at least this many MACs (at
            ``penalty_input_size``) — or at the last step. Accepts ``1M``-style sizes.
        target_macs: MAC budget of the searched network at ``penalty_input_size``; null = no target
            (the final size is an outcome of ρ, as in the paper). Accepts ``300M``/``1.4G``. With a
            target the network's MACs follow a geometric path from the supernet (at ``rho_free_steps``)
            to the target (75 % of the way to the last step); ρ is adapted to follow it and the last
            shrink prunes to the target.
        path_tolerance: with ``target_macs``, a shrink that leaves the network more than this fraction
            above the path (the penalty fell behind, e.g. in a short run) also removes the least
            important alive units (|γ| per MAC) down to the path; ``.inf`` = never.
        penalty_input_size: ``[h, w]`` at which unit costs, savings and targets are measured; null = the
            training crop (``data.crop_size``). The paper profiles at 224×224 for every task.
        factor_lr_mult: learning-rate multiplier of the importance factors (the γ of every depthwise
            BN and of every transformer's query BN) during a search. Adaptive optimizers move a
            parameter by about lr per step whatever its gradient, so a short search needs a larger
            rate for the factors to reach the threshold; 1 = the paper's setting.
        decide_on: which γ decide liveness at a shrink: ``ema_and_current`` (kept if alive in either,
            the paper's rule; the last shrink uses the EMA only) | ``ema`` | ``current``.
        target_latency_ms: a latency budget instead of ``target_macs`` (not both): milliseconds of the
            deployed network at batch 1 and ``penalty_input_size``, as the latency table predicts it.
            Units are then priced in milliseconds (:class:`hrnas.space.latency.LatencyCost`) by the
            penalty, the path, the shrinks and the final prune.
        latency_table: the table (``hrnas latency-table``) for ``target_latency_ms``; empty = build one
            for the supernet at the start of the search and keep it as ``latency_table.json`` in the
            run folder (a few minutes on a laptop; a resumed run reads it back).
        latency_runtime: where the searched network will run when the table is built here:
            ``onnxruntime`` | ``torch``.
        latency_threads: intra-op threads of that runtime when the table is built here; 0 = the cores
            this process may use.
    """

    enabled: bool = False
    rho: float = option(0.0, minimum=0.0)
    rho_free_steps: int = option(0, minimum=0)
    rho_warmup_steps: int = option(0, minimum=0)
    threshold: float = option(1e-3, minimum=0.0)
    shrink_every: int = option(0, minimum=0)
    min_saving_macs: int = option(1_000_000, minimum=0, macs=True)
    target_macs: int | None = option(None, minimum=1, macs=True)
    path_tolerance: float = option(0.05, minimum=0.0)
    penalty_input_size: tuple[int, ...] | None = option(None, length=2, minimum=1)
    decide_on: str = option("ema_and_current", choices=("ema_and_current", "ema", "current"))
    factor_lr_mult: float = option(1.0, minimum=0.0)
    target_latency_ms: float | None = option(None, minimum=1e-6)
    latency_table: str = ""
    latency_runtime: str = option("onnxruntime", choices=("onnxruntime", "torch"))
    latency_threads: int = option(0, minimum=0)


def default_task_options() -> TaskOptions:
    """The ``task`` section of a config that names no task: the default task's options, all defaults."""
    return task_class(DEFAULT_TASK).options(name=DEFAULT_TASK)


@dataclass(frozen=True)
class RunConfig:
    """A whole run. Sections are documented on their classes (``task``: the task's options class); build
    one with :func:`load_config`."""

    task: TaskOptions = field(default_factory=default_task_options)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    @property
    def penalty_input_size(self) -> tuple[int, int]:
        """``(h, w)`` at which search costs are measured: ``search.penalty_input_size`` or the crop."""
        size = self.search.penalty_input_size or self.data.crop_size
        return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------------------------------
# MAC sizes

_MACS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")
_MACS_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_macs(value: str | int | float) -> int:
    """Parse a MAC count: an int, an integral float, or a string like ``300M``, ``1.4G``, ``2.5e8``.

    Suffixes K/M/G/T are decimal (10^3, 10^6, 10^9, 10^12), case-insensitive. The result is rounded to
    the nearest integer. Raises ``ValueError`` for anything else (negative values included).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a MAC count: {value!r}")
    if isinstance(value, int):
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        match = _MACS_RE.match(value)
        if not match:
            raise ValueError(f"not a MAC count: {value!r} (use e.g. 300M, 1.4G, 2.5e8)")
        number = float(match.group(1)) * _MACS_UNITS[match.group(2).lower()]
    else:
        raise ValueError(f"not a MAC count: {value!r}")
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"not a MAC count: {value!r}")
    return int(round(number))


# ----------------------------------------------------------------------------------------------------
# Reading YAML with positions


class _Source:
    """Where each dotted key of a merged raw config was written (``file:line`` or ``--set k=v``)."""

    def __init__(self) -> None:
        self.where: dict[str, str] = {}
        self.default = "config"

    def of(self, path: str) -> str:
        """Where ``path`` was written: the key itself, else a key under it (an unknown section that a
        ``--set a.b=c`` created is blamed on that argument), else its nearest enclosing key, else the
        config's default source."""
        path = path.split("[", 1)[0]
        if path not in self.where:
            inner = [where for key, where in self.where.items() if key.startswith(path + ".")]
            if inner:
                return inner[-1]
        while path:
            if path in self.where:
                return self.where[path]
            path = path.rpartition(".")[0]
        return self.default


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read one YAML mapping; return it with the ``file:line`` of every dotted key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: malformed YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError(f"{path}: empty file (a config is a mapping of sections, e.g. 'base: demo_seg' or "
                          "'model: {spec: hrnas_demo_supernet}')")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a config must be a mapping of sections, got {type(data).__name__}")
    where: dict[str, str] = {}
    _node_positions(node, "", str(path), where)
    return data, where


def _node_positions(node: Any, prefix: str, filename: str, out: dict[str, str]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = str(key_node.value)
        dotted = f"{prefix}{key}"
        where = f"{filename}:{key_node.start_mark.line + 1}"
        if key in seen:
            raise ConfigError(f"{where}: duplicate key '{dotted}'")
        seen.add(key)
        out[dotted] = where
        _node_positions(value_node, dotted + ".", filename, out)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into a copy of ``base``: mappings key by key, any other value replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def list_presets() -> list[str]:
    """Names of the presets shipped in ``hrnas/configs`` (sorted)."""
    folder = resources.files("hrnas").joinpath("configs")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    """Path of the preset ``name``; ``ConfigError`` listing the known presets if there is none."""
    candidate = resources.files("hrnas").joinpath("configs", f"{name}.yaml")
    if not candidate.is_file():
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(list_presets())})")
    return Path(str(candidate))


def _looks_like_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or os.sep in name or "/" in name or Path(name).is_file()


def _resolve(name: str, relative_to: Path | None) -> Path:
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to.parent / path
        return path
    return preset_path(name)


def _load_raw(path: Path, chain: tuple[Path, ...], src: _Source) -> dict[str, Any]:
    """Read ``path`` and, recursively, its ``base``; return the merged raw mapping."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: 'base' inherits in a cycle: {cycle}")
    data, where = _read_yaml(path)
    base_name = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base_name is not None:
        if not isinstance(base_name, str) or not base_name:
            raise ConfigError(f"{where.get('base', path)}: base: expected a preset name or a path, "
                              f"got {_describe(base_name)}")
        try:
            base_path = _resolve(base_name, path)
        except ConfigError as err:
            raise ConfigError(f"{where['base']}: base: {err}") from None
        merged = _load_raw(base_path, (*chain, resolved), src)
    where.pop("base", None)
    src.where.update(where)
    return _merge(merged, data)


# ----------------------------------------------------------------------------------------------------
# Overrides


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. optim.lr=0.1")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{where}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), Mapping):
        node[last] = _merge(dict(node[last]), value)
    else:
        node[last] = value


def _apply_raw_overrides(raw: dict[str, Any], overrides: Iterable[str], src: _Source) -> dict[str, Any]:
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of KEY=VALUE strings, got the string {overrides!r}")
    for item in overrides:
        key, value = _parse_override(item)
        where = f"--set {item}"
        _set_dotted(raw, key, value, where)
        for known in [k for k in src.where if k == key or k.startswith(key + ".")]:
            del src.where[known]
        src.where[key] = where
    return raw


# ----------------------------------------------------------------------------------------------------
# Typed construction


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _scalar(value: Any, tp: type, path: str, meta: Mapping[str, Any], src: _Source) -> Any:
    def fail(extra: str = "") -> ConfigError:
        expected = "MAC count (int or e.g. 300M, 1.4G)" if meta.get("macs") else tp.__name__
        if meta.get("choices"):
            expected += f" (one of {', '.join(meta['choices'])})"
        return ConfigError(f"{src.of(path)}: {path}: expected {expected}, got {_describe(value)}{extra}")

    if meta.get("macs"):
        try:
            return parse_macs(value)
        except ValueError:
            raise fail() from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        number: float | None = None
        if isinstance(value, float):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is not None and number.is_integer():
            return int(number)
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        hint = ""
        if isinstance(value, bool):
            hint = " (YAML reads unquoted on/off/yes/no/true/false as booleans; quote the value)"
        raise fail(hint)
    raise TypeError(f"{path}: unsupported config field type {tp!r}")  # pragma: no cover


def _check_value(value: Any, path: str, meta: Mapping[str, Any], src: _Source) -> None:
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{src.of(path)}: {path}: {value!r} is not one of {', '.join(choices)}")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{src.of(path)}: {path}: {value!r} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{src.of(path)}: {path}: {value!r} is above the maximum {hi}")


def _coerce(value: Any, tp: Any, path: str, meta: Mapping[str, Any], src: _Source) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) != 1:  # pragma: no cover - not used by the sections
            raise TypeError(f"{path}: unsupported union {tp!r}")
        return _coerce(value, args[0], path, meta, src)
    if value is None:
        raise ConfigError(f"{src.of(path)}: {path}: expected {_type_name(tp)}, got null")
    if tp is TaskOptions:
        return _task_options(value, path, src)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{src.of(path)}: {path}: expected a mapping of keys, got {_describe(value)}")
        return _build(tp, value, path + ".", src)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{src.of(path)}: {path}: expected {_type_name(tp)}, got {_describe(value)}")
        length = meta.get("length")
        if length is not None and len(value) != length:
            raise ConfigError(f"{src.of(path)}: {path}: expected {length} entries, got {len(value)}")
        item_meta = {k: v for k, v in meta.items() if k != "length"}
        items = []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if item is None:
                raise ConfigError(f"{src.of(path)}: {item_path}: expected {_type_name(item_tp)}, got null")
            coerced = _scalar(item, item_tp, item_path, item_meta, src)
            _check_value(coerced, item_path, item_meta, src)
            items.append(coerced)
        return tuple(items)
    coerced = _scalar(value, tp, path, meta, src)
    _check_value(coerced, path, meta, src)
    return coerced


def _task_options(value: Any, path: str, src: _Source) -> TaskOptions:
    """The ``task`` section read strictly into the options class of the task it names."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{src.of(path)}: {path}: expected a mapping of keys, got {_describe(value)}")
    name = value.get("name", DEFAULT_TASK)
    if not isinstance(name, str):
        raise ConfigError(f"{src.of(path + '.name')}: {path}.name: expected str, got {_describe(name)}")
    try:
        options = task_class(name).options
    except TaskError:
        raise ConfigError(
            f"{src.of(path + '.name')}: {path}.name: {name!r} is not one of {', '.join(task_names())}"
        ) from None
    return _build(options, {**value, "name": name}, path + ".", src)


def _check_legacy_keys(raw: Mapping[str, Any], src: _Source) -> None:
    """A one-line error for a key that a task's options replaced (``TaskOptions.legacy_keys``)."""
    for cls in task_classes():
        for key, advice in cls.options.legacy_keys.items():
            node: Any = raw
            for part in key.split("."):
                if not isinstance(node, Mapping) or part not in node:
                    break
                node = node[part]
            else:
                raise ConfigError(f"{src.of(key)}: {key}: {advice}")


def _upgrade_stored_layout(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's ``run_config``) in the layout before task sections, read as today's.

    That layout stored every field of every task: the keys a task's options replaced
    (``TaskOptions.legacy_keys``, e.g. a whole section or ``data.ann_file``) and the other tasks' fields in
    ``task:``. The replaced keys move into ``task:`` where the stored task's options have a field of that
    name; whatever its options do not know is dropped. A config without any replaced key is returned as it
    is, so files a user writes still get the one-line "moved to ..." errors.
    """
    legacy = [key for cls in task_classes() for key in cls.options.legacy_keys]
    present = [key for key in legacy if _pop_dotted(raw, key, remove=False) is not _MISSING]
    section = raw.get("task")
    if not present or not isinstance(section, Mapping):
        return raw
    try:
        options = task_class(str(section.get("name", DEFAULT_TASK))).options
    except TaskError:
        return raw  # the usual error names the unknown task
    known = {f.name for f in fields(options)}
    task = {k: v for k, v in section.items() if k in known}
    for key in present:
        value = _pop_dotted(raw, key, remove=True)
        moved = value.items() if isinstance(value, Mapping) else [(key.rsplit(".", 1)[-1], value)]
        for name, item in moved:
            if name in known and name not in task and item is not None:
                task[name] = item
    raw["task"] = task
    return raw


_MISSING = object()


def _pop_dotted(raw: dict[str, Any], key: str, remove: bool) -> Any:
    """The value at dotted ``key`` (removed from ``raw`` when ``remove``), or ``_MISSING``."""
    *parents, last = key.split(".")
    node: Any = raw
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    if not isinstance(node, dict) or last not in node:
        return _MISSING
    return node.pop(last) if remove else node[last]


def _build(cls: Any, data: Mapping[str, Any], prefix: str, src: _Source) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for key in data:
        if not isinstance(key, str) or key not in known:
            dotted = f"{prefix}{key}"
            raise ConfigError(f"{src.of(dotted)}: unknown key '{dotted}' (known: {', '.join(known)})")
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            if value is None and dataclasses.is_dataclass(hints[f.name]):
                value = {}
            kwargs[f.name] = _coerce(value, hints[f.name], prefix + f.name, f.metadata, src)
    return cls(**kwargs)


def _validate(cfg: RunConfig, src: _Source) -> None:
    """Checks that involve more than one field."""

    def fail(path: str, message: str) -> ConfigError:
        return ConfigError(f"{src.of(path)}: {path}: {message}")

    sched, search = cfg.schedule, cfg.search
    if sched.name == "onecycle" and sched.warmup_steps:
        raise fail("schedule.warmup_steps", "must be 0 with 'onecycle', which warms up by itself "
                   "(schedule.onecycle_pct_start)")
    if sched.name == "exp_staircase" and sched.decay_every <= 0:
        raise fail("schedule.decay_every", "must be > 0 with 'exp_staircase'")
    if sched.name == "step":
        if not sched.milestones:
            raise fail("schedule.milestones", "must list at least one step with 'step'")
        if list(sched.milestones) != sorted(sched.milestones):
            raise fail("schedule.milestones", f"must be increasing, got {list(sched.milestones)}")
    if search.target_macs is not None and search.target_latency_ms is not None:
        raise fail("search.target_latency_ms", f"{search.target_latency_ms} is set beside search.target_macs="
                   f"{search.target_macs}; a search has one budget (set the other to null)")
    if search.rho_warmup_steps < search.rho_free_steps:
        raise fail("search.rho_warmup_steps", f"{search.rho_warmup_steps} is before search.rho_free_steps="
                   f"{search.rho_free_steps} (it is the step where ρ reaches its full value)")
    lo, hi = cfg.data.scale_range
    if lo > hi:
        raise fail("data.scale_range", f"[{lo}, {hi}] is not increasing")
    formats = task_class(cfg.task.name).data_formats
    if cfg.data.format not in formats:
        raise fail("data.format", f"{cfg.data.format!r} is not one of {', '.join(formats)} "
                   f"(the formats of task {cfg.task.name!r})")
    cfg.task.validate(cfg, fail)


def config_from_dict(
    raw: Mapping[str, Any], overrides: Iterable[str] = (), source: str = "config"
) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a raw mapping (e.g. a checkpoint's ``run_config``).

    ``base`` is not allowed here (there is no file to resolve it against). ``source`` names the origin
    in error messages. Raises ``ConfigError``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(raw).__name__}")
    if "base" in raw:
        raise ConfigError(f"{source}: 'base' is only allowed in config files")
    src = _Source()
    src.default = source
    data = _apply_raw_overrides(_upgrade_stored_layout(_merge({}, raw)), overrides, src)
    _check_legacy_keys(data, src)
    cfg = _build(RunConfig, data, "", src)
    _validate(cfg, src)
    return cfg


def load_config(path_or_preset: str | os.PathLike[str], overrides: Iterable[str] = ()) -> RunConfig:
    """Load a run config from a YAML file or a preset name, apply ``--set`` overrides, validate it.

    Args:
        path_or_preset: a path to a YAML file (anything ending in ``.yaml``/``.yml``, containing a path
            separator, or naming an existing file) or the name of a preset in ``hrnas/configs``.
        overrides: ``"a.b=value"`` strings applied in order after ``base`` inheritance; each value is
            read with ``yaml.safe_load`` (so ``[512, 1024]``, ``null``, ``1e-3`` all work) and
            type-checked.

    Returns:
        The validated, frozen :class:`RunConfig`; fields not given keep their defaults.

    Raises:
        ConfigError: unknown preset or file, malformed YAML (file and line), unknown key (dotted path and
            the known keys), wrong type or value (key and expected type), inconsistent fields.
    """
    name = os.fspath(path_or_preset)
    path = _resolve(name, None)
    src = _Source()
    src.default = str(path)
    raw = _load_raw(path, (), src)
    raw = _apply_raw_overrides(raw, overrides, src)
    _check_legacy_keys(raw, src)
    cfg = _build(RunConfig, raw, "", src)
    _validate(cfg, src)
    return cfg


def check_input_sizes(cfg: RunConfig, spec: Any) -> None:
    """Check the input sizes of ``cfg`` against what the network ``spec`` can take (the config alone cannot:
    the minimum depends on the network). ``data.crop_size`` and, when set, ``search.penalty_input_size``
    must be at least :func:`hrnas.space.cost.min_input_size` on each side.

    Raises :class:`ConfigError` naming the key, its value and the minimum.
    """
    sizes = {"data.crop_size": cfg.data.crop_size, "search.penalty_input_size": cfg.search.penalty_input_size}
    for key, size in sizes.items():
        if size is None:
            continue
        try:
            check_input_size(spec, size, f"{key} {list(size)}")
        except SpecError as err:
            raise ConfigError(str(err)) from None


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain YAML/JSON types (sections → dicts, tuples → lists); inverse of
    :func:`config_from_dict`."""
    return _plain(cfg)


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """A new config with ``"a.b=value"`` overrides applied (same parsing and checks as ``--set``)."""
    return config_from_dict(config_to_dict(cfg), overrides, source="config")


def update_config(cfg: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """A new config with dotted-key changes applied, e.g. ``{"task.num_classes": 19}``; type-checked.

    Use this instead of mutating the (frozen) config, e.g. when the dataset decides ``num_classes``.
    """
    raw = config_to_dict(cfg)
    src = _Source()
    for key, value in changes.items():
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"update {key!r}: expected a dotted key such as optim.lr")
        where = f"update {key}={value!r}"
        _set_dotted(raw, key, _plain(value), where)
        src.where[key] = where
    out = _build(RunConfig, raw, "", src)
    _validate(out, src)
    return out


def save_config(cfg: RunConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically: temp file + ``os.replace``); return the path.

    The file loads back with :func:`load_config` to an equal config.
    """
    text = "# Resolved hrnas run config: every field, after presets, inheritance and overrides.\n"
    text += yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    return atomic_write_text(path, text)
