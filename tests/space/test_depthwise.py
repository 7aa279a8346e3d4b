"""The custom-backward depthwise convolution equals the native one (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrnas.space.depthwise import depthwise_conv2d, uses_fast_backward


def _native_and_fast(x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
    def native(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.conv2d(a, b, None, 1, b.shape[-1] // 2, 1, b.shape[0])

    def fast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(a, b, None, 1, b.shape[-1] // 2)

    out = []
    for fn in (native, fast):
        xa, wa = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        y = fn(xa, wa)
        y.backward(grad)
        out.append([y.detach(), xa.grad, wa.grad])
    return tuple(out)


@pytest.mark.parametrize("k", [5, 7])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice"])
@pytest.mark.parametrize("shape", [(2, 6, 9, 7), (3, 4, 2, 3)])
def test_values_and_gradients_match_native(k: int, layout: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    b, c, h, w = shape
    if layout == "channel_slice":  # what MixedDepthwise feeds it: a channel slice of a channels_last tensor
        x = torch.randn(b, 3 * c, h, w).to(memory_format=torch.channels_last)[:, c : 2 * c]
    else:
        x = torch.randn(shape)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k)
    grad = torch.randn(b, c, h, w)
    assert uses_fast_backward(x.requires_grad_(), weight, None, 1, k // 2)
    native, fast = _native_and_fast(x, weight, grad)
    for name, a, f in zip(("output", "grad_input", "grad_weight"), native, fast, strict=True):
        torch.testing.assert_close(f, a, rtol=1e-5, atol=1e-4, msg=name)


def test_gradcheck_double() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv2d(a, b, None, 1, 2), (x, w))


def test_native_path_where_not_faster_or_not_applicable() -> None:
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert not uses_fast_backward(x, torch.randn(4, 1, 3, 3), None, 1, 1)  # 3×3: native backward is fast
    assert not uses_fast_backward(x, torch.randn(4, 1, 5, 5), None, 2, 2)  # stride 2
    assert not uses_fast_backward(x, torch.randn(4, 1, 5, 5), None, 1, 0)  # not "same" padding
    assert not uses_fast_backward(x, torch.randn(4, 1, 5, 5), torch.zeros(4), 1, 2)  # bias (deployed form)
    with torch.no_grad():
        assert not uses_fast_backward(x, torch.randn(4, 1, 5, 5), None, 1, 2)
