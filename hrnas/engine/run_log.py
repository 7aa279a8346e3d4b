"""Run logging: a JSONL metrics file, TensorBoard scalars (rank 0 only).

``metrics.jsonl`` in the run folder gets one JSON object per :meth:`RunLogger.log` call:
``{"step": int, "time": unix seconds, "elapsed": seconds since the logger started, <metrics>...}``, so a
run can be plotted or compared with nothing but the standard library. The same scalars go to a
TensorBoard event file in the run folder when ``torch.utils.tensorboard`` can be imported; when it
cannot, the logger warns once and writes JSONL only.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["RunLogger"]

def _plain_number(value: Any) -> Any:
    """Scalars as JSON numbers (0-d tensors and numpy scalars unwrapped; non-finite floats as strings)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"only scalar tensors can be logged, got shape {tuple(value.shape)}")
        value = value.item()
    elif hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Metrics writer for one run folder.

    Args:
        run_dir: the run folder (created if needed).
        enabled: write anything at all; pass ``is_main()`` so only rank 0 writes.
        tensorboard: also write TensorBoard scalars (if the package is importable).

    Use as a context manager or call :meth:`close`. Logging after ``close`` raises ``RuntimeError``.
    """

    def __init__(self, run_dir: str | os.PathLike[str], enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.start_time = time.time()
        self._closed = False
        self._jsonl = None
        self._tb: Any = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as err:  # tensorboard missing or broken: keep the JSONL log
                warnings.warn(f"TensorBoard logging disabled ({type(err).__name__}: {err}); "
                              "metrics.jsonl is still written", RuntimeWarning, stacklevel=2)
            else:
                self._tb = SummaryWriter(log_dir=str(self.run_dir))

    @property
    def metrics_path(self) -> Path:
        """Path of the JSONL metrics file."""
        return self.run_dir / "metrics.jsonl"

    @property
    def has_tensorboard(self) -> bool:
        """True when scalars also go to TensorBoard."""
        return self._tb is not None

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Append one record ``{step, time, elapsed, **metrics}``; numeric metrics also go to TensorBoard.

        ``prefix`` (e.g. ``"val/"``) is prepended to every metric name. Values must be JSON-serialisable
        or scalars (Python numbers, 0-d tensors, numpy scalars); strings and lists are kept in JSONL only.
        The line is flushed immediately so a crashed run keeps its log.
        """
        if not self.enabled:
            return
        if self._closed:
            raise RuntimeError(f"{self.run_dir}: RunLogger.log called after close()")
        now = time.time()
        record: dict[str, Any] = {"step": int(step), "time": now, "elapsed": now - self.start_time}
        for name, value in metrics.items():
            key = f"{prefix}{name}"
            if key in ("step", "time", "elapsed"):
                raise ValueError(f"metric name {key!r} is reserved")
            record[key] = _plain_number(value)
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key in ("step", "time", "elapsed"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, global_step=int(step), walltime=now)

    def flush(self) -> None:
        """Flush the JSONL and TensorBoard writers."""
        if self._jsonl is not None and not self._closed:
            self._jsonl.flush()
        if self._tb is not None and not self._closed:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
