"""The base of every hrnas error, and a JSON reader that refuses what JSON would silently accept.

Contract of :class:`HrnasError` (every error type the library raises for bad input derives from it):

- the message is **one line** that starts with what is at fault — a file (``arch.json``), a file and line
  (``cityscapes.yaml:14``), a config key (``data.crop_size``), a command-line argument
  (``--set optim.lr=abc``, ``--input-size 8 8``) or a spec path (``stages[2].fuse[0].block``) —, names the
  offending value and says what would be right, e.g.
  ``arch.json: key 'stem' is given twice`` or
  ``--input-size 8 8: below the minimum 32×32 that hrnas_demo_supernet can take (1 pixel at 1/32)``;
- it is raised where the value enters (reading a file, parsing an argument, building from a config), before
  any work whose result would look complete (no ``final.pt``, ``arch.json`` or report is written);
- the command line prints ``hrnas <command>: error: <message>`` and exits with status 2; the traceback is
  shown only with ``hrnas --debug`` or ``HRNAS_DEBUG=1``.

Each layer has its own subclass (``SpecError``, ``ZooError``, ``BudgetError``, ``ExportError``,
``DatasetError``, ``TaskError``, ``ConfigError``, ``CheckpointError``, ``TrainingDiverged``); most also
derive from the built-in type a caller would expect (``ValueError``, ``KeyError``, ``RuntimeError``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["HrnasError", "JsonError", "parse_json_text", "read_json"]


class HrnasError(Exception):
    """Base of every hrnas error: a one-line message naming the file/key/value at fault and what would be
    right (see the module docstring for the whole contract)."""


class JsonError(HrnasError, ValueError):
    """A JSON file or text that cannot be read, is not valid JSON, or gives a key twice."""


def parse_json_text(text: str, source: str, error: type[Exception] = JsonError) -> Any:
    """Plain data from JSON ``text``, read from ``source`` (a file name, used in messages).

    Raises ``error`` (a one-argument exception class, :class:`JsonError` by default) with a one-line
    message naming ``source`` when the text is empty, is not valid JSON (with the line) or an object gives a
    key twice — JSON itself would silently keep the last value.
    """

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise error(f"{source}: key {key!r} is given twice")
            out[key] = value
        return out

    if not text.strip():
        raise error(f"{source}: empty file (expected a JSON document)")
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def read_json(path: str | os.PathLike[str], error: type[Exception] = JsonError, what: str = "JSON file") -> Any:
    """Plain data from the JSON file ``path``; every failure (missing, unreadable, not UTF-8, empty, invalid,
    a key given twice) raises ``error`` with a one-line message that starts with the path. ``what`` names
    the kind of file in the messages about reading it (e.g. ``"spec file"``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text {what} (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    return parse_json_text(text, str(path), error)
