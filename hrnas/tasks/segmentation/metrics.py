"""Semantic-segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy.

Conventions follow mmseg's ``eval_metrics`` (spec §5: "mIoU on val"): pixels whose target is
``ignore_index`` are skipped; a class's IoU is ``TP / (TP + FP + FN)`` and is NaN when the class is
absent from both target and prediction (union 0); mIoU is the mean over the classes whose IoU is
not NaN, i.e. classes present in the target or predicted somewhere. A class predicted but never
in the target therefore counts with IoU 0.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Accumulates ``counts[target, prediction]`` over pixels, on ``device``.

    Args:
        num_classes: C; predictions must lie in ``[0, C)``, targets in ``[0, C)`` or be
            ``ignore_index``.
        ignore_index: target label excluded from every metric.
        device: where the int64 ``(C, C)`` counts live.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Zero the counts."""
        self.counts.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: integer class indices ``(N, H, W)`` (or any shape equal to ``target``'s).
            target: integer labels, same shape; ``ignore_index`` pixels are skipped.

        Raises:
            ValueError: shapes differ, or a value is outside ``[0, C)`` (and not ignored).
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must hold integer class indices")
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        c = self.num_classes
        for name, values in (("target", target), ("pred", pred)):
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= c):
                bad = int(values.max()) if int(values.max()) >= c else int(values.min())
                raise ValueError(f"{name} holds {bad}, outside [0, {c}) and not ignore_index {self.ignore_index}")
        counts = torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        self.counts += counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the counts over all ranks when ``torch.distributed`` is initialised; no-op otherwise.

        With the NCCL backend the counts travel through the current CUDA device.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        counts = self.counts
        if dist.get_backend() == "nccl" and counts.device.type != "cuda":
            counts = counts.cuda()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        self.counts.copy_(counts)

    def compute(self) -> dict[str, float | list[float]]:
        """Metrics of the counts so far.

        Returns:
            ``miou``: mean of the non-NaN ``iou`` entries (NaN if all are NaN);
            ``iou``: per-class IoU, NaN where the class is in neither target nor prediction;
            ``acc``: per-class recall ``TP / target pixels``, NaN where the class is not in the target;
            ``pixel_acc``: correct / counted pixels (NaN if none);
            ``mean_acc``: mean of the non-NaN ``acc`` entries.
            All values are Python floats in [0, 1].
        """
        counts = self.counts.double().cpu()
        tp = counts.diag()
        in_target, in_pred = counts.sum(1), counts.sum(0)
        union = in_target + in_pred - tp
        nan = torch.full_like(tp, math.nan)
        iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        acc = torch.where(in_target > 0, tp / in_target.clamp_min(1), nan)
        total = counts.sum()
        return {
            "miou": _nanmean(iou),
            "iou": iou.tolist(),
            "acc": acc.tolist(),
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_acc": _nanmean(acc),
        }


def _nanmean(values: torch.Tensor) -> float:
    valid = values[~values.isnan()]
    return float(valid.mean()) if valid.numel() else math.nan
