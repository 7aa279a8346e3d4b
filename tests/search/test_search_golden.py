"""A short deterministic search on ``test_seg`` gives the recorded architecture and search log.

The search (penalty, ρ control towards a MAC target, progressive shrinks that follow the cost path with
optimizer and EMA remapping, the final prune to the budget) runs on a tiny generated segmentation task,
single-threaded on the CPU; its ``arch.json`` must equal ``golden/arch.json`` byte for byte and its search
log ``golden/search_log.json``. The first recording, made with the MAC formulas wired into the search,
was matched unchanged once the search priced everything through
:class:`~hrnas.space.cost_model.CostModel` (the seam is neutral); the files were recorded again, through
the seam with the default MAC model, when the shrinks began to follow the cost path (each shrink cuts
down to the path when the penalty is behind it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hrnas.search.controller import SearchController
from hrnas.search.shrink import rebind_scheduler
from hrnas.space.cost import cost
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec
from hrnas.utils.ema import ModelEma

GOLDEN = Path(__file__).with_name("golden")
SIZE = (64, 64)
STEPS = 40


def _data(gen: torch.Generator, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and 16×16 labels: the class of a cell is its quantised mean red-minus-blue intensity."""
    images = torch.randn(n, 3, *SIZE, generator=gen)
    cells = F.avg_pool2d(images[:, 0] - images[:, 2], 4)
    labels = torch.bucketize(cells, torch.tensor([-0.3, -0.1, 0.1, 0.3]))
    return images, labels


def run_search(run_dir: Path) -> list[dict[str, Any]]:
    """Search ``test_seg`` for ``STEPS`` steps; write ``arch.json`` in ``run_dir``; return the search log."""
    torch.manual_seed(1995)
    gen = torch.Generator().manual_seed(7)
    spec = get_spec("test_seg")
    model: nn.Module = build_model(spec, init="mnas")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    ema = ModelEma(model, decay=0.9)
    target = int(0.55 * cost(spec, SIZE).macs)
    ctl = SearchController(
        model, spec, optimizer, ema, SIZE, threshold=2e-2, rho=0.5, rho_free_steps=2, rho_warmup_steps=6,
        shrink_every=15, min_saving=0, budget=target, total_steps=STEPS,
    )
    batches = [_data(gen) for _ in range(4)]
    log = []
    for step in range(STEPS):
        images, labels = batches[step % len(batches)]
        model.train()
        loss = F.cross_entropy(model(images), labels) + ctl.penalty(model, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update(model)
        done = step + 1
        if ctl.should_shrink(done) or done == STEPS:
            result = ctl.shrink_now(model, optimizer, ema, done, final=done == STEPS)
            if result.shrunk:
                model, optimizer = result.model, result.optimizer
                rebind_scheduler(scheduler, optimizer)
            log.append(result.record)
    ctl.spec.save(run_dir / "arch.json")
    return log


def test_search_gives_the_recorded_architecture(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = run_search(tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert got == json.loads((GOLDEN / "search_log.json").read_text())
    assert (tmp_path / "arch.json").read_bytes() == (GOLDEN / "arch.json").read_bytes()
