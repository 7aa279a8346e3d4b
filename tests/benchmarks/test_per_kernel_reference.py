"""The per-kernel speed reference of benchmarks/speed.py is the same network as hrnas's fused blocks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from hrnas.space.layers import SearchBlock
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "per_kernel_reference.py"


def _reference_module():
    spec = importlib.util.spec_from_file_location("per_kernel_reference", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["test_cls", "test_seg", "test_cls_all"])
def test_per_kernel_form_with_copied_weights_equals_fused_blocks(name: str) -> None:
    reference = _reference_module()
    torch.manual_seed(0)
    fused = build_model(get_spec(name))
    with torch.no_grad():  # non-trivial BN statistics and scales
        for m in fused.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    per_kernel = build_model(get_spec(name))
    per_kernel.load_state_dict(fused.state_dict())
    blocks = sum(isinstance(m, SearchBlock) and m.spec.total_hidden > 0 for m in fused.modules())
    assert reference.to_per_kernel(per_kernel, copy_weights=True) == blocks > 0
    assert not any(isinstance(m, SearchBlock) and m.spec.total_hidden > 0 for m in per_kernel.modules())

    x = torch.randn(2, 3, 64, 64)
    fused.eval(), per_kernel.eval()
    with torch.no_grad():
        torch.testing.assert_close(per_kernel(x), fused(x), rtol=1e-4, atol=1e-4)
    # training mode: batch statistics per channel are the same whether the BN is shared or per group
    fused.train(), per_kernel.train()
    torch.manual_seed(1)
    out_fused = fused(x)
    torch.manual_seed(1)
    out_per_kernel = per_kernel(x)
    torch.testing.assert_close(out_per_kernel, out_fused, rtol=1e-4, atol=1e-4)
