"""Padding every kernel group of the deploy form to a multiple of the runtime's blocking changes no output."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hrnas.space.deploy import GroupedInferencePath, deploy
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec


@pytest.mark.parametrize("activation", ["relu", "swish"])
def test_padded_groups_compute_the_same_outputs(activation: str) -> None:
    spec = get_spec("test_seg")
    blocks = {}
    for i, (path, block) in enumerate(spec.blocks()):  # uneven widths, one of them a single channel
        hidden = tuple(max(0, h - 3 - i - j) if j else 1 for j, h in enumerate(block.hidden))
        blocks[path] = replace(block, hidden=hidden)
    spec = replace(spec.replace_blocks(blocks), activation=activation)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 64, 64)
    plain, padded = deploy(model), deploy(model, pad_to=8)
    widths = [c.out_channels for m in padded.modules() if isinstance(m, GroupedInferencePath) for c in m.depthwise]
    assert widths and all(w % 8 == 0 for w in widths)
    with torch.no_grad():
        expected, got = plain(x), padded(x)
    assert (expected - got).abs().max() <= 1e-5 * expected.abs().max()  # float summation order only


def test_pad_to_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pad_to 0"):
        deploy(build_model(get_spec("test_seg")), pad_to=0)
