"""LR schedules (exact values at key steps, standard state dicts)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

from hrnas.engine.checkpoint import load_checkpoint, save_checkpoint
from hrnas.engine.config import ScheduleConfig
from hrnas.engine.schedules import build_scheduler, lr_factor


def lrs(cfg: ScheduleConfig, total: int, lr: float = 1.0, optimizer: str = "sgd") -> list[float]:
    """The lr seen by each of the ``total`` optimizer steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    if optimizer == "sgd":
        opt = torch.optim.SGD([param], lr=lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW([param], lr=lr)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine():
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, warmup_start_factor=0.1, min_lr_factor=0.0)
    got = lrs(cfg, 110, lr=2.0)
    assert got[0] == pytest.approx(0.2)
    assert got[5] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert got[10] == pytest.approx(2.0)
    assert got[60] == pytest.approx(1.0)  # half-way through the cosine
    assert got[109] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_poly_with_floor():
    cfg = ScheduleConfig(name="poly", poly_power=0.9, min_lr_factor=0.1)
    got = lrs(cfg, 100)
    assert got[0] == pytest.approx(1.0)
    assert got[50] == pytest.approx(0.1 + 0.9 * 0.5**0.9)
    assert lr_factor(100, cfg, 100) == pytest.approx(0.1)
    assert lr_factor(500, cfg, 100) == pytest.approx(0.1)  # clipped past the end


def test_step_and_constant():
    cfg = ScheduleConfig(name="step", milestones=(3, 6), gamma=0.1)
    assert lrs(cfg, 8) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert lrs(ScheduleConfig(name="constant"), 4) == [1.0] * 4


def test_exp_staircase_with_imagenet_warmup():
    cfg = ScheduleConfig(name="exp_staircase", warmup_steps=4, warmup_start_factor=0.5, gamma=0.97,
                         decay_every=3)
    got = lrs(cfg, 10, lr=0.032)
    assert got[:4] == pytest.approx([0.016, 0.02, 0.024, 0.028])
    assert got[4:] == pytest.approx([0.032 * 0.97, 0.032 * 0.97, 0.032 * 0.97**2, 0.032 * 0.97**2,
                                     0.032 * 0.97**2, 0.032 * 0.97**3])


def test_onecycle_matches_paper_recipe():
    cfg = ScheduleConfig(name="onecycle")
    total, peak = 1000, 0.04
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=peak, betas=(0.9, 0.999))
    sched = build_scheduler(opt, cfg, total)
    assert isinstance(sched, OneCycleLR)
    seen, betas = [], []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0]["betas"][0])
        opt.step()
        sched.step()
    top = round(0.3 * total) - 1  # torch's end of the rising phase
    assert seen[0] == pytest.approx(peak / 25)
    assert seen[top] == pytest.approx(peak)
    assert max(seen) == pytest.approx(peak)
    assert seen[-1] == pytest.approx(peak / (25 * 1e4))
    mid_rise = top // 2
    expected = peak / 25 + (peak - peak / 25) * 0.5 * (1 - math.cos(math.pi * mid_rise / top))
    assert seen[mid_rise] == pytest.approx(expected)
    assert betas[0] == pytest.approx(0.95) and betas[top] == pytest.approx(0.85)
    assert betas[-1] == pytest.approx(0.95)


def test_state_dict_is_standard_and_resumes():
    cfg = ScheduleConfig(name="cosine", warmup_steps=5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_scheduler(opt, cfg, 50)
    assert isinstance(sched, LambdaLR)
    for _ in range(17):
        opt.step()
        sched.step()
    state = sched.state_dict()
    torch.save(state, io.BytesIO())  # plain, picklable state
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_scheduler(opt2, cfg, 50)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


@pytest.mark.parametrize("name", ["onecycle", "cosine", "exp_staircase"])
def test_state_dict_fits_a_checkpoint(tmp_path, name):
    cfg = ScheduleConfig(name=name, decay_every=3)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, cfg, 20)
    opt.step()
    sched.step()
    path = save_checkpoint(tmp_path / "s.pt", {"scheduler": sched.state_dict(), "optimizer": opt.state_dict()})
    fresh_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    fresh = build_scheduler(fresh_opt, cfg, 20)
    fresh.load_state_dict(load_checkpoint(path)["scheduler"])
    assert fresh.last_epoch == 1 and fresh.get_last_lr() == sched.get_last_lr()


def test_bad_arguments():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(opt, ScheduleConfig(), 0)
    with pytest.raises(ValueError, match="warm-up"):
        build_scheduler(opt, ScheduleConfig(name="onecycle", warmup_steps=3), 10)
    with pytest.raises(ValueError, match="decay_every"):
        build_scheduler(opt, ScheduleConfig(name="exp_staircase"), 10)
