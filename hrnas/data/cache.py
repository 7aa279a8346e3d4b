"""Decoded samples kept in memory, so that a small data set is decoded once, not once per epoch.

Decoding is a fixed cost of every training step that does not shrink with the network: on the demo
scenes reading and decoding one 128×128 PNG pair and checking its labels takes about 2 ms, 35 ms of a
16-image batch, as much as the rest of the augmentation. :class:`SampleCache` keeps what a dataset's
loader returns, up to a byte budget, in the order samples are first read; a sample that no longer fits is
decoded on every read (training reads samples in random order, so evicting would only trade one miss
for another).

The cache lives in the process that reads the samples, so it serves ``data.workers = 0`` (the CPU
default): worker processes end with their epoch, in which they read each sample once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["SampleCache", "nbytes"]

T = TypeVar("T")


def nbytes(item: Any) -> int:
    """Bytes held by the tensors and arrays in ``item`` (nested tuples, lists and dicts; others count 0)."""
    if isinstance(item, torch.Tensor):
        return item.element_size() * item.nelement()
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    if isinstance(item, (tuple, list)):
        return sum(nbytes(x) for x in item)
    if isinstance(item, dict):
        return sum(nbytes(x) for x in item.values())
    return 0


class SampleCache:
    """Memoises ``load()`` per sample index within ``budget_bytes``.

    The cached object is returned as it is on every later call: callers must not modify it in place
    (the transforms of this package return new tensors). ``hits`` and ``misses`` count the calls.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget {budget_bytes} bytes: must be >= 0")
        self.budget_bytes = int(budget_bytes)
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self.full = False  # a sample was turned away for lack of room
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, index: int, load: Callable[[], T]) -> T:
        """The sample ``index``: from the cache, or ``load()`` (kept if it fits in what is left)."""
        item = self._items.get(index)
        if item is not None:
            self.hits += 1
            return item
        self.misses += 1
        item = load()
        size = nbytes(item)
        if self.used_bytes + size <= self.budget_bytes:
            self._items[index] = item
            self.used_bytes += size
        else:
            self.full = True
        return item

    def __repr__(self) -> str:
        return (
            f"SampleCache({len(self)} samples, {self.used_bytes / 2**20:.1f} of {self.budget_bytes / 2**20:.0f} MiB, "
            f"{self.hits} hits, {self.misses} misses)"
        )
