"""Turning SIGTERM and Ctrl-C into a clean stop at the end of the current training step.

A scheduler (Slurm, Kubernetes, ``timeout``) ends a job with SIGTERM and a user with Ctrl-C; both used to
kill the process wherever it was, so everything since the last periodic checkpoint was lost.
:class:`StopSignals` only records the signal; the training loop checks :attr:`StopSignals.requested` after
each step, writes its resumable checkpoint and raises :class:`TrainingStopped`. A second signal of the same
kind stops at once, the usual behaviour of the signal.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopSignals", "TrainingStopped"]


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal after writing its resumable checkpoint.

    ``exit_code`` is the shell's convention for a process ended by that signal (128 + its number).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Context manager recording SIGTERM/SIGINT instead of acting on them (main thread only).

    Inside the ``with`` block the first SIGTERM or SIGINT sets :attr:`requested` to its number; a second
    one of the same kind restores the previous handler and re-delivers the signal (SIGINT raises
    ``KeyboardInterrupt`` at once). Outside the main thread, where Python cannot install handlers, it
    does nothing. The previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested == signum:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.requested = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name
