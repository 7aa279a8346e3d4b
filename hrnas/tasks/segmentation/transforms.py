"""Joint image/mask augmentation for semantic segmentation, after mmseg's pipeline (spec §5).

Training: random rescale (keep ratio, ``base_size x U[scale_range]``), random crop with mmseg's
``cat_max_ratio`` rule, horizontal flip, mmseg's ``PhotoMetricDistortion``, ImageNet normalisation,
then padding to the crop size at the bottom/right (image 0 after normalisation, mask 255).
Evaluation: optional keep-ratio resize of the image only (predictions are resized back to the
label's size), then normalisation.

Both take ``(image, mask)``: ``image`` is RGB uint8 — a ``tv_tensors.Image``/tensor ``(3, H, W)``,
a PIL image or an ``(H, W, 3)`` array — and ``mask`` integer ``(H, W)`` (tensor, array or PIL).
Both return plain tensors: image float32 ``(3, h, w)``, mask int64 ``(h, w)`` with 255 = ignore.
Random draws use torch's global generator, which ``DataLoader`` seeds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD

IGNORE_INDEX = 255


def _spatial_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            height, width = F.get_size(inpt)
            return height, width
    raise TypeError("expected a tv_tensors.Image or tv_tensors.Mask among the inputs")


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _coin() -> bool:
    return bool(torch.randint(2, ()))


def keep_ratio_size(
    height: int, width: int, long_side: float | None = None, short_side: float | None = None
) -> list[int]:
    """Largest keep-ratio size with long side <= ``long_side`` and short side <= ``short_side``.

    As mmcv's ``rescale_size``: scale ``min(long_side / long, short_side / short)`` (a missing bound is
    not applied), sides rounded half up. Returns ``[h, w]``.
    """
    factors = []
    if long_side is not None:
        factors.append(long_side / max(height, width))
    if short_side is not None:
        factors.append(short_side / min(height, width))
    factor = min(factors) if factors else 1.0
    return [max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))]


class RandomRescale(v2.Transform):
    """Resize keeping the aspect ratio by a random ratio ``r ~ U[scale_range]``.

    With ``base_size=(a, b)`` the target is mmseg's ``Resize(img_scale=(a, b), ratio_range=...,
    keep_ratio=True)``: the largest size with long side <= max(a, b)·r and short side <= min(a, b)·r.
    Without it the image's own size is multiplied by ``r``. Images use antialiased bilinear
    interpolation, masks nearest.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0), base_size: Sequence[int] | None = None) -> None:
        super().__init__()
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range {scale_range}: expected 0 < low <= high")
        if base_size is not None and (len(base_size) != 2 or min(base_size) <= 0):
            raise ValueError(f"base_size {base_size}: expected two positive sides")
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.base_size = None if base_size is None else (int(base_size[0]), int(base_size[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _spatial_size(flat_inputs)
        ratio = _uniform(*self.scale_range)
        if self.base_size is None:
            return {"size": keep_ratio_size(height, width, max(height, width) * ratio)}
        long_side, short_side = max(self.base_size) * ratio, min(self.base_size) * ratio
        return {"size": keep_ratio_size(height, width, long_side, short_side)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resize(inpt, params["size"], interpolation=InterpolationMode.BILINEAR, antialias=True)


class SegRandomCrop(v2.Transform):
    """Random crop of at most ``crop_size = (h, w)`` (smaller inputs keep their size on that side).

    As mmseg's ``RandomCrop``: when ``cat_max_ratio < 1``, up to 10 crops are drawn until one holds
    at least two labels (ignoring ``ignore_index``) and none covers ``cat_max_ratio`` of its labelled
    pixels; otherwise the last one drawn is used.
    """

    def __init__(self, crop_size: Sequence[int], cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index

    def _draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        crop_h, crop_w = min(self.crop_size[0], height), min(self.crop_size[1], width)
        top = int(torch.randint(height - crop_h + 1, ()))
        left = int(torch.randint(width - crop_w + 1, ()))
        return top, left, crop_h, crop_w

    def _balanced(self, mask: torch.Tensor, box: tuple[int, int, int, int]) -> bool:
        top, left, crop_h, crop_w = box
        window = mask.as_subclass(torch.Tensor)[..., top : top + crop_h, left : left + crop_w]
        counts = torch.bincount(window.flatten().long(), minlength=self.ignore_index + 1)
        counts[self.ignore_index] = 0
        total = int(counts.sum())
        return int((counts > 0).sum()) > 1 and int(counts.max()) < self.cat_max_ratio * total

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _spatial_size(flat_inputs)
        box = self._draw(height, width)
        mask = next((inpt for inpt in flat_inputs if isinstance(inpt, tv_tensors.Mask)), None)
        if mask is not None and self.cat_max_ratio < 1.0:
            checked: dict[tuple[int, int, int, int], bool] = {}  # an image no larger than the crop has one box
            for _ in range(10):
                if box not in checked:
                    checked[box] = self._balanced(mask, box)
                if checked[box]:
                    break
                box = self._draw(height, width)
        return dict(zip(("top", "left", "height", "width"), box, strict=True))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, **params)


class PadTo(v2.Transform):
    """Pad at the bottom and right up to ``size = (h, w)``; images with ``image_fill``, masks with
    ``mask_fill``. Sides already at least as large are left alone."""

    def __init__(self, size: Sequence[int], image_fill: float = 0.0, mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.image_fill = image_fill
        self.mask_fill = mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _spatial_size(flat_inputs)
        return {"padding": [0, 0, max(self.size[1] - width, 0), max(self.size[0] - height, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.image_fill
        return F.pad(inpt, params["padding"], fill=fill)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], ``(..., 3, H, W)`` float -> HSV with hue in [0, 1) (fraction of a turn), S, V in [0, 1]."""
    red, green, blue = rgb.unbind(-3)
    value = rgb.amax(-3)
    delta = value - rgb.amin(-3)
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        value == red,
        (green - blue) / safe,
        torch.where(value == green, 2.0 + (blue - red) / safe, 4.0 + (red - green) / safe),
    )
    hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    return torch.stack((hue, saturation, value), dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel ``c`` is ``V · (1 − S · clamp(min(k, 4 − k), 0, 1))`` with
    ``k = (n_c + 6·H) mod 6`` and ``n = 5, 3, 1`` for red, green, blue (the sector table in closed form)."""
    hue, saturation, value = hsv.unbind(-3)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(3, 1, 1)
    k = torch.remainder(n + hue.unsqueeze(-3) * 6.0, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value.unsqueeze(-3) * (1.0 - saturation.unsqueeze(-3) * ramp)


class PhotoMetricDistortion(v2.Transform):
    """mmseg's ``PhotoMetricDistortion`` on uint8 RGB images; masks pass through.

    Each step happens with probability 1/2, in this order: brightness ``+ U[-delta, delta]``;
    contrast ``x U[contrast_range]`` either here or last (coin flip); saturation ``S x
    U[saturation_range]`` in HSV; hue ``+ randint(-hue_delta, hue_delta)`` in OpenCV units (2° each).
    Like mmseg, pixel values are clipped to [0, 255] and truncated to uint8 after each step; the HSV
    steps run in float HSV (mmseg quantises HSV to uint8, a difference of a level or two).
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        super().__init__()
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = int(hue_delta)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def maybe(draw: Any) -> Any:
            return draw() if _coin() else None

        return {
            "brightness": maybe(lambda: _uniform(-self.brightness_delta, self.brightness_delta)),
            "contrast_first": _coin(),
            "contrast": maybe(lambda: _uniform(*self.contrast_range)),
            "saturation": maybe(lambda: _uniform(*self.saturation_range)),
            "hue": maybe(lambda: int(torch.randint(-self.hue_delta, self.hue_delta, ()))),
        }

    @staticmethod
    def _affine(image: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
        return (image.float() * alpha + beta).clamp(0, 255).to(torch.uint8)

    @staticmethod
    def _hsv_step(image: torch.Tensor, saturation: float = 1.0, hue_shift: float = 0.0) -> torch.Tensor:
        hsv = rgb_to_hsv(image.float() / 255.0)
        hue, sat, value = hsv.unbind(-3)
        hsv = torch.stack((torch.remainder(hue + hue_shift, 1.0), (sat * saturation).clamp(0, 1), value), -3)
        return (hsv_to_rgb(hsv) * 255.0).round().clamp(0, 255).to(torch.uint8)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if inpt.dtype != torch.uint8:
            raise TypeError(f"PhotoMetricDistortion expects a uint8 image, got {inpt.dtype}")
        image = inpt.as_subclass(torch.Tensor)
        if params["brightness"] is not None:
            image = self._affine(image, beta=params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            image = self._affine(image, alpha=params["contrast"])
        if params["saturation"] is not None:
            image = self._hsv_step(image, saturation=params["saturation"])
        if params["hue"] is not None:
            image = self._hsv_step(image, hue_shift=params["hue"] / 180.0)
        if not params["contrast_first"] and params["contrast"] is not None:
            image = self._affine(image, alpha=params["contrast"])
        return tv_tensors.wrap(image, like=inpt)


def as_image_and_mask(image: Any, mask: Any | None) -> tuple[tv_tensors.Image, tv_tensors.Mask | None]:
    """Wrap inputs as ``tv_tensors.Image`` uint8 ``(3, H, W)`` and ``tv_tensors.Mask`` int64 ``(H, W)``."""
    if isinstance(image, PILImage.Image):
        image = F.pil_to_tensor(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise TypeError(f"image must be RGB (3, H, W) or (H, W, 3), got {getattr(image, 'shape', type(image))}")
    image = image if isinstance(image, tv_tensors.Image) else tv_tensors.Image(image)
    if mask is None:
        return image, None
    if isinstance(mask, PILImage.Image):
        mask = np.asarray(mask)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.astype(np.int64))
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape != image.shape[-2:]:
        raise TypeError(f"mask must be (H, W) = {tuple(image.shape[-2:])}, got {getattr(mask, 'shape', type(mask))}")
    return image, tv_tensors.Mask(mask.long())


def _plain(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.as_subclass(torch.Tensor)


class SegTrainTransform:
    """Training augmentation: rescale, crop, flip, photometric distortion, normalise, pad.

    Args:
        crop_size: ``(h, w)`` or one int; the output size.
        scale_range: random ratio range of :class:`RandomRescale`.
        base_size: mmseg ``img_scale`` (e.g. ``(2048, 1024)`` for Cityscapes, ``(2048, 512)`` for
            ADE20K); None scales relative to each image's own size.
        cat_max_ratio: see :class:`SegRandomCrop` (1.0 disables the rule).
        flip_prob: horizontal flip probability.
        photometric: apply :class:`PhotoMetricDistortion`.
        mean, std: per-channel normalisation of the [0, 1] image.

    Call with ``(image, mask)``; returns image float32 ``(3, h, w)`` and mask int64 ``(h, w)``,
    ``(h, w) = crop_size``, padded image pixels 0 and padded mask pixels ``ignore_index``.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        base_size: Sequence[int] | None = None,
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if len(crop) != 2 or min(crop) <= 0:
            raise ValueError(f"crop_size {crop_size}: expected a positive int or (h, w)")
        self.crop_size = (int(crop[0]), int(crop[1]))
        steps: list[v2.Transform] = [
            RandomRescale(scale_range, base_size),
            SegRandomCrop(self.crop_size, cat_max_ratio, ignore_index),
            v2.RandomHorizontalFlip(flip_prob),
        ]
        if photometric:
            steps.append(PhotoMetricDistortion())
        steps += [
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize(list(mean), list(std)),
            PadTo(self.crop_size, image_fill=0.0, mask_fill=ignore_index),
        ]
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = as_image_and_mask(image, mask)
        image, mask = self.pipeline(image, mask)
        return _plain(image), _plain(mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


class SegEvalTransform:
    """Evaluation preprocessing: optional keep-ratio resize, then normalisation.

    Args:
        resize_short: target short side; None keeps the size (unless ``max_long`` applies).
        max_long: cap on the long side (mmseg's ADE20K test scale ``(2048, 512)`` is
            ``resize_short=512, max_long=2048``); the scale is the smaller of the two bounds.
        resize_mask: also resize the mask (nearest). By default the mask keeps the original size,
            and predictions are upsampled to it, as in mmseg.
        mean, std: per-channel normalisation of the [0, 1] image.

    Call with ``(image, mask=None)``; returns image float32 ``(3, h, w)`` and mask int64 ``(H, W)``
    (or None).
    """

    def __init__(
        self,
        resize_short: int | None = None,
        max_long: int | None = None,
        resize_mask: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.resize_short = resize_short
        self.max_long = max_long
        self.resize_mask = resize_mask
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, image: Any, mask: Any | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, mask = as_image_and_mask(image, mask)
        if self.resize_short is not None or self.max_long is not None:
            height, width = image.shape[-2:]
            size = keep_ratio_size(height, width, self.max_long, self.resize_short)
            if size != [height, width]:
                image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
                if self.resize_mask and mask is not None:
                    mask = F.resize(mask, size)
        image = F.normalize(F.to_dtype(image, torch.float32, scale=True), self.mean, self.std)
        return _plain(image), _plain(mask)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resize_short={self.resize_short}, max_long={self.max_long}, "
            f"resize_mask={self.resize_mask})"
        )
