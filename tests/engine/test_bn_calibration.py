"""BN calibration: exact cumulative statistics, restored momenta and modes, edge cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hrnas.engine.bn_calibration import calibrate_bn


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, bias=True), nn.BatchNorm2d(5, momentum=0.01), nn.ReLU())
    model.eval()
    return model


def test_running_stats_are_exact_means_over_batches():
    model = make_model()
    batches = [torch.randn(4, 3, 10, 10) * (i + 1) + i for i in range(6)]
    calibrate_bn(model, batches, num_batches=5)
    with torch.no_grad():
        pre_bn = [model[0](b) for b in batches[:5]]  # activations entering the BN
    all_acts = torch.cat(pre_bn)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, all_acts.mean(dim=(0, 2, 3)))
    per_batch_var = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in pre_bn])
    torch.testing.assert_close(bn.running_var, per_batch_var.mean(0))
    assert bn.num_batches_tracked.item() == 5
    assert bn.momentum == 0.01 and not model.training and not bn.training


def test_tuple_batches_custom_forward_and_grad_free():
    model = make_model()
    model.train()
    calls = []

    def forward(m, batch):
        calls.append(torch.is_grad_enabled())
        return m(batch["image"])

    batches = ({"image": torch.randn(2, 3, 6, 6)} for _ in range(10))
    calibrate_bn(model, batches, num_batches=3, forward=forward)
    assert calls == [False, False, False]
    assert model.training  # mode restored
    calibrate_bn(model, [(torch.randn(2, 3, 6, 6), torch.zeros(2))], num_batches=3)
    assert model[1].num_batches_tracked.item() == 1  # a shorter iterable is fine


def test_zero_batches_and_empty_iterable():
    model = make_model()
    before = model[1].running_mean.clone()
    assert calibrate_bn(model, [], num_batches=0) is model
    with pytest.raises(ValueError, match="empty"):
        calibrate_bn(model, [], num_batches=3)
    torch.testing.assert_close(model[1].running_mean, before)
    assert model[1].momentum == 0.01
    with pytest.raises(TypeError, match="forward="):
        calibrate_bn(model, ["not a tensor"], num_batches=1)
    assert model[1].momentum == 0.01


def test_model_without_bn_is_untouched():
    model = nn.Linear(2, 2)
    assert calibrate_bn(model, [torch.randn(1, 2)], num_batches=1) is model
