"""Atomic, self-describing checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint is one dict of plain values — tensors, dicts, lists/tuples, str, int, float, bool, None —
so it never unpickles code: the architecture goes in as its spec's JSON dict, the run config as a dict,
RNG states as tensors (:func:`capture_rng_state`). Conventional keys written by the trainer are
``{spec, model, optimizer, scheduler, ema, step, task, run_config, rng}``; this module only requires
the payload to be a dict and reads ``task`` (or ``run_config.task.name``) to check the task.

Writes are atomic: the bytes go to a hidden temporary file in the destination folder, are flushed and
``fsync``-ed, then ``os.replace``-d over the destination (and the folder is synced). A crash or a kill
at any point leaves either the previous checkpoint or the new one, never a torn file; the temporary
file's name (``.<name>.hrnas-tmp-*``) never matches ``*.pt`` so it is never taken for a checkpoint,
and :func:`remove_stale_temp_files` deletes leftovers.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrnas.utils.atomic import TMP_MARKER, atomic_path
from hrnas.utils.errors import HrnasError

__all__ = [
    "CheckpointError",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "capture_rng_state",
    "check_task_override",
    "check_weights",
    "checkpoint_task",
    "load_checkpoint",
    "remove_stale_temp_files",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT_KEY = "hrnas_checkpoint"
"""Key added to every saved payload; its value is :data:`FORMAT_VERSION`."""
FORMAT_VERSION = 1


class CheckpointError(HrnasError, RuntimeError):
    """A checkpoint cannot be written or read; the message starts with the file's path."""


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first value that ``weights_only`` loading would refuse."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(value).__module__}.{type(value).__qualname__} cannot be stored; "
                    "use tensors, dicts, lists, str, int, float, bool or None")


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Atomically write ``payload`` (plus the format marker) to ``path``; return the path.

    Args:
        path: destination file; its folder is created if needed.
        payload: a dict of plain values (see the module docstring). Tensors are saved as they are
            (move them to CPU first if the checkpoint must load without a GPU — ``load_checkpoint``
            maps to CPU anyway).

    Raises:
        TypeError: a value cannot be loaded with ``weights_only=True``; nothing is written.
        OSError: the write failed; the previous file at ``path`` (if any) is untouched and the
            temporary file is removed.
    """
    path = Path(path)
    if not isinstance(payload, Mapping):
        raise TypeError(f"{path}: checkpoint payload must be a dict, got {type(payload).__name__}")
    data = dict(payload)
    data[FORMAT_KEY] = FORMAT_VERSION
    _check_plain(data, "payload")
    with atomic_path(path, durable=True) as tmp:
        with open(tmp, "xb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files left in ``folder`` by interrupted :func:`save_checkpoint` calls.

    Only call it when no other process is writing checkpoints into ``folder``. Returns the removed paths.
    """
    removed = []
    for candidate in Path(folder).glob(f".*{TMP_MARKER}*"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def checkpoint_task(payload: Mapping[str, Any]) -> str | None:
    """The task recorded in a checkpoint: ``payload["task"]``, else ``payload["run_config"]["task"]["name"]``."""
    task = payload.get("task")
    if isinstance(task, str):
        return task
    run_config = payload.get("run_config")
    if isinstance(run_config, Mapping):
        section = run_config.get("task")
        if isinstance(section, Mapping) and isinstance(section.get("name"), str):
            return section["name"]
    return None


def load_checkpoint(path: str | os.PathLike[str], expect_task: str | None = None,
                    map_location: str | torch.device = "cpu", verify_weights: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Args:
        path: the checkpoint file.
        expect_task: if given, the checkpoint must record this task (see :func:`checkpoint_task`).
        map_location: where tensors are loaded (CPU by default; move them where they are needed).
        verify_weights: when the payload holds a ``spec`` and ``model`` weights, compare the weights with
            the network the spec builds (:func:`check_weights`) before anyone calls ``load_state_dict``.

    Returns:
        The payload dict (including the ``hrnas_checkpoint`` format marker).

    Raises:
        CheckpointError: missing file (``{path}: no such checkpoint``), not a checkpoint (unreadable,
            truncated, not a dict, or without the format marker), newer format, task mismatch
            (``{path}: checkpoint is for task 'A', not 'B'``), or weights that do not fit the stored spec
            (the first tensor that differs, see :func:`check_weights`).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint (not a file)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint: {err}") from None
    except Exception as err:  # torch raises many types for foreign or torn files (UnpicklingError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a checkpoint ({first})") from None
    if not isinstance(payload, dict) or FORMAT_KEY not in payload:
        raise CheckpointError(f"{path}: not a checkpoint (no '{FORMAT_KEY}' marker; "
                              "was it written by hrnas.engine.checkpoint.save_checkpoint?)")
    version = payload[FORMAT_KEY]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this hrnas "
                              f"(reads up to {FORMAT_VERSION})")
    if expect_task is not None:
        task = checkpoint_task(payload)
        if task is None:
            raise CheckpointError(f"{path}: checkpoint does not record its task, expected '{expect_task}'")
        if task != expect_task:
            raise CheckpointError(f"{path}: checkpoint is for task '{task}', not '{expect_task}'")
    if verify_weights and "spec" in payload and "model" in payload:
        check_weights(path, payload)
    return payload


def _shape(value: Any) -> str:
    return "[" + ", ".join(str(n) for n in value.shape) + "]"


def _compare_state(path: Path, what: str, state: Any, expected: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: {what} is a {type(state).__name__}, expected a dict of tensors")
    for name, want in expected.items():
        if name not in state:
            raise CheckpointError(f"{path}: {what} do not match the stored spec: tensor '{name}' "
                                  f"{_shape(want)} of its network is missing from the file")
        have = state[name]
        if not isinstance(have, torch.Tensor):
            raise CheckpointError(f"{path}: {what}: '{name}' is a {type(have).__name__}, expected a tensor "
                                  f"{_shape(want)}")
        if have.shape != want.shape:
            raise CheckpointError(f"{path}: {what} do not match the stored spec: tensor '{name}' is "
                                  f"{_shape(have)} in the file, the spec builds {_shape(want)}")
    for name, have in state.items():
        if name not in expected:
            shown = _shape(have) if isinstance(have, torch.Tensor) else type(have).__name__
            raise CheckpointError(f"{path}: {what} do not match the stored spec: tensor '{name}' {shown} in "
                                  "the file has no place in the spec's network")


def _expected_state(path: Path, payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict (on the meta device: shapes, no memory) of the network the payload's spec builds,
    by its task's ``build_model`` when the payload records a run config."""
    from hrnas.space.network import build_model
    from hrnas.space.zoo import spec_from_dict

    try:
        spec = spec_from_dict(payload["spec"], source=f"{path}: spec")
        run_config = payload.get("run_config")
        builder: Any = build_model
        if isinstance(run_config, Mapping):
            from hrnas.engine.config import config_from_dict
            from hrnas.tasks.base import get_task

            builder = get_task(config_from_dict(run_config, source=f"{path}: run_config")).build_model
    except (ValueError, KeyError, TypeError) as err:  # SpecError, ZooError, ConfigError, TaskError among them
        message = " ".join(str(err).split()) or type(err).__name__
        if not message.startswith(str(path)):
            message = f"{path}: stored spec or run config is invalid ({message})"
        raise CheckpointError(message) from None
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = builder(spec, init="default")
    return model.state_dict()


def check_weights(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Check that the weights of a checkpoint fit the network its own spec builds.

    The spec (``payload["spec"]``) is rebuilt on the meta device (no memory, no random numbers drawn) by the
    task of ``payload["run_config"]`` when there is one, else by :func:`hrnas.space.network.build_model`; then
    ``payload["model"]`` and, in a training checkpoint, the EMA weights (``payload["ema"]["module"]``) must hold
    exactly its tensors, each of its shape.

    Raises:
        CheckpointError: naming the file and the first tensor that differs, e.g.
            ``final.pt: weights do not match the stored spec: tensor 'head.cls.weight' is [5, 8, 1, 1] in the
            file, the spec builds [3, 8, 1, 1]``; a missing tensor, one the network has no place for, or a
            spec/run config that cannot be read are named the same way.
    """
    path = Path(path)
    expected = _expected_state(path, payload)
    _compare_state(path, "weights", payload["model"], expected)
    ema = payload.get("ema")
    if isinstance(ema, Mapping) and ema.get("module") is not None:
        _compare_state(path, "EMA weights", ema["module"], expected)


def check_task_override(path: str | os.PathLike[str], payload: Mapping[str, Any], overrides: list[str]) -> None:
    """Refuse ``--set task.name=B`` for a checkpoint of task A: a network is evaluated, predicted or exported
    by the task it was trained for.

    Args:
        path: the checkpoint file (named in the message).
        payload: its loaded payload (:func:`load_checkpoint`).
        overrides: the ``KEY=VALUE`` overrides given on the command line.

    Raises:
        CheckpointError: ``final.pt: checkpoint is for task 'segmentation'; --set task.name=keypoints asks for
            'keypoints' (a checkpoint runs with the task it was trained for)``.
    """
    stored = checkpoint_task(payload)
    for override in overrides:
        key, sep, value = str(override).partition("=")
        if not sep or key.strip() != "task.name":
            continue
        asked = value.strip().strip("'\"")
        if stored is not None and asked != stored:
            raise CheckpointError(f"{Path(path)}: checkpoint is for task '{stored}'; --set {override.strip()} asks "
                                  f"for '{asked}' (a checkpoint runs with the task it was trained for)")


# ----------------------------------------------------------------------------------------------------
# RNG state


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG as plain values (storable in a checkpoint).

    Returns ``{"python": {"version", "state" (int64 tensor), "gauss"}, "numpy": {"keys" (int64 tensor),
    "pos", "has_gauss", "cached_gaussian"}, "torch": uint8 tensor, "cuda": [uint8 tensor per device]}``;
    ``cuda`` is an empty list when CUDA is not available.
    """
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    if np_name != "MT19937":  # pragma: no cover - numpy's legacy global generator is always MT19937
        raise CheckpointError(f"unsupported numpy global RNG {np_name!r}")
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNGs from :func:`capture_rng_state`'s output (missing parts are left alone).

    CUDA states are restored for ``min(saved, available)`` devices, so a checkpoint taken on another
    number of GPUs (or on CPU) still loads.
    """
    if "python" in state:
        py = state["python"]
        internal = tuple(int(v) for v in py["state"].tolist())
        random.setstate((int(py["version"]), internal, py["gauss"]))
    if "numpy" in state:
        npst = state["numpy"]
        keys = npst["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(npst["pos"]), int(npst["has_gauss"]),
                             float(npst["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for index in range(min(len(cuda_states), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda_states[index].cpu().to(torch.uint8), index)
