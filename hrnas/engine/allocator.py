"""Heap settings that keep a CPU training step from page-faulting its activations every step.

A training step allocates and frees the same few hundred activation buffers (up to tens of MiB each)
every step. With glibc's defaults, buffers above the dynamic mmap threshold are mapped and unmapped
each time and a freed heap top is trimmed back to the kernel, so every step faults all of its
activation memory in again: on a 2-core machine a quarter of the CPU time went to the kernel and a
training step was about 20 % slower. :func:`tune_heap` keeps those buffers on the heap for reuse.
Peak memory is unchanged; what changes is that the process keeps its peak resident until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit systems
MMAP_THRESHOLD = 32 << 20
TOP_PAD = 256 << 20
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (an int)

DISABLE_ENV = "HRNAS_NO_HEAP_TUNING"
_GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def tune_heap() -> bool:
    """Raise glibc's mmap threshold, trim threshold and top pad for this process (and its forks).

    Does nothing (returns False) off Linux/glibc, when ``HRNAS_NO_HEAP_TUNING`` is set, or when the
    user already set glibc's malloc variables. Returns True when all three settings were applied.
    """
    if not sys.platform.startswith("linux") or os.environ.get(DISABLE_ENV):
        return False
    if any(name in os.environ for name in _GLIBC_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TOP_PAD, TOP_PAD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all(mallopt(param, value) == 1 for param, value in settings)
