"""CPU thread settings that degrade gracefully when other programs share the machine.

torch's CPU kernels run on OpenMP (libgomp), whose idle threads spin for a while at every barrier before
they sleep. Alone that is the fastest choice; but when another process holds one of the cores, a thread
of ours is preempted while the others spin waiting for it, and a training step of many small kernels gets
about 3× slower instead of the ~2× a fair share would cost. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``)
avoids that but makes every step about 30 % slower alone. What keeps both: as many threads as there are
cores the *other* processes leave free, re-checked as the run goes (:class:`ThreadGovernor`), with the
wait policy left as it is (``benchmarks/threads.py`` measures every choice).

A user's own choice wins: with ``OMP_NUM_THREADS`` set, or threads fixed by the caller, nothing changes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

__all__ = ["ThreadGovernor", "ThreadSettings", "available_cores", "configure_threads", "free_cores"]


@dataclass(frozen=True)
class ThreadSettings:
    """What :func:`configure_threads` found and set: ``wait_policy`` and ``num_threads`` as they are now in
    the environment ("" = unset), and whether torch was already loaded (then they take no effect)."""

    wait_policy: str
    num_threads: str
    torch_loaded: bool


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _busy_and_total_jiffies() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def free_cores(window_s: float = 0.3) -> int:
    """Cores not kept busy by other processes over the next ``window_s`` seconds (at least 1).

    Reads the machine's CPU time from ``/proc/stat`` before and after the window; where that file does
    not exist, every available core counts as free.
    """
    cores = available_cores()
    before = _busy_and_total_jiffies()
    if before is None:
        return cores
    time.sleep(window_s)
    after = _busy_and_total_jiffies()
    if after is None or after[1] <= before[1]:
        return cores
    machine = os.cpu_count() or cores
    busy_cores = machine * (after[0] - before[0]) / (after[1] - before[1])
    return max(1, min(cores, round(machine - busy_cores)))


def configure_threads(environ: MutableMapping[str, str] | None = None) -> ThreadSettings:
    """Report the thread settings the user chose in the environment; call before ``import torch``.

    ``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS`` are left as the user set them (the measured default is to
    set neither: the thread count follows the free cores through :class:`ThreadGovernor` instead).
    """
    env = os.environ if environ is None else environ
    return ThreadSettings(env.get("OMP_WAIT_POLICY", ""), env.get("OMP_NUM_THREADS", ""), "torch" in sys.modules)


def _own_cpu_jiffies() -> int | None:
    """CPU time (user + system, in clock ticks) of this process and its live children (data workers)."""
    pids = [os.getpid()]
    try:
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{task}/children", encoding="ascii") as fh:
                pids.extend(int(p) for p in fh.read().split())
    except OSError:
        pass
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            if pid == os.getpid():
                return None
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total


class ThreadGovernor:
    """Keeps torch's intra-op thread count at the cores that other processes leave free.

    Call :meth:`tick` once per training step: every ``interval_s`` seconds it compares the machine's busy
    CPU time (``/proc/stat``) with this process's own (and its children's) over the interval, and sets
    ``torch.set_num_threads`` to ``available cores - cores busy with others`` (at least 1, at most
    ``max_threads``). Does nothing when ``enabled`` is false, where ``/proc`` is missing, or when
    ``OMP_NUM_THREADS`` is set (the user's choice).

    Mutates torch's global intra-op thread count; :meth:`restore` puts back the count found at start.
    """

    def __init__(self, interval_s: float = 5.0, max_threads: int | None = None, enabled: bool = True) -> None:
        import torch

        self._torch = torch
        self.interval_s = interval_s
        self.initial_threads = torch.get_num_threads()
        self.max_threads = max_threads or min(self.initial_threads, available_cores())
        self.enabled = enabled and not os.environ.get("OMP_NUM_THREADS") and _busy_and_total_jiffies() is not None
        self.changes: list[tuple[float, int]] = []
        self._last: tuple[float, tuple[int, int], int] | None = None
        if self.enabled:
            self._set(min(self.max_threads, free_cores()))
            self._mark()

    def _mark(self) -> None:
        machine, own = _busy_and_total_jiffies(), _own_cpu_jiffies()
        self._last = None if machine is None or own is None else (time.monotonic(), machine, own)

    def _set(self, threads: int) -> None:
        if threads != self._torch.get_num_threads():
            self._torch.set_num_threads(threads)
            self.changes.append((time.monotonic(), threads))

    def tick(self) -> int:
        """Re-check the free cores when the interval has passed; returns the thread count now in use."""
        if self.enabled and self._last is not None and time.monotonic() - self._last[0] >= self.interval_s:
            _, (busy0, total0), own0 = self._last
            self._mark()
            if self._last is not None:
                _, (busy1, total1), own1 = self._last
                machine = os.cpu_count() or 1
                if total1 > total0:
                    scale = machine / (total1 - total0)  # jiffies -> cores busy on average
                    others = max(0.0, (busy1 - busy0) - (own1 - own0)) * scale
                    self._set(max(1, min(self.max_threads, round(machine - others))))
        return self._torch.get_num_threads()

    def __enter__(self) -> ThreadGovernor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the thread count found at construction."""
        if self.enabled:
            self._set(self.initial_threads)
