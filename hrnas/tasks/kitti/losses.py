"""Training loss of the anchor head (OpenPCDet ``AnchorHeadTemplate`` losses, kitti-spec §2.10).

``total = cls_weight·focal + loc_weight·smooth-L1 + dir_weight·CE``, each term summed over anchors and
divided by the batch size. Per frame, positives and negatives are weighted ``1 / max(N_pos, 1)`` in the
classification term, positives only (same weight) in the box and direction terms; ignored anchors
(label ``-1``) weigh 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from hrnas.tasks.kitti.anchors import DirectionConfig, direction_targets
from hrnas.tasks.kitti.head import HeadOutput

__all__ = [
    "LossConfig",
    "LossParts",
    "add_sin_difference",
    "detection_loss",
    "sigmoid_focal_loss",
    "smooth_l1",
]


@dataclass(frozen=True)
class LossConfig:
    """Loss hyper-parameters; defaults are the reference's (``pointpillar.yaml`` and
    ``anchor_head_template.py``)."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 1.0 / 9.0
    cls_weight: float = 1.0
    loc_weight: float = 2.0
    dir_weight: float = 0.2
    code_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    direction: DirectionConfig = DirectionConfig()


class LossParts(NamedTuple):
    """Scalar losses; ``cls``, ``loc`` and ``dir`` already carry their weights, ``total`` is their sum
    (OpenPCDet logs them as ``rpn_loss_cls/loc/dir``). ``num_pos`` is the mean positives per frame."""

    total: Tensor
    cls: Tensor
    loc: Tensor
    dir: Tensor
    num_pos: Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (unreduced, same shape as ``logits``).

    ``alpha_t · (1 - p_t)^gamma · BCE(logits, targets)`` with ``alpha_t = alpha`` for target 1 and
    ``1 - alpha`` for target 0, ``p_t`` the probability of the target; BCE is the stable with-logits form.
    """
    p = torch.sigmoid(logits)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    pt = targets * (1 - p) + (1 - targets) * p
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_t * pt.pow(gamma) * bce


def smooth_l1(diff: Tensor, beta: float = 1.0 / 9.0) -> Tensor:
    """Element-wise smooth-L1 of ``diff``: ``0.5 x² / beta`` where ``|x| < beta``, else ``|x| - beta / 2``
    (plain ``|x|`` for ``beta < 1e-5``)."""
    n = diff.abs()
    if beta < 1e-5:
        return n
    return torch.where(n < beta, 0.5 * n**2 / beta, n - 0.5 * beta)


def add_sin_difference(pred: Tensor, target: Tensor, dim: int = 6) -> tuple[Tensor, Tensor]:
    """Replace channel ``dim`` by ``sin(p)·cos(t)`` (prediction) and ``cos(p)·sin(t)`` (target), so that
    their difference is ``sin(p - t)``: invariant to a heading flip by π. Returns new tensors."""
    p, t = pred[..., dim : dim + 1], target[..., dim : dim + 1]
    pred_enc = torch.cat([pred[..., :dim], torch.sin(p) * torch.cos(t), pred[..., dim + 1 :]], dim=-1)
    target_enc = torch.cat([target[..., :dim], torch.cos(p) * torch.sin(t), target[..., dim + 1 :]], dim=-1)
    return pred_enc, target_enc


def detection_loss(
    preds: HeadOutput,
    anchors: Tensor,
    labels: Tensor,
    box_targets: Tensor,
    config: LossConfig = LossConfig(),
) -> LossParts:
    """Loss of a batch.

    Args:
        preds: head output, ``cls_logits (B, N, K)``, ``box_deltas (B, N, 7)``, ``dir_logits (B, N, bins)``
            or ``None`` (then the direction term is 0).
        anchors: ``(N, 7)`` (or any shape flattening to it).
        labels: int ``(B, N)``: ``-1`` ignored, ``0`` background, ``1..K`` class.
        box_targets: ``(B, N, 7)`` residual targets (zeros except for positives; NaNs are ignored).
    """
    cls_logits, box_deltas, dir_logits = preds
    b, n, k = cls_logits.shape
    anchors = anchors.reshape(-1, anchors.shape[-1])
    if labels.shape != (b, n) or box_targets.shape[:2] != (b, n) or anchors.shape[0] != n:
        raise ValueError(
            f"detection_loss: shapes disagree: cls_logits {tuple(cls_logits.shape)}, labels {tuple(labels.shape)}, "
            f"box_targets {tuple(box_targets.shape)}, anchors {tuple(anchors.shape)}"
        )
    positives = labels > 0
    cared = labels >= 0
    num_pos = positives.sum(dim=1, keepdim=True).to(cls_logits.dtype)
    norm = num_pos.clamp_min(1.0)
    cls_w = (positives | (labels == 0)).to(cls_logits.dtype) / norm
    reg_w = positives.to(cls_logits.dtype) / norm

    cls_target = torch.where(cared, labels, torch.zeros_like(labels))
    one_hot = F.one_hot(cls_target.long(), k + 1)[..., 1:].to(cls_logits.dtype)
    focal = sigmoid_focal_loss(cls_logits, one_hot, config.focal_alpha, config.focal_gamma)
    cls_loss = (focal * cls_w[..., None]).sum() / b * config.cls_weight

    target = torch.where(torch.isnan(box_targets), box_deltas.detach(), box_targets)
    pred_enc, target_enc = add_sin_difference(box_deltas, target)
    code_w = torch.tensor(config.code_weights, dtype=box_deltas.dtype, device=box_deltas.device)
    loc = smooth_l1((pred_enc - target_enc) * code_w, config.smooth_l1_beta)
    loc_loss = (loc * reg_w[..., None]).sum() / b * config.loc_weight

    if dir_logits is not None:
        dir_target = direction_targets(anchors, torch.nan_to_num(box_targets), config.direction)
        ce = F.cross_entropy(dir_logits.reshape(b * n, -1), dir_target.reshape(-1), reduction="none").view(b, n)
        dir_loss = (ce * reg_w).sum() / b * config.dir_weight
    else:
        dir_loss = cls_loss.new_zeros(())
    total = cls_loss + loc_loss + dir_loss
    return LossParts(total, cls_loss, loc_loss, dir_loss, num_pos.mean())
