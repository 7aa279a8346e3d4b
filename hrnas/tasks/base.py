"""What the engine, the command line and the demos need from a task, and the registry of tasks.

A task turns a run config (:class:`hrnas.engine.config.RunConfig`, whose ``task`` section is the task's own
:class:`~hrnas.tasks.options.TaskOptions`) into datasets, a spec whose head fits the data, a network, a loss,
an evaluation, predictions, an export and a cost. Everything above this layer (``hrnas.engine``,
``hrnas.cli``, the demos) calls the methods of :class:`Task`, which have sensible defaults, and never names
a task nor probes what a task can do.

A task is one package ``hrnas/tasks/<task>/`` whose ``__init__`` imports the class decorated with
:func:`register_task`. The registry imports every sub-package of :mod:`hrnas.tasks` on its first lookup, so
adding a task edits no list anywhere; a task defined elsewhere (a test, a user's module) registers itself
when its module is imported.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from hrnas.space.cost import Cost, cost
from hrnas.space.spec import ClassificationHeadSpec, DenseHeadSpec, NetSpec
from hrnas.space.zoo import resolve_spec
from hrnas.tasks.options import TaskOptions
from hrnas.utils.errors import HrnasError

if TYPE_CHECKING:
    from hrnas.export.onnx import CheckedExport

__all__ = [
    "DEFAULT_TASK",
    "CostOption",
    "ModelCost",
    "Task",
    "TaskCommand",
    "TaskError",
    "TaskOptions",
    "get_task",
    "register_task",
    "task_class",
    "task_classes",
    "task_names",
]

DEFAULT_TASK = "segmentation"
"""The task of a run config that does not name one (the demo's)."""


class TaskError(HrnasError, ValueError):
    """The configuration does not fit the task (wrong head, class count, data format...)."""


@dataclass(frozen=True)
class ModelCost:
    """MACs and parameters of the whole network a task builds around a spec.

    Attributes:
        whole: the whole model, what ``hrnas cost`` and ``hrnas evaluate`` report.
        backbone: the searched network alone, where the task wraps it in fixed parts (a detector's
            pillar encoder and anchor head); ``None`` when the spec is the whole model.
        parts: the whole model by part (``{"backbone": ..., "head": ...}``); empty when not split.
    """

    whole: Cost
    backbone: Cost | None = None
    parts: dict[str, Cost] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskCommand:
    """An ``hrnas`` subcommand a task adds (:meth:`Task.cli_commands`).

    Attributes:
        name: the subcommand (``hrnas NAME ...``).
        help: one line for ``hrnas --help``.
        add_arguments: adds the subcommand's arguments to its parser.
        run: runs it with the parsed arguments; returns the exit status.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class CostOption:
    """An option of ``hrnas cost`` that a task's :meth:`Task.model_cost` reads (``--flag VALUE`` is passed
    as the keyword argument ``dest`` when the task claims the spec).

    Attributes:
        flag: the command-line flag, e.g. ``--pillars``.
        dest: the keyword argument of :meth:`Task.model_cost`.
        type: the value's type (``int``, ``float``, ``str``).
        default: the value when the flag is not given.
        help: one line for ``hrnas cost --help``.
        metavar: the value's name in the help.
        minimum: the smallest value accepted (None: no bound); a smaller one is a one-line usage error.
    """

    flag: str
    dest: str
    type: type
    default: Any
    help: str
    metavar: str = "N"
    minimum: float | None = None

    def parse(self, text: str) -> Any:
        """The value of ``text`` (an argparse ``type``): ``ValueError`` when it is not a ``type``,
        ``argparse.ArgumentTypeError`` naming the value and the minimum when it is below ``minimum``."""
        import argparse

        value = self.type(text)
        if self.minimum is not None and value < self.minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {self.minimum}")
        return value


class Task:
    """Base class of every task: subclasses set the class attributes and implement the data and loss hooks.

    Batches are whatever the datasets' :meth:`collate` produces; :meth:`inputs` extracts the image tensor
    ``(B, 3, H, W)``, :meth:`forward` runs the network on a batch and :meth:`loss` scores its output.

    Class attributes:
        name: the registry name, the value of ``task.name`` in a config.
        options: the dataclass of the task's config section (a :class:`TaskOptions` subclass).
        data_formats: the values ``data.format`` may take for this task (the config checks it).
        head_kinds: the spec head kinds the task trains (:meth:`build_spec` checks it).
        metric: the key of :meth:`evaluate`'s result that ranks checkpoints; ``higher_is_better`` its sense.
        cost_options: options of ``hrnas cost`` that :meth:`model_cost` reads.
    """

    name: ClassVar[str] = ""
    options: ClassVar[type[TaskOptions]] = TaskOptions
    data_formats: ClassVar[tuple[str, ...]] = ()
    head_kinds: ClassVar[tuple[str, ...]] = ()
    metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    cost_options: ClassVar[tuple[CostOption, ...]] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # --- data ------------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    def calibration_dataset(self) -> Dataset:
        """Batches for BN calibration (train augmentation, spec §4.6)."""
        return self.train_dataset()

    def collate(self, samples: list[Any]) -> Any:
        return torch.utils.data.default_collate(samples)

    def num_outputs(self) -> int:
        """Classes / heatmaps the head must produce (from the data unless the config says)."""
        raise NotImplementedError

    # --- model -----------------------------------------------------------------------------------
    def build_spec(self, spec_ref: Any = None) -> Any:
        """The spec named by ``model.spec`` (zoo name, JSON file or spec object) adapted to this task's data:
        head kind checked, class count, activation, dropout and query counts from the config."""
        ref = spec_ref if spec_ref is not None else self.cfg.model.spec
        spec = resolve_spec(ref, transformer=self.cfg.model.transformer)
        if not isinstance(spec, NetSpec):
            raise TaskError(f"model.spec: {spec.name or ref!r} is not an HRNet-space spec")
        if spec.head.kind not in self.head_kinds:
            raise TaskError(
                f"model.spec: {spec.name or 'spec'} has a {spec.head.kind} head; task {self.name!r} needs "
                f"{' or '.join(self.head_kinds)}"
            )
        changes: dict[str, Any] = {}
        if self.cfg.model.activation != spec.activation:
            changes["activation"] = self.cfg.model.activation
        n = self.num_outputs()
        head = spec.head
        if isinstance(head, ClassificationHeadSpec):
            if head.num_classes != n:
                head = replace(head, num_classes=n)
            if self.cfg.model.dropout is not None:
                head = replace(head, dropout=self.cfg.model.dropout)
        elif isinstance(head, DenseHeadSpec) and head.num_outputs != n:
            head = replace(head, num_outputs=n)
        if head is not spec.head:
            changes["head"] = head
        if changes:
            spec = replace(spec, **changes)
        nq = self.cfg.model.num_queries
        if nq > 0:
            spec = spec.replace_blocks({p: replace(b, num_queries=nq) for p, b in spec.blocks() if b.num_queries > 0})
        return spec

    def build_model(self, spec: Any, init: str = "mnas") -> nn.Module:
        """The network to train for ``spec`` (used by the trainer, shrink results and checkpoint loading).

        Default: :func:`hrnas.space.network.build_model`. A task whose network wraps the searched HRNet
        (e.g. a detector around a BEV backbone) returns the wrapper; if it exposes the HRNet as
        ``hrnet`` and ``with_hrnet(new)``, the search finds and shrinks it (``hrnas.search.units``).
        """
        from hrnas.space.network import build_model

        return build_model(spec, init=init)

    @classmethod
    def claims_spec(cls, spec: Any) -> bool:
        """Whether this task's network is built around ``spec``'s kind, so that :meth:`model_cost` of this
        task (not the bare network's cost) prices it; ``hrnas cost`` asks every task. Default: no."""
        return False

    @classmethod
    def model_cost(cls, spec: Any, input_size: tuple[int, int], **options: Any) -> ModelCost:
        """MACs and parameters of the whole model this task builds around ``spec`` for an ``input_size``
        ``(H, W)`` input, with the backbone's beside it where the task wraps one. ``options`` are the
        task's :attr:`cost_options`. Default: the spec is the whole model (:func:`hrnas.space.cost.cost`)."""
        return ModelCost(whole=cost(spec, input_size))

    def inputs(self, batch: Any) -> Tensor:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The model's output for a batch already on the device: ``model(self.inputs(batch))`` by default;
        tasks whose network does not take one image tensor override this."""
        return model(self.inputs(batch))

    def to_device(self, batch: Any, device: torch.device, channels_last: bool) -> Any:
        """Move a batch to ``device``; images in channels_last when asked."""

        def move(x: Any) -> Any:
            if isinstance(x, Tensor):
                x = x.to(device, non_blocking=True)
                if channels_last and x.dim() == 4 and x.is_floating_point():
                    x = x.contiguous(memory_format=torch.channels_last)
                return x
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return type(x)(move(v) for v in x)
            return x

        return move(batch)

    def loss(self, output: Any, batch: Any) -> Tensor:
        raise NotImplementedError

    # --- evaluation, prediction, export ------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        """Metrics of ``model`` (eval mode) on the validation loader; must contain ``self.metric``."""
        raise NotImplementedError

    def format_metrics(self, metrics: dict[str, Any]) -> str | None:
        """A human-readable report of :meth:`evaluate`'s metrics for ``hrnas evaluate`` (None: print JSON)."""
        return None

    def baseline_metrics(self) -> dict[str, Any]:
        """Metrics of reference predictors that ignore the input, scored like :meth:`evaluate`
        (``hrnas evaluate --baselines``). Default: the task has none."""
        raise TaskError(f"--baselines: task {self.name!r} has no reference predictors")

    def predict(self, model: nn.Module, inputs: Sequence[str], out_dir: Path, split: str | None = None) -> list[Path]:
        """Run ``model`` on ``inputs`` (files) or on the frames of ``split`` and write what it sees into
        ``out_dir``; return the files written (``hrnas predict``). Each task checks which of the two it
        reads. Default: the task predicts nothing."""
        raise TaskError(f"predict: not available for task {self.name!r}")

    def prediction_files(self, inputs: Sequence[str], split: str | None) -> list[str]:
        """The arguments of :meth:`predict` for a task that predicts the files given: ``inputs``, checked to
        be some and to come without ``split`` (one-line TaskErrors otherwise)."""
        if split is not None:
            raise TaskError(f"predict: task {self.name!r} predicts the image files given, not --split")
        if not inputs:
            raise TaskError(f"predict: give the image files to run task {self.name!r} on")
        return list(inputs)

    def export(
        self,
        model: nn.Module,
        spec: Any,
        output: Path,
        input_size: tuple[int, int] | None = None,
        merge_groups: bool = False,
    ) -> CheckedExport:
        """Export the deployed network to ONNX at ``output``, checked in ONNX Runtime (``hrnas export``).

        Default: the image network (:func:`hrnas.export.onnx.export_onnx`) for an ``input_size`` ``(H, W)``
        input, the training crop ``data.crop_size`` when None. ``merge_groups``: each search block as one
        depthwise convolution (:func:`hrnas.space.deploy.deploy`).
        """
        from hrnas.export.onnx import export_onnx

        size = tuple(input_size) if input_size else tuple(int(v) for v in self.cfg.data.crop_size)
        return export_onnx(
            model, output, input_size=size, in_channels=spec.stem.in_channels, merge_groups=merge_groups
        )

    # --- command line ------------------------------------------------------------------------------
    @classmethod
    def cli_commands(cls) -> list[TaskCommand]:
        """Extra ``hrnas`` subcommands this task adds. Default: none."""
        return []


# ----------------------------------------------------------------------------------------------------
# Registry

_TASKS: dict[str, type[Task]] = {}
_discovered = False


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a :class:`Task` subclass under its ``name``.

    Raises:
        TaskError: the class has no name, its ``options`` is not a TaskOptions subclass, or the name is
            taken by another class.
    """
    if not isinstance(cls, type) or not issubclass(cls, Task):
        raise TaskError(f"register_task: {cls!r} is not a Task subclass (use @register_task on the class)")
    if not cls.name:
        raise TaskError(f"register_task: {cls.__qualname__} has no name")
    if not (isinstance(cls.options, type) and issubclass(cls.options, TaskOptions)):
        raise TaskError(f"register_task: {cls.__qualname__}.options is not a TaskOptions dataclass")
    known = _TASKS.get(cls.name)
    if known is not None and known is not cls:
        raise TaskError(
            f"register_task: task {cls.name!r} is already registered by {known.__module__}.{known.__qualname__}"
        )
    _TASKS[cls.name] = cls
    return cls


def _discover() -> None:
    """Import every task package under :mod:`hrnas.tasks` once (each registers its task)."""
    global _discovered
    if _discovered:
        return
    import hrnas.tasks

    for info in pkgutil.iter_modules(hrnas.tasks.__path__, prefix="hrnas.tasks."):
        if info.ispkg:
            importlib.import_module(info.name)
    _discovered = True


def task_names() -> list[str]:
    """The names of the registered tasks, sorted."""
    _discover()
    return sorted(_TASKS)


def task_classes() -> list[type[Task]]:
    """The registered task classes, sorted by name."""
    return [_TASKS[name] for name in task_names()]


def task_class(name: str) -> type[Task]:
    """The task registered as ``name``; TaskError listing the known names when there is none."""
    _discover()
    if name not in _TASKS:
        raise TaskError(f"task.name: {name!r} is not available (known: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]


def get_task(cfg: Any) -> Task:
    """The task object for a run config (``cfg.task.name``)."""
    return task_class(cfg.task.name)(cfg)
