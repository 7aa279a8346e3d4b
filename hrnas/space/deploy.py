"""Inference form of a network: every BatchNorm folded into the convolution before it.

``deploy(model)`` returns a new module in eval mode (the input is not modified) that computes the same
eval-mode outputs with fewer passes over memory: each Conv→BN pair becomes one Conv with bias, and
modules that only act in training (dropout) are removed.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from hrnas.space.layers import ConvBNAct, SearchBlock
from hrnas.space.pointpillars import DeconvBNAct
from hrnas.space.transformer import LightTransformer


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels: slice | None = None) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` in eval mode; ``channels`` picks the BN entries that
    belong to this conv's outputs (for convs that feed a slice of a shared BN)."""
    sl = channels if channels is not None else slice(0, bn.num_features)
    scale = bn.weight[sl] / torch.sqrt(bn.running_var[sl] + bn.eps)
    shift = bn.bias[sl] - bn.running_mean[sl] * scale
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    fused.bias.copy_(bias)
    return fused


@torch.no_grad()
def fold_bn_transposed(conv: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.ConvTranspose2d:
    """A transposed conv (groups 1) with bias equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.ConvTranspose2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.output_padding,
        bias=True,
        dilation=conv.dilation,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))  # weight is (C_in, C_out, k, k)
    shift = bn.bias - bn.running_mean * scale
    fused.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
    return fused


class GroupedInferencePath(nn.Module):
    """A deployed search block's expansion → depthwise → projection path, computed kernel group by group.

    Σ_g P_g(act(DW_g(act(E_g(x))))) with BN folded into every conv, where E_g are the expansion rows of
    group g and P_g the projection columns (the first carries the projection's bias). Each depthwise
    convolution reads a tensor of its own and the groups are summed after projection, so inference
    makes no channel-slice copies and no concatenation of the wide hidden tensor. Equal to the fused
    layout up to float summation order.
    """

    def __init__(
        self, expand: list[nn.Conv2d], depthwise: list[nn.Conv2d], project: list[nn.Conv2d], act: nn.Module
    ) -> None:
        super().__init__()
        if not len(expand) == len(depthwise) == len(project) > 0:
            raise ValueError("GroupedInferencePath needs one expansion, depthwise and projection per group")
        self.expand = nn.ModuleList(expand)
        self.depthwise = nn.ModuleList(depthwise)
        self.project = nn.ModuleList(project)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor | None = None
        for e, d, p in zip(self.expand, self.depthwise, self.project, strict=True):
            y = p(self.act(d(self.act(e(x)))))
            out = y if out is None else out + y
        assert out is not None
        return out


def _padded(conv: nn.Conv2d, channels: int, *, inputs: bool = False, depthwise: bool = False) -> nn.Conv2d:
    """``conv`` with its output channels (or, with ``inputs``, its input channels) zero-padded to
    ``channels``; a ``depthwise`` conv grows in both. The extra outputs are exactly 0 (zero weight and
    bias) and extra inputs are read with zero weight, so the result is unchanged."""
    n = conv.out_channels if not inputs else conv.in_channels
    if channels == n:
        return conv
    in_ch = channels if inputs or depthwise else conv.in_channels
    out_ch = channels if not inputs or depthwise else conv.out_channels
    padded = nn.Conv2d(
        in_ch,
        out_ch,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        channels if depthwise else 1,
        bias=conv.bias is not None,
    ).to(conv.weight)
    padded.weight.zero_()
    if inputs and not depthwise:
        padded.weight[:, : conv.in_channels].copy_(conv.weight)
    else:
        padded.weight[: conv.out_channels].copy_(conv.weight)
    if conv.bias is not None:
        padded.bias.zero_()
        padded.bias[: conv.out_channels].copy_(conv.bias)
    return padded


def _padding_for(block: SearchBlock, pad_to: int) -> int:
    """``pad_to``, or 1 when the block's activation does not map 0 to 0 (padded channels would not stay 0)."""
    if pad_to > 1 and float(block.act1(torch.zeros(1)).abs()) != 0.0:
        return 1
    return pad_to


@torch.no_grad()
def _grouped_path(block: SearchBlock, pad_to: int = 1) -> GroupedInferencePath:
    """The block's path with every BN folded: group g gets rows g of the expansion, its depthwise conv
    and columns g of the projection. With ``pad_to`` > 1 each group's channels are zero-padded up to a
    multiple of it (when the activation maps 0 to 0, so the padding stays exactly 0)."""
    pad_to = _padding_for(block, pad_to)
    expands, depthwise, projects = [], [], []
    project = fold_bn(block.project, block.project_bn)
    start = 0
    for i, conv in enumerate(block.depthwise.convs):
        group = slice(start, start + conv.out_channels)
        start = group.stop
        width = -(-conv.out_channels // pad_to) * pad_to
        e = nn.Conv2d(block.expand.in_channels, conv.out_channels, 1, bias=False).to(block.expand.weight)
        e.weight.copy_(block.expand.weight[group])
        expands.append(_padded(fold_bn(e, block.expand_bn, group), width))
        depthwise.append(_padded(fold_bn(conv, block.dw_bn, group), width, depthwise=True))
        p = nn.Conv2d(conv.out_channels, project.out_channels, 1, bias=i == 0).to(project.weight)
        p.weight.copy_(project.weight[:, group])
        if i == 0:
            p.bias.copy_(project.bias)
        projects.append(_padded(p, width, inputs=True))
    assert type(block.act1) is type(block.act2)
    return GroupedInferencePath(expands, depthwise, projects, block.act1)


class MergedInferencePath(nn.Module):
    """A deployed search block's path as one inverted residual: P(act(DW(act(E(x))))), BN folded.

    Every kernel group's depthwise kernel is zero-padded (centred) to the largest kernel of the block,
    so one depthwise convolution of that size computes all groups: more multiply-adds than one
    convolution per group, but three operators instead of three per group plus the sums, which pays
    on CPUs for narrow groups at batch 1. Equal to the per-group form up to float summation order.
    """

    def __init__(self, expand: nn.Conv2d, depthwise: nn.Conv2d, project: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.expand, self.depthwise, self.project, self.act = expand, depthwise, project, act

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.act(self.depthwise(self.act(self.expand(x)))))


@torch.no_grad()
def _merged_path(block: SearchBlock, pad_to: int = 1) -> MergedInferencePath:
    """The block's path with every BN folded and the kernel groups merged (see
    :class:`MergedInferencePath`); the hidden channels are zero-padded to a multiple of ``pad_to`` when
    the activation maps 0 to 0."""
    pad_to = _padding_for(block, pad_to)
    convs = list(block.depthwise.convs)
    size = max(conv.kernel_size[0] for conv in convs)
    total = sum(conv.out_channels for conv in convs)
    dw = nn.Conv2d(total, total, size, convs[0].stride, size // 2, groups=total, bias=True).to(block.expand.weight)
    dw.weight.zero_()
    start = 0
    for conv in convs:
        group = slice(start, start + conv.out_channels)
        start = group.stop
        folded = fold_bn(conv, block.dw_bn, group)
        k = conv.kernel_size[0]
        o = (size - k) // 2
        dw.weight[group, :, o : o + k, o : o + k].copy_(folded.weight)
        dw.bias[group].copy_(folded.bias)
    width = -(-total // pad_to) * pad_to
    expand = _padded(fold_bn(block.expand, block.expand_bn), width)
    project = _padded(fold_bn(block.project, block.project_bn), width, inputs=True)
    assert type(block.act1) is type(block.act2)
    return MergedInferencePath(expand, _padded(dw, width, depthwise=True), project, block.act1)


def _deploy_block(block: SearchBlock, pad_to: int = 1, merge_groups: bool = False) -> None:
    if block.spec.total_hidden == 0:
        return
    block.grouped_path = _merged_path(block, pad_to) if merge_groups else _grouped_path(block, pad_to)
    for name in ("expand", "expand_bn", "depthwise", "dw_bn", "project", "project_bn"):
        delattr(block, name)


def _deploy_transformer(t: LightTransformer) -> None:
    t.projector = fold_bn(t.projector, t.input_norm)
    t.input_norm = nn.Identity()
    t.reverse = fold_bn(t.reverse, t.reverse_norm)
    t.reverse_norm = nn.Identity()


def _strip_dropout(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout):
            setattr(module, name, nn.Identity())
        else:
            _strip_dropout(child)


def deploy(model: nn.Module, pad_to: int = 1, merge_groups: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into convolutions and dropout removed.

    ``pad_to`` > 1 zero-pads every kernel group of every search block to a multiple of that many
    channels (same outputs): ONNX Runtime's CPU kernels run convolutions in blocked layouts (8 channels
    with AVX2, 16 with AVX-512) and fall back to a layout several times slower for other widths, so a
    searched network of uneven widths runs 2–4× faster padded (``benchmarks/latency_model.py``).
    ``merge_groups`` computes each search block as one expansion, one depthwise convolution of the
    block's largest kernel and one projection (:class:`MergedInferencePath`; then ``pad_to`` pads the
    block's hidden channels as a whole) instead of one path per kernel group.
    """
    if pad_to < 1:
        raise ValueError(f"pad_to {pad_to}: expected at least 1")
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, SearchBlock):
            _deploy_block(module, pad_to, merge_groups)
        elif isinstance(module, LightTransformer):
            _deploy_transformer(module)
        elif isinstance(module, ConvBNAct) and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fold_bn(module[0], module[1])
            module[1] = nn.Identity()
        elif isinstance(module, DeconvBNAct) and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fold_bn_transposed(module[0], module[1])
            module[1] = nn.Identity()
    _strip_dropout(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
