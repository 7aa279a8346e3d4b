"""A task's section of the run config: :class:`TaskOptions` and the field helper every config section uses.

The ``task:`` section of a run config belongs to the task it names: ``task.name`` picks a registered task
(:mod:`hrnas.tasks.base`) and the rest of the section is read, strictly, into that task's ``options``
dataclass, a subclass of :class:`TaskOptions`. :func:`option` declares a field with the metadata the config
loader (:mod:`hrnas.engine.config`) checks — allowed values, a fixed tuple length, bounds, MAC sizes — so a
task's options are validated exactly like the engine's own sections, with errors naming ``file:line``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["TaskOptions", "option"]


def option(
    default: Any,
    *,
    choices: Sequence[str] | None = None,
    length: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    macs: bool = False,
) -> Any:
    """A dataclass field with validation metadata for the config loader.

    Args:
        default: the value when the config does not set the key (immutable: tuples, not lists).
        choices: the allowed values of a string field.
        length: the required number of entries of a tuple field.
        minimum, maximum: inclusive bounds of a number (of every entry, for a tuple field).
        macs: the value is a MAC count and accepts human sizes (``300M``, ``1.4G``).
    """
    meta = {"choices": tuple(choices) if choices else None, "length": length, "minimum": minimum,
            "maximum": maximum, "macs": macs}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class TaskOptions:
    """The options every task has; a task's ``options`` class adds its own fields.

    Only ``name`` is common to all tasks: a key that some task does not read (``num_classes`` means nothing
    to a detector with fixed classes) belongs to the tasks that read it, so a config never carries a key
    that nothing uses.

    Attributes:
        name: the registered task (``hrnas.tasks.base.task_names()``); the config loader fills it.
    """

    name: str = ""

    legacy_keys: ClassVar[Mapping[str, str]] = {}
    """Keys of older configs that this task's options replace, each with the one-line advice the config
    loader prints when it meets them (``{"data.ann_file": "moved to task.ann_file"}``; a section name such
    as ``"detection"`` matches the whole section)."""

    def validate(self, cfg: Any, fail: Callable[[str, str], Exception]) -> None:
        """Checks that involve several fields (of this section or of others in ``cfg``, the whole
        ``RunConfig``); raise ``fail(dotted_key, message)`` to report one with its place in the file.
        Default: nothing to check."""
