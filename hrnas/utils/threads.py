"""CPU thread settings that degrade gracefully when other programs share the machine.

torch's CPU kernels run on OpenMP (libgomp). By default its idle threads spin for a while at every barrier
before they sleep; when another process holds one of the cores, the spinning threads and the preempted
one take turns and a training step of many small kernels gets several times slower, not the ~2× a fair
share would cost. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once. libgomp reads its
environment once, when torch loads, so :func:`configure_threads` must run before ``import torch``: the
``hrnas`` command calls it first thing (``benchmarks/threads.py`` measures the choices).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

__all__ = ["ThreadSettings", "available_cores", "configure_threads", "free_cores"]


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
    """Set the OpenMP wait policy to PASSIVE unless the user chose one; call before ``import torch``.

    ``OMP_NUM_THREADS`` and an explicit ``OMP_WAIT_POLICY`` are left as the user set them.
    """
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return ThreadSettings(env.get("OMP_WAIT_POLICY", ""), env.get("OMP_NUM_THREADS", ""), "torch" in sys.modules)
