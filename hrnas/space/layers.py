"""Layers of the search space: ConvBNAct and the search block (spec §2.6).

The search block is implemented in its fused form: one 1×1 expansion to Σh_k channels, depthwise
k×k convolutions on contiguous channel slices (one slice per kernel size), one BatchNorm over all
hidden channels (its γ are the importance factors of §4.1), one 1×1 projection and a shared BatchNorm.
This is mathematically the per-kernel block of the paper but makes fewer passes over memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrnas.space.depthwise import depthwise_conv2d
from hrnas.space.spec import BlockSpec
from hrnas.space.transformer import LightTransformer


def make_activation(name: str) -> nn.Module:
    """``relu`` → ReLU, ``swish`` → SiLU (x·sigmoid(x))."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r} (known: relu, swish)")


def make_bn(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class ConvBNAct(nn.Sequential):
    """Conv (no bias) → BatchNorm → activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        activation: str = "relu",
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            make_bn(out_channels, bn_momentum, bn_eps),
            make_activation(activation),
        )


class MixedDepthwise(nn.Module):
    """Depthwise convolutions of different kernel sizes on contiguous channel slices.

    (B, Σh, H, W) → (B, Σh, H', W'); slice ``i`` has ``hidden[i]`` channels and kernel ``kernel_sizes[i]``.
    Empty slices must have been dropped by the caller.
    """

    def __init__(self, kernel_sizes: tuple[int, ...], hidden: tuple[int, ...], stride: int, bias: bool = False) -> None:
        super().__init__()
        self.splits = list(hidden)
        self.convs = nn.ModuleList(
            nn.Conv2d(h, h, k, stride, k // 2, groups=h, bias=bias) for k, h in zip(kernel_sizes, hidden, strict=True)
        )

    @staticmethod
    def _conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
        return depthwise_conv2d(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0])  # type: ignore[index]

    def forward(self, x: Tensor) -> Tensor:
        if len(self.convs) == 1:
            return self._conv(self.convs[0], x)
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([self._conv(conv, p) for conv, p in zip(self.convs, parts, strict=True)], dim=1)


class SearchBlock(nn.Module):
    """x (B, C_in, H, W) → (B, C_out, H/s, W/s) as described by a :class:`BlockSpec`.

    out = shortcut(x) + BN_p(P(act(BN_d(DW(act(BN_e(E(x)))))))) [+ transformer(x)], where the shortcut
    is the identity for residual blocks and a grouped 1×1 conv (groups = gcd(C_in, C_out)) otherwise.
    A block without hidden channels keeps only the shortcut, the transformer and ``empty_bias``, a
    constant (buffer) that holds the eval-mode output of channels removed by a shrink.
    """

    def __init__(
        self,
        spec: BlockSpec,
        *,
        activation: str = "relu",
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
        token_grid: int = 8,
        transformer_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        spec = spec.without_empty_groups()
        self.spec = spec
        self.grouped_path: nn.Module | None = None
        hidden = spec.total_hidden
        if hidden > 0:
            self.expand = nn.Conv2d(spec.in_channels, hidden, 1, bias=False)
            self.expand_bn = make_bn(hidden, bn_momentum, bn_eps)
            self.act1 = make_activation(activation)
            self.depthwise = MixedDepthwise(spec.kernel_sizes, spec.hidden, spec.stride)
            self.dw_bn = make_bn(hidden, bn_momentum, bn_eps)
            self.act2 = make_activation(activation)
            self.project = nn.Conv2d(hidden, spec.out_channels, 1, bias=False)
            self.project_bn = make_bn(spec.out_channels, bn_momentum, bn_eps)
        else:
            self.register_buffer("empty_bias", torch.zeros(spec.out_channels))
        self.shortcut = (
            None
            if spec.residual
            else nn.Conv2d(spec.in_channels, spec.out_channels, 1, spec.stride, groups=spec.shortcut_groups, bias=False)
        )
        self.transformer = (
            LightTransformer(
                spec.in_channels,
                spec.out_channels,
                spec.num_queries,
                grid=token_grid,
                dropout=transformer_dropout,
                bn_momentum=bn_momentum,
                bn_eps=bn_eps,
            )
            if spec.num_queries > 0
            else None
        )

    def conv_path(self, x: Tensor) -> Tensor:
        """The expansion → depthwise → projection path (requires hidden channels)."""
        if self.grouped_path is not None:  # deployed form (hrnas.space.deploy)
            return self.grouped_path(x)
        u = self.act1(self.expand_bn(self.expand(x)))
        v = self.act2(self.dw_bn(self.depthwise(u)))
        return self.project_bn(self.project(v))

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.shortcut is None else self.shortcut(x)
        if self.spec.total_hidden > 0:
            out = out + self.conv_path(x)
        else:
            out = out + self.empty_bias.view(1, -1, 1, 1).to(out.dtype)
        if self.transformer is not None:
            out = out + self.transformer(x, out.shape[-2:])
        return out
