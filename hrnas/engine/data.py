"""Deterministic, resumable batches for any map-style dataset, on one or many processes.

Every sample is drawn as the key ``(epoch, index)`` and produced with torch's RNG seeded from
``(seed, epoch, index)``, so augmentation does not depend on the number of loader workers or on where
a run was resumed. Epoch ``e`` is a permutation drawn from ``(seed, e)``; global batch ``j`` of it is
split between ranks. Step ``s`` of a run is batch ``s mod steps_per_epoch`` of epoch
``s div steps_per_epoch``; resuming at step ``s`` reproduces exactly the batches an uninterrupted run
would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from hrnas.data.errors import DatasetError

_MIX = 0x9E3779B97F4A7C15


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + _MIX) % (2**63 - 1)


class SeededSamples(Dataset):
    """Wraps ``dataset``: item ``(epoch, index)`` is ``dataset[index]`` drawn under a seeded RNG."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue a seeding call, with a formatted
            # stack trace, for every uninitialised accelerator backend, on every sample
            torch.default_generator.manual_seed(_sample_seed(self.seed, epoch, index))
            return self.dataset[index]


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """Whole batches per epoch (the last partial batch is dropped).

    Raises:
        DatasetError: the training set holds fewer samples than one batch (a ``ValueError``).
    """
    if num_samples < global_batch:
        raise DatasetError(
            f"training set: {num_samples} samples, fewer than one batch of data.batch_size={global_batch}; "
            "lower data.batch_size or add data"
        )
    return num_samples // global_batch


def epoch_batches(
    num_samples: int, global_batch: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
) -> list[list[tuple[int, int]]]:
    """This rank's keys for batches ``start..`` of ``epoch`` (each batch = global_batch / world_size keys)."""
    g = torch.Generator().manual_seed(_sample_seed(seed, epoch, -1))
    perm = torch.randperm(num_samples, generator=g).tolist()
    per_rank = global_batch // world_size
    out = []
    for j in range(start, steps_per_epoch(num_samples, global_batch)):
        chunk = perm[j * global_batch : (j + 1) * global_batch]
        mine = chunk[rank * per_rank : (rank + 1) * per_rank]
        out.append([(epoch, i) for i in mine])
    return out


def train_batches(
    dataset: Dataset,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    collate: Callable[[list[Any]], Any] | None = None,
) -> Iterator[Any]:
    """Endless iterator of this rank's training batches from optimizer step ``start_step`` on.

    A dataset may name its file in ``dataset.source`` and say what its reader left out in
    ``dataset.size_note`` (e.g. ``"after dropping 3 unlabelled instances"``); both go into the error raised
    when it holds fewer samples than one batch.

    Raises:
        DatasetError: fewer samples than ``global_batch``, e.g. ``instances.json: 5 training samples after
            dropping 3 unlabelled instances, fewer than one batch of data.batch_size=8; ...``.
    """
    if global_batch % world_size:
        raise ValueError(f"data.batch_size={global_batch} is not divisible by the {world_size} processes")
    n = len(dataset)  # type: ignore[arg-type]
    if n < global_batch:
        source = getattr(dataset, "source", None) or "training set"
        note = getattr(dataset, "size_note", None)
        raise DatasetError(
            f"{source}: {n} training samples{' ' + note if note else ''}, fewer than one batch of "
            f"data.batch_size={global_batch}; lower data.batch_size or add data"
        )
    spe = steps_per_epoch(n, global_batch)
    seeded = SeededSamples(dataset, seed)
    epoch, start = divmod(start_step, spe)
    while True:
        batches = epoch_batches(n, global_batch, epoch, seed, rank, world_size, start)
        loader = DataLoader(
            seeded,
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=False,
            # the loader draws its workers' base seed from this generator, not from the global RNG
            generator=torch.Generator().manual_seed(_sample_seed(seed, epoch, -2)),
        )
        yield from loader
        epoch, start = epoch + 1, 0


def eval_loader(
    dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1, workers: int = 0, collate: Any = None
) -> DataLoader:
    """Validation loader: this rank's contiguous shard of the dataset, in order (no padding, so the
    metric reduced over ranks counts every sample exactly once)."""
    n = len(dataset)  # type: ignore[arg-type]
    lo, hi = n * rank // world_size, n * (rank + 1) // world_size
    shard = torch.utils.data.Subset(dataset, range(lo, hi))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
