"""Depthwise convolution with a faster CPU backward for large kernels.

oneDNN's weight gradient of a depthwise convolution is slow for kernels larger than 3×3 on CPU: for a
(16, 72, 32, 32) input and a 7×7 kernel it takes ~8 ms, four times the forward, and ~9 ms for a
(16, 576, 4, 4) input whose forward takes 0.2 ms. In the supernets the 5×5 and 7×7 weight gradients
were a quarter of a training step. :func:`depthwise_conv2d` keeps the native forward and computes the
backward as two forward-type convolutions:

- input gradient: the gradient convolved with the spatially flipped kernel (stride 1, "same" padding);
- weight gradient: a grouped convolution of the padded input with the gradient as its kernel, one group
  per (sample, channel) pair, summed over the batch.

Both are exact up to float summation order. Used for stride-1, odd-kernel, bias-free depthwise
convolutions when a gradient is needed; everything else (inference, ONNX export, 3×3 kernels, whose
native backward is fast, CUDA) takes the native path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _DepthwiseConv2d(torch.autograd.Function):
    """y = conv2d(x, w, padding=p, groups=C) for x (B, C, H, W), w (C, 1, k, k), k odd, p = k // 2."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, padding: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        p = ctx.padding
        channels = weight.shape[0]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), None, 1, p, 1, channels)
        if ctx.needs_input_grad[1]:
            b, c, h, w = x.shape
            k = weight.shape[-1]
            # (1, B·C, H, W) input and (B·C, 1, H, W) kernels: output (1, B·C, k, k), one k×k map per sample
            # and channel, = Σ_hw grad[b, c, h, w] · x_pad[b, c, h + i, w + j]
            images = x.reshape(1, b * c, h, w)
            kernels = grad.reshape(b * c, 1, h, w)
            per_sample = F.conv2d(images, kernels, None, 1, p, 1, b * c)
            grad_w = per_sample.view(b, c, k, k).sum(0).unsqueeze(1).to(weight.dtype)
        return grad_x, grad_w, None


def uses_fast_backward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> bool:
    """Whether :func:`depthwise_conv2d` takes the custom-backward path for these arguments."""
    k = weight.shape[-1]
    return (
        torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and x.device.type == "cpu"
        and stride == 1
        and bias is None
        and k >= 5
        and k % 2 == 1
        and padding == k // 2
        and weight.shape[-2] == k
        and weight.shape[1] == 1
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Depthwise convolution (groups = channels) of x (B, C, H, W) with weight (C, 1, k, k).

    Same result and gradients as ``F.conv2d(x, weight, bias, stride, padding, groups=C)``; see the
    module docstring for when the faster backward is used.
    """
    if uses_fast_backward(x, weight, bias, stride, padding):
        return _DepthwiseConv2d.apply(x, weight, padding)
    return F.conv2d(x, weight, bias, stride, padding, 1, weight.shape[0])
