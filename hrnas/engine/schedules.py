"""Learning-rate schedules (HR-NAS spec §5). The search penalty's ρ schedule belongs to the search
(:func:`hrnas.search.schedule.rho_at`).

:func:`build_scheduler` returns stock ``torch.optim.lr_scheduler`` objects — ``OneCycleLR`` for
``onecycle``, ``LambdaLR`` over :func:`lr_factor` for everything else — so their ``state_dict`` is the
standard one. They are stepped once per optimizer step; at step ``t`` (0 before the first
``scheduler.step()``) the learning rate of each parameter group is ``lr · factor(t)``:

- warm-up, ``t < warmup_steps``: ``start + (1 − start)·t / warmup_steps`` (start =
  ``warmup_start_factor``); it replaces the main schedule for those steps;
- ``cosine``: ``m + (1 − m)·½(1 + cos(π p))`` and ``poly``: ``m + (1 − m)·(1 − p)^power``, with
  ``p = (t − warmup_steps)/(total_steps − warmup_steps)`` clipped to [0, 1] and ``m = min_lr_factor``;
- ``step``: ``gamma^(number of milestones ≤ t)``;
- ``exp_staircase``: ``gamma^⌊t / decay_every⌋`` — counted from step 0, warm-up included, as the
  paper's ImageNet recipe (×0.97 every 2.4 epochs);
- ``constant``: 1;
- ``onecycle``: torch's ``OneCycleLR``: starts at ``lr/div_factor``, cosine rise to ``lr`` over the
  first ``pct_start`` of the steps, cosine decay to ``lr/(div_factor·final_div_factor)``; with
  ``cycle_momentum`` momentum/β1 goes 0.95 → 0.85 → 0.95 (the paper's dense-task recipes).
"""

from __future__ import annotations

import functools
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from hrnas.engine.config import ScheduleConfig

__all__ = ["build_scheduler", "lr_factor"]


def lr_factor(step: int, cfg: ScheduleConfig, total_steps: int) -> float:
    """The multiplier of the configured lr at optimizer step ``step`` (not for ``onecycle``).

    Args:
        step: number of optimizer steps already taken (0-based).
        cfg: the ``schedule`` config section.
        total_steps: the run's total optimizer steps (``train.steps``).
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        start = cfg.warmup_start_factor
        return start + (1.0 - start) * step / cfg.warmup_steps
    name = cfg.name
    if name == "constant":
        return 1.0
    if name == "step":
        return cfg.gamma ** sum(1 for m in cfg.milestones if step >= m)
    if name == "exp_staircase":
        if cfg.decay_every <= 0:
            raise ValueError("schedule.decay_every must be > 0 for 'exp_staircase'")
        return cfg.gamma ** (step // cfg.decay_every)
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max((step - cfg.warmup_steps) / span, 0.0), 1.0)
    low = cfg.min_lr_factor
    if name == "cosine":
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "poly":
        return low + (1.0 - low) * (1.0 - progress) ** cfg.poly_power
    raise ValueError(f"unknown schedule {name!r} for lr_factor (onecycle is built by build_scheduler)")


def build_scheduler(optimizer: Optimizer, cfg_schedule: ScheduleConfig, total_steps: int) -> LRScheduler:
    """Build the per-step lr scheduler described by ``cfg_schedule`` for a run of ``total_steps``.

    Each parameter group's *current* ``lr`` is taken as its peak lr (``OneCycleLR`` then lowers it to
    its start value immediately; ``LambdaLR`` keeps it as ``initial_lr``). Call ``scheduler.step()``
    after every ``optimizer.step()``. ``onecycle`` raises if stepped more than ``total_steps`` times.

    Raises:
        ValueError: ``total_steps`` < 1, unknown schedule, or ``onecycle`` with ``warmup_steps`` > 0.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    cfg = cfg_schedule
    if cfg.name == "onecycle":
        if cfg.warmup_steps:
            raise ValueError("'onecycle' has its own warm-up; set schedule.warmup_steps to 0")
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=cfg.onecycle_pct_start,
            anneal_strategy="cos",
            cycle_momentum=cfg.onecycle_cycle_momentum,
            div_factor=cfg.onecycle_div_factor,
            final_div_factor=cfg.onecycle_final_div_factor,
        )
    lr_factor(0, cfg, total_steps)  # validate the name and parameters eagerly
    return LambdaLR(optimizer, lr_lambda=functools.partial(lr_factor, cfg=cfg, total_steps=total_steps))

