"""What the training engine needs from a task, and the registry of tasks.

A task turns a :class:`~hrnas.engine.config.RunConfig` into datasets, a spec whose head fits the data,
a loss and an evaluation. The engine (``hrnas.engine.trainer``) knows nothing else about the task, so a
new task is one module registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from hrnas.space.spec import ClassificationHeadSpec, DenseHeadSpec, NetSpec
from hrnas.space.zoo import resolve_spec


class TaskError(ValueError):
    """The configuration does not fit the task (wrong head, class count, data format...)."""


class Task:
    """Base class: subclasses set ``name``, ``head_kinds``, ``metric`` and implement the hooks.

    Batches are whatever the datasets' collate produces; :meth:`inputs` extracts the image tensor
    (B, 3, H, W) and :meth:`loss` scores the model output against the batch.
    """

    name = ""
    head_kinds: tuple[str, ...] = ()
    metric = ""
    higher_is_better = True

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
    def build_spec(self, spec_ref: str | NetSpec | None = None) -> NetSpec:
        """The spec named by ``model.spec`` (zoo name or JSON file) adapted to this task's data."""
        spec = _resolve_spec(spec_ref if spec_ref is not None else self.cfg.model.spec, self.cfg.model.transformer)
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

    def inputs(self, batch: Any) -> Tensor:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The model's output for a batch already on the device: ``model(self.inputs(batch))`` by default;
        tasks whose network does not take one image tensor override this."""
        return model(self.inputs(batch))

    def format_metrics(self, metrics: dict[str, Any]) -> str | None:
        """A human-readable report of :meth:`evaluate`'s metrics for ``hrnas evaluate`` (None: print JSON)."""
        return None

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

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        """Metrics of ``model`` (eval mode) on the validation loader; must contain ``self.metric``."""
        raise NotImplementedError


def _resolve_spec(ref: str | NetSpec, transformer: bool) -> NetSpec:
    spec = resolve_spec(ref, transformer=transformer)
    if not isinstance(spec, NetSpec):
        raise TaskError(f"model.spec: {spec.name or ref!r} is not an HRNet-space spec")
    return spec


_TASKS: dict[str, Callable[[Any], Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        if name in _TASKS:
            raise KeyError(f"task {name!r} is already registered")
        _TASKS[name] = cls
        return cls

    return deco


def get_task(cfg: Any) -> Task:
    """The task object for ``cfg.task.name``."""
    import hrnas.tasks.segmentation  # noqa: F401  (registers)

    for module in ("hrnas.tasks.classification", "hrnas.tasks.keypoints", "hrnas.tasks.kitti"):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    name = cfg.task.name
    if name not in _TASKS:
        raise TaskError(f"task.name: {name!r} is not available (known: {', '.join(sorted(_TASKS))})")
    return _TASKS[name](cfg)
