"""The in-memory cache of decoded samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrnas.data.cache import SampleCache, nbytes


def test_nbytes_counts_nested_tensors_and_arrays() -> None:
    item = (torch.zeros(3, 4, dtype=torch.uint8), {"a": np.zeros(5, np.float32), "b": "x"}, [torch.zeros(2)])
    assert nbytes(item) == 12 + 20 + 8


def test_cache_loads_once_within_budget_and_stops_when_full() -> None:
    calls: list[int] = []

    def loader(i: int):
        def load() -> torch.Tensor:
            calls.append(i)
            return torch.full((10,), i, dtype=torch.uint8)

        return load

    cache = SampleCache(budget_bytes=25)
    for _ in range(3):
        for i in range(3):
            assert torch.equal(cache.get(i, loader(i)), torch.full((10,), i, dtype=torch.uint8))
    assert calls == [0, 1, 2, 2, 2]  # samples 0 and 1 fit (20 bytes), sample 2 is read each time
    assert (cache.hits, cache.misses, cache.used_bytes, len(cache), cache.full) == (4, 5, 20, 2, True)
    with pytest.raises(ValueError, match="must be >= 0"):
        SampleCache(-1)
