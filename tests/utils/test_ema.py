"""EMA: decay rule, parameter and BN-buffer averaging, state dict, shadow replacement."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hrnas.utils.ema import ModelEma, paper_decay


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 2))


def test_paper_decay_values():
    # spec §4.6: cls search B=512, retrain B=1024, Cityscapes B=32
    assert paper_decay(512) == pytest.approx(0.9999875, abs=1e-8)
    assert paper_decay(1024) == pytest.approx(0.999975, abs=1e-8)
    assert paper_decay(32) == pytest.approx(0.99999922, abs=1e-8)
    with pytest.raises(ValueError):
        paper_decay(0)


def test_decay_schedule_cap():
    ema = ModelEma(small_net(), global_batch=32)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.num_updates += 1
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.num_updates = 10**9
    assert ema.current_decay() == pytest.approx(paper_decay(32))
    fixed = ModelEma(small_net(), decay=0.5, warmup_cap=False)
    assert fixed.current_decay() == 0.5
    with pytest.raises(ValueError, match="global_batch"):
        ModelEma(small_net())


def test_update_averages_params_and_bn_buffers():
    model = small_net()
    ema = ModelEma(model, decay=0.9, warmup_cap=False)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    before = copy.deepcopy(ema.module.state_dict())
    model.train()
    model(torch.randn(5, 3, 8, 8))  # moves BN running stats
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    used = ema.update(model)
    assert used == 0.9 and ema.num_updates == 1
    state, now = model.state_dict(), ema.module.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            torch.testing.assert_close(now[key], 0.9 * before[key] + 0.1 * value)
        else:
            assert torch.equal(now[key], value)  # num_batches_tracked copied
    assert now["1.running_mean"].abs().sum() > 0


def test_first_update_uses_capped_decay():
    model = small_net()
    ema = ModelEma(model, global_batch=4096)
    start = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(10.0)
    assert ema.update(model) == pytest.approx(0.1)
    torch.testing.assert_close(ema.module[0].weight, 0.1 * start + 0.9 * model[0].weight)


def test_state_dict_round_trip_and_mismatch():
    model = small_net()
    ema = ModelEma(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.mul_(1.1)
        ema.update(model)
    other = ModelEma(small_net(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3 and other.decay == 0.99
    torch.testing.assert_close(other.module[0].weight, ema.module[0].weight)
    shrunk = nn.Sequential(nn.Conv2d(3, 2, 3, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                           nn.Linear(2 * 6 * 6, 2))
    with pytest.raises(ValueError, match="replace_module"):
        ema.update(shrunk)


def test_replace_module_after_shrink():
    model = small_net()
    ema = ModelEma(model, decay=0.9)
    ema.num_updates = 7
    shrunk = nn.Sequential(nn.Conv2d(3, 2, 3, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                           nn.Linear(2 * 6 * 6, 2))
    shadow = copy.deepcopy(shrunk)
    shadow.train()
    ema.replace_module(shadow)
    assert ema.module is shadow and not shadow.training and ema.num_updates == 7
    assert all(not p.requires_grad for p in shadow.parameters())
    ema.update(shrunk)
    assert ema.num_updates == 8


def test_unwraps_compiled_like_wrappers():
    model = small_net()
    wrapper = nn.Module()
    wrapper._orig_mod = model  # what torch.compile's OptimizedModule exposes
    ema = ModelEma(wrapper, decay=0.5)
    assert isinstance(ema.module, nn.Sequential)
    ema.update(wrapper)
