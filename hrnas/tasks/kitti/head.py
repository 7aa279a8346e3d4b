"""Single-scale anchor head of PointPillars (OpenPCDet ``AnchorHeadSingle``, kitti-spec §2.7).

Three 1×1 convolutions with bias on the backbone's stride-2 BEV map: class logits (``A·K`` channels for
``A`` anchors per location and ``K`` classes), box residuals (``A·7``) and direction logits (``A·bins``).
Outputs are laid out per anchor in the order of :func:`hrnas.tasks.kitti.anchors.generate_anchors` flattened.
Its exact cost is :class:`hrnas.tasks.kitti.cost.AnchorHeadSpec` with the same arguments.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor, nn

__all__ = ["AnchorHead", "HeadOutput"]


class HeadOutput(NamedTuple):
    """Per-anchor predictions, ``N = H·W·A`` anchors in flattened-anchor order.

    ``cls_logits (B, N, K)``, ``box_deltas (B, N, code_size)``, ``dir_logits (B, N, bins)`` (``None`` when
    the head has no direction classifier).
    """

    cls_logits: Tensor
    box_deltas: Tensor
    dir_logits: Tensor | None


class AnchorHead(nn.Module):
    """1×1-conv anchor head.

    Args:
        in_channels: channels ``C`` of the input map ``(B, C, H, W)``.
        num_anchors_per_location: ``A`` (6 for 3 classes × 2 rotations).
        num_classes: ``K`` logits per anchor (every anchor predicts every class, as the reference).
        num_dir_bins: direction bins per anchor, 0 for no direction classifier.
        code_size: box residual size (7 for :class:`hrnas.tasks.kitti.anchors.ResidualCoder`).
        prior_prob: initial foreground probability; the class bias starts at ``-log((1 - p) / p)``.

    Initialisation as the reference: class bias from the prior, box weights ``N(0, 0.001)``, everything
    else PyTorch's default.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors_per_location: int = 6,
        num_classes: int = 3,
        num_dir_bins: int = 2,
        code_size: int = 7,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if min(in_channels, num_anchors_per_location, num_classes, code_size) < 1 or num_dir_bins < 0:
            raise ValueError(
                f"AnchorHead: bad sizes in_channels={in_channels} anchors={num_anchors_per_location} "
                f"classes={num_classes} dir_bins={num_dir_bins} code_size={code_size}"
            )
        if not 0 < prior_prob < 1:
            raise ValueError(f"AnchorHead: prior_prob must be in (0, 1), got {prior_prob}")
        self.num_anchors_per_location = num_anchors_per_location
        self.num_classes = num_classes
        self.num_dir_bins = num_dir_bins
        self.code_size = code_size
        a = num_anchors_per_location
        self.conv_cls = nn.Conv2d(in_channels, a * num_classes, kernel_size=1)
        self.conv_box = nn.Conv2d(in_channels, a * code_size, kernel_size=1)
        self.conv_dir = nn.Conv2d(in_channels, a * num_dir_bins, kernel_size=1) if num_dir_bins else None
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.normal_(self.conv_box.weight, mean=0.0, std=0.001)

    @staticmethod
    def _per_anchor(x: Tensor, per_anchor: int) -> Tensor:
        b = x.shape[0]
        return x.permute(0, 2, 3, 1).reshape(b, -1, per_anchor)

    def forward(self, x: Tensor) -> HeadOutput:
        """``x (B, C, H, W)`` → :class:`HeadOutput` with ``N = H·W·A``."""
        cls = self._per_anchor(self.conv_cls(x), self.num_classes)
        box = self._per_anchor(self.conv_box(x), self.code_size)
        dirs = self._per_anchor(self.conv_dir(x), self.num_dir_bins) if self.conv_dir is not None else None
        return HeadOutput(cls, box, dirs)
