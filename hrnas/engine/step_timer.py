"""Where a training step's time goes: wall time per phase (data, forward, penalty, backward, optimizer,
EMA, bookkeeping), averaged over the steps since the last report.

The trainer logs these as ``train/phase_<name>_s`` beside ``train/step_time_s`` so a run's own
``metrics.jsonl`` shows which part of the step does (or does not) shrink with the network. On CPU the
phases are exact; on CUDA kernels run asynchronously, so a phase shows its launch time and the wait lands
in whichever phase synchronises next (the loss check after the forward).
"""

from __future__ import annotations

import time

__all__ = ["StepTimer"]


class StepTimer:
    """Accumulates per-phase wall time: :meth:`start` at the top of a step, :meth:`mark` after each phase.

    ``mark("forward")`` charges the time since the previous mark (or :meth:`start`) to ``forward``.
    :meth:`report` returns the mean seconds per step of every phase since the last report and resets.
    """

    def __init__(self) -> None:
        self._totals: dict[str, float] = {}
        self._steps = 0
        self._last = 0.0

    def start(self) -> None:
        self._last = time.perf_counter()
        self._steps += 1

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self._totals[phase] = self._totals.get(phase, 0.0) + (now - self._last)
        self._last = now

    def report(self) -> dict[str, float]:
        steps = max(1, self._steps)
        out = {f"phase_{name}_s": total / steps for name, total in self._totals.items()}
        self._totals, self._steps = {}, 0
        return out
