"""What every demo does first: search a preset's supernet, then retrain the searched network from the
search's weights (``hrnas search`` then ``hrnas retrain --init inherit``), printing the steps and timing them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrnas.engine.config import load_config
from hrnas.space.cost import cost, format_macs

if TYPE_CHECKING:
    from hrnas.engine.config import RunConfig
    from hrnas.engine.trainer import TrainResult
    from hrnas.tasks.base import Task


@dataclass(frozen=True)
class SearchAndRetrain:
    """The first two steps of a demo: both run configs, the task, the supernet spec and the input size
    its MACs are counted at, both training results and the seconds each took."""

    search_cfg: RunConfig
    retrain_cfg: RunConfig
    task: Task
    supernet: Any  # the task's supernet spec (NetSpec or PointPillarsSpec)
    input_size: tuple[int, ...]
    searched: TrainResult
    retrained: TrainResult
    search_seconds: float
    retrain_seconds: float


def search_target(cfg: Any) -> str:
    """The search's budget as text: ``2.5 ms (latency)`` for a latency search, else the MAC target."""
    if cfg.search.target_latency_ms is not None:
        return f"{cfg.search.target_latency_ms:g} ms (latency)"
    return format_macs(cfg.search.target_macs) if cfg.search.target_macs is not None else "none"


def search_and_retrain(
    preset: str,
    search_overrides: Sequence[str],
    retrain_overrides: Sequence[str],
    out_dir: Path,
    total_steps: int,
    searched_what: str = "architecture",
) -> SearchAndRetrain:
    """Search ``preset`` into ``out_dir/search``, then retrain the searched network into
    ``out_dir/retrain`` starting from the search's weights, printing steps 1 and 2 of ``total_steps``.

    The short demo budget is spent better continuing from the search's weights than from scratch
    (`hrnas retrain --init inherit`); benchmarks/pareto.py compares this recipe with the supernet thinned
    uniformly and a hand-designed network, each trained for the same total steps.
    """
    from hrnas.engine.checkpoint import load_checkpoint
    from hrnas.engine.trainer import inference_state, train
    from hrnas.tasks.base import get_task

    search_cfg = load_config(preset, search_overrides)
    retrain_cfg = load_config(preset, retrain_overrides)
    size = tuple(search_cfg.penalty_input_size)
    task = get_task(search_cfg)
    supernet = task.build_spec()
    print(
        f"[1/{total_steps}] search: {supernet.name} ({format_macs(cost(supernet, size).macs)} MACs at "
        f"{size[0]}×{size[1]}) → target {search_target(search_cfg)}"
    )
    t0 = time.perf_counter()
    searched = train(search_cfg, out_dir / "search")
    t_search = time.perf_counter() - t0

    print(f"[2/{total_steps}] retrain the searched {searched_what} (weights inherited from the search)")
    t0 = time.perf_counter()
    init_state = inference_state(load_checkpoint(out_dir / "search" / "final.pt", expect_task=task.name))
    retrained = train(retrain_cfg, out_dir / "retrain", arch=searched.spec, init_state=init_state)
    return SearchAndRetrain(
        search_cfg, retrain_cfg, task, supernet, size, searched, retrained, t_search, time.perf_counter() - t0
    )
