"""The search block in its per-kernel form, as a same-machine speed reference for ``speed.py``.

The paper writes the search block (spec §2.6) as one branch per kernel size k: a 1×1 expansion to h_k
channels with BN and ReLU, a depthwise k×k convolution with BN and ReLU, and a 1×1 projection back to
C_out; the branches are summed and share one BN. That is also how the reference implementation of
HR-NAS builds it, with plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.ReLU`` modules. hrnas computes the
same function with one expansion and one projection over all kernel groups
(:class:`hrnas.space.layers.SearchBlock`).

:func:`to_per_kernel` swaps every search block of a built network for this form (same spec, fresh
weights; stem, fusion, shortcuts, transformers and head are kept), so the two can be timed side by side
in one process on the same machine.
"""

from __future__ import annotations

from torch import Tensor, nn

from hrnas.space.layers import SearchBlock


class PerKernelSearchBlock(nn.Module):
    """out = shortcut(x) + BN(Σ_k P_k(ReLU(BN(DW_k(ReLU(BN(E_k(x)))))))) [+ transformer(x)]."""

    def __init__(self, block: SearchBlock) -> None:
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

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.shortcut is None else self.shortcut(x)
        out = out + self.project_bn(sum(branch(x) for branch in self.branches))
        if self.transformer is not None:
            out = out + self.transformer(x, out.shape[-2:])
        return out


def to_per_kernel(model: nn.Module) -> int:
    """Replace, in place, every search block that has hidden channels; returns how many were replaced."""
    replaced = 0
    for name, block in list(model.named_modules()):
        if not isinstance(block, SearchBlock) or block.spec.total_hidden == 0:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        new = PerKernelSearchBlock(block)
        if isinstance(parent, (nn.ModuleList, nn.Sequential)):
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
        replaced += 1
    return replaced
