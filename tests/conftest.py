"""Fixtures shared across the test tree.

Importing :mod:`hrnas.demos` registers the data generators (the demo scenes) that the tasks' ``demo`` data
format asks for, as the command line does before every command.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import hrnas.demos  # noqa: F401  (registers the data generators)
from hrnas.data.fashion_mnist import SPLIT_FILES


def _fake_items(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Filled ellipses with a soft edge, one per item, 28x28 uint8; labels cycle through 0..9."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:28, 0:28]
    items = np.zeros((count, 28, 28), np.uint8)
    for index in range(count):
        cy, cx = rng.uniform(11, 17, 2)
        ry, rx = rng.uniform(5, 12, 2)
        radius = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
        items[index] = np.clip((1.3 - radius) * 400, 0, 230).astype(np.uint8)
    return items, (np.arange(count) % 10).astype(np.uint8)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.tobytes())


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Fashion-MNIST (30 ellipses per split) in the real IDX ``.gz`` layout, so tests
    that build demo scenes need no dataset package."""
    folder = tmp_path_factory.mktemp("fake-fashion-mnist")
    for seed, split in enumerate(("train", "test")):
        items, labels = _fake_items(30, seed)
        _write_idx(folder / SPLIT_FILES[split][0], items)
        _write_idx(folder / SPLIT_FILES[split][1], labels)
    return folder


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run the test on one thread: tiny networks run faster so, and much faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
