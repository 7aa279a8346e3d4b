"""Segmentation inference modes: whole image, sliding window, multi-scale and flip (spec §5).

``model`` is any ``nn.Module`` mapping a normalised batch ``(N, 3, H, W)`` to class logits
``(N, C, h, w)`` at a reduced resolution (``h = H / 4`` for the HR-NAS heads); every function here
upsamples logits bilinearly (``align_corners=False``) to the size it needs. The caller chooses
``model.eval()`` and ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def _resize(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{name} {value}: expected a positive int or (h, w)")
    return int(pair[0]), int(pair[1])


def infer_whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on the whole batch ``image (N, 3, H, W)``; logits ``(N, C, H, W)`` upsampled
    bilinearly to the input size."""
    return _resize(model(image), image.shape[-2:])


def infer_slide(
    model: nn.Module,
    image: torch.Tensor,
    crop: int | Sequence[int],
    stride: int | Sequence[int],
    num_classes: int,
    pad_small: bool = False,
) -> torch.Tensor:
    """Sliding-window inference as mmseg's ``slide_inference``.

    Windows of ``crop = (h, w)`` start every ``stride = (h, w)`` pixels; the last row/column of
    windows is shifted back to end at the image border, so every window lies inside the image and
    only windows on a side shorter than the crop are smaller than it. Each window's logits are
    upsampled to the window and summed; each pixel's sum is divided by the number of windows
    covering it.

    Args:
        image: ``(N, 3, H, W)``.
        num_classes: C, the model's number of output channels.
        pad_small: zero-pad (bottom/right) windows smaller than ``crop`` to the full crop before
            running the model, and cut the logits back; for models that need the training input
            size. Off by default, so that a crop covering the image reproduces :func:`infer_whole`.

    Returns:
        Averaged logits ``(N, C, H, W)``.
    """
    crop_h, crop_w = _pair(crop, "crop")
    stride_h, stride_w = _pair(stride, "stride")
    batch, _, height, width = image.shape
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    logits = image.new_zeros((batch, num_classes, height, width))
    hits = image.new_zeros((1, 1, height, width))
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + crop_h, height)
            x2 = min(col * stride_w + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            window = image[:, :, y1:y2, x1:x2]
            if pad_small and (window.shape[-2] < crop_h or window.shape[-1] < crop_w):
                padded = F.pad(window, (0, crop_w - window.shape[-1], 0, crop_h - window.shape[-2]))
                window_logits = infer_whole(model, padded)[:, :, : y2 - y1, : x2 - x1]
            else:
                window_logits = infer_whole(model, window)
            if window_logits.shape[1] != num_classes:
                raise ValueError(f"model returned {window_logits.shape[1]} channels, num_classes is {num_classes}")
            logits[:, :, y1:y2, x1:x2] += window_logits
            hits[:, :, y1:y2, x1:x2] += 1
    return logits / hits


def infer_multiscale(
    model: nn.Module,
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    mode: Literal["whole", "slide"] = "whole",
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    out_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Average softmax probabilities over scales and, optionally, horizontal flips.

    For each scale ``s`` the image is resized bilinearly to ``round(s * H), round(s * W)``, run
    with :func:`infer_whole` or :func:`infer_slide` (``crop``, ``stride``, ``num_classes`` required
    for ``slide``); with ``flip`` the mirrored image is run too and its logits mirrored back. Logits
    are upsampled to ``out_size`` (default the input size) before the softmax.

    Args:
        image: ``(N, 3, H, W)``.

    Returns:
        Probabilities ``(N, C, *out_size)``, summing to 1 over C; ``argmax(1)`` is the prediction.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode {mode!r}: expected 'whole' or 'slide'")
    if mode == "slide" and (crop is None or stride is None or num_classes is None):
        raise ValueError("mode 'slide' needs crop, stride and num_classes")
    if not scales:
        raise ValueError("scales must hold at least one scale")
    height, width = image.shape[-2:]
    target = tuple(out_size) if out_size is not None else (height, width)

    def logits_of(batch: torch.Tensor) -> torch.Tensor:
        if mode == "slide":
            return infer_slide(model, batch, crop, stride, num_classes)  # type: ignore[arg-type]
        return infer_whole(model, batch)

    total: torch.Tensor | None = None
    runs = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = _resize(image, size)
        views = [(scaled, False)] + ([(scaled.flip(-1), True)] if flip else [])
        for view, mirrored in views:
            logits = logits_of(view)
            if mirrored:
                logits = logits.flip(-1)
            probs = _resize(logits, target).softmax(dim=1)
            total = probs if total is None else total + probs
            runs += 1
    assert total is not None
    return total / runs
