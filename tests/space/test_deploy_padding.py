"""Padding every kernel group of the deploy form to a multiple of the runtime's blocking, or merging a
block's kernel groups into one depthwise convolution, changes no output."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hrnas.space.deploy import GroupedInferencePath, MergedInferencePath, deploy
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec


def _uneven_model(activation: str) -> torch.nn.Module:
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
    return model


@pytest.mark.parametrize("activation", ["relu", "swish"])
def test_padded_groups_compute_the_same_outputs(activation: str) -> None:
    model = _uneven_model(activation)
    x = torch.randn(2, 3, 64, 64)
    plain, padded = deploy(model), deploy(model, pad_to=8)
    widths = [c.out_channels for m in padded.modules() if isinstance(m, GroupedInferencePath) for c in m.depthwise]
    assert widths and all(w % 8 == 0 for w in widths)
    with torch.no_grad():
        expected, got = plain(x), padded(x)
    assert (expected - got).abs().max() <= 1e-5 * expected.abs().max()  # float summation order only


@pytest.mark.parametrize(("activation", "pad_to"), [("relu", 1), ("relu", 8), ("swish", 8)])
def test_merged_groups_compute_the_same_outputs(activation: str, pad_to: int) -> None:
    model = _uneven_model(activation)
    x = torch.randn(2, 3, 64, 64)
    plain, merged = deploy(model), deploy(model, pad_to=pad_to, merge_groups=True)
    paths = [m for m in merged.modules() if isinstance(m, MergedInferencePath)]
    assert paths and not any(isinstance(m, GroupedInferencePath) for m in merged.modules())
    # one depthwise convolution of the block's largest kernel over all of its (padded) hidden channels
    assert any(p.depthwise.kernel_size[0] == 7 for p in paths)
    if activation == "relu" and pad_to == 8:
        assert all(p.depthwise.out_channels % 8 == 0 for p in paths)
    with torch.no_grad():
        expected, got = plain(x), merged(x)
    assert (expected - got).abs().max() <= 1e-5 * expected.abs().max()


def test_pad_to_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pad_to 0"):
        deploy(build_model(get_spec("test_seg")), pad_to=0)
