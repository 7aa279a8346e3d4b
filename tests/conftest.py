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


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measurement caches of the tests live in a temporary folder, never in the user's."""
    monkeypatch.setenv("HRNAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def linear_latency_table():  # noqa: ANN201
    """Make a synthetic latency table (no timing) for a spec at an input size: a fixed part of 0.5 ms,
    every kernel group 0.01 ms per channel and per 32×32 of its input, every transformer up to 0.1 ms."""
    from hrnas.space.cost import iter_blocks
    from hrnas.space.latency import BlockCurves, LatencyTable, block_key, skeleton_key

    def make(spec, size: tuple[int, int]) -> LatencyTable:  # noqa: ANN001
        blocks = {}
        for _, block, in_hw in iter_blocks(spec, size):
            area = in_hw[0] * in_hw[1] / 1024
            groups = {
                k: [(0.0, 0.0), (float(max(c, 1)), 0.01 * area * max(c, 1))]
                for k, c in zip(block.kernel_sizes, block.hidden, strict=True)
            }
            blocks[block_key(block, in_hw)] = BlockCurves(groups, [(0.0, 0.0), (16.0, 0.1)])
        meta = {"runtime": "onnxruntime", "threads": 1, "cpu": "test cpu", "input_size": list(size), "pad_to": 8}
        return LatencyTable(meta=meta, fixed={skeleton_key(spec): 0.5}, blocks=blocks)

    return make


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run the test on one thread: tiny networks run faster so, and much faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CliResult:
    """What one in-process ``hrnas`` command left behind: its exit code, stdout and stderr lines."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr_lines = [line for line in stderr.splitlines() if line.strip()]

    def assert_one_line_error(self, *fragments: str) -> str:
        """Check the bad-input contract: a non-zero exit, exactly one stderr line, no traceback, and every
        fragment (a file, key or value the message must name) in that line. Returns the line."""
        assert self.code != 0, f"exit code 0; stdout: {self.stdout[-400:]}"
        assert len(self.stderr_lines) == 1, "expected one stderr line, got:\n" + "\n".join(self.stderr_lines)
        line = self.stderr_lines[0]
        assert "Traceback" not in line
        for fragment in fragments:
            assert fragment in line, f"{fragment!r} not named in: {line}"
        return line


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``hrnas`` in this process: ``run_cli(["cost", "x.json"])`` returns a :class:`CliResult`.
    ``HRNAS_DEBUG`` is cleared so library errors are reported as one line."""
    from hrnas.cli import main

    monkeypatch.delenv("HRNAS_DEBUG", raising=False)

    def run(argv: list[str]) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(arg) for arg in argv])
        except SystemExit as exit_:  # argparse usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
