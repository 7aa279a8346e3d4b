"""The search block in its per-kernel form, as a same-machine speed reference for ``speed.py``.

The paper writes the search block (spec §2.6) as one branch per kernel size k: a 1×1 expansion to h_k
channels with BN and ReLU, a depthwise k×k convolution with BN and ReLU, and a 1×1 projection back to
C_out; the branches are summed and share one BN. That is also how the reference implementation of
HR-NAS builds it, with plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.ReLU`` modules. hrnas computes the
same function with one expansion and one projection over all kernel groups
(:class:`hrnas.space.layers.SearchBlock`).

:func:`to_per_kernel` swaps every search block of a built network for this form (same spec, fresh
weights; stem, fusion, shortcuts, transformers and head are kept), so the two can be timed side by side
in one process on the same machine. With ``copy_weights=True`` the per-kernel blocks take the fused
blocks' weights and compute the same outputs, which the tests check.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrnas.space.layers import SearchBlock


class PerKernelSearchBlock(nn.Module):
    """out = shortcut(x) + BN(Σ_k P_k(ReLU(BN(DW_k(ReLU(BN(E_k(x)))))))) [+ transformer(x)]."""

    def __init__(self, block: SearchBlock, copy_weights: bool = False) -> None:
        super().__init__()
        spec = block.spec
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(spec.in_channels, h, 1, bias=False),
                nn.BatchNorm2d(h),
                nn.ReLU(inplace=True),
                nn.Conv2d(h, h, k, spec.stride, k // 2, groups=h, bias=False),
                nn.BatchNorm2d(h),
                nn.ReLU(inplace=True),
                nn.Conv2d(h, spec.out_channels, 1, bias=False),
            )
            for k, h in zip(spec.kernel_sizes, spec.hidden, strict=True)
            if h > 0
        )
        self.project_bn = nn.BatchNorm2d(spec.out_channels)
        self.shortcut = block.shortcut
        self.transformer = block.transformer
        if copy_weights:
            self._copy_weights(block)

    @torch.no_grad()
    def _copy_weights(self, block: SearchBlock) -> None:
        """Group k takes rows k of the expansion and its BN, its depthwise conv and BN, columns k of the
        projection; the projection BN is shared."""
        start = 0
        for branch, conv in zip(self.branches, block.depthwise.convs, strict=True):
            group = slice(start, start + conv.out_channels)
            start = group.stop
            expand, expand_bn, _, depthwise, dw_bn, _, project = branch
            expand.weight.copy_(block.expand.weight[group])
            depthwise.weight.copy_(conv.weight)
            project.weight.copy_(block.project.weight[:, group])
            for bn, shared in ((expand_bn, block.expand_bn), (dw_bn, block.dw_bn)):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name).copy_(getattr(shared, name)[group])
                bn.eps, bn.momentum = shared.eps, shared.momentum
        self.project_bn.load_state_dict(block.project_bn.state_dict())
        self.project_bn.eps, self.project_bn.momentum = block.project_bn.eps, block.project_bn.momentum

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.shortcut is None else self.shortcut(x)
        out = out + self.project_bn(sum(branch(x) for branch in self.branches))
        if self.transformer is not None:
            out = out + self.transformer(x, out.shape[-2:])
        return out


def to_per_kernel(model: nn.Module, copy_weights: bool = False) -> int:
    """Replace, in place, every search block that has hidden channels; returns how many were replaced.

    ``copy_weights``: the new blocks take the old blocks' weights (same outputs) instead of fresh ones."""
    replaced = 0
    for name, block in list(model.named_modules()):
        if not isinstance(block, SearchBlock) or block.spec.total_hidden == 0:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        new = PerKernelSearchBlock(block, copy_weights)
        if isinstance(parent, (nn.ModuleList, nn.Sequential)):
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
        replaced += 1
    return replaced
