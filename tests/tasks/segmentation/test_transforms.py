"""Joint segmentation transforms: output contract, image/mask alignment, mmseg-equivalent steps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD
from hrnas.tasks.segmentation.transforms import (
    PadTo,
    PhotoMetricDistortion,
    RandomRescale,
    SegEvalTransform,
    SegRandomCrop,
    SegTrainTransform,
    hsv_to_rgb,
    keep_ratio_size,
    rgb_to_hsv,
)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def blocks(height: int, width: int, block: int = 8, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of constant ``block``-sized squares; the image encodes each pixel's label as grey 40*label."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    mask = ((ys // block) * 3 + (xs // block)) % classes
    image = (mask * 40).to(torch.uint8).expand(3, height, width).clone()
    return image, mask


def test_keep_ratio_size_matches_mmcv_rescale() -> None:
    assert keep_ratio_size(1024, 2048, 2048, 1024) == [1024, 2048]
    assert keep_ratio_size(1024, 2048, 1024, 512) == [512, 1024]
    assert keep_ratio_size(375, 500, 2048, 512) == [512, 683]  # ADE20K test scale
    assert keep_ratio_size(500, 375, 2048, 512) == [683, 512]
    assert keep_ratio_size(10, 40, None, 20) == [20, 80]
    assert keep_ratio_size(10, 40) == [10, 40]


def test_train_output_contract_with_padding() -> None:
    image, mask = blocks(20, 30)
    transform = SegTrainTransform((48, 64), scale_range=(1.0, 1.0))
    out_image, out_mask = transform(image, mask)
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
    assert out_image.shape == (3, 48, 64) and out_image.dtype == torch.float32
    assert out_mask.shape == (48, 64) and out_mask.dtype == torch.int64
    assert (out_mask[20:] == 255).all() and (out_mask[:, 30:] == 255).all()
    assert (out_image[:, 20:] == 0).all() and (out_image[:, :, 30:] == 0).all()
    assert (out_mask[:20, :30] != 255).all()


def test_train_accepts_pil_and_numpy() -> None:
    image, mask = blocks(40, 40)
    pil_image = Image.fromarray(image.permute(1, 2, 0).numpy())
    pil_mask = Image.fromarray(mask.numpy().astype(np.uint8))
    out_image, out_mask = SegTrainTransform(32)(pil_image, pil_mask)
    assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
    out_image, out_mask = SegTrainTransform(32)(image.permute(1, 2, 0).numpy(), mask.numpy())
    assert out_image.shape == (3, 32, 32)
    with pytest.raises(TypeError, match="mask must be"):
        SegTrainTransform(32)(image, mask[:-1])


@pytest.mark.parametrize("seed", range(5))
def test_geometry_keeps_image_and_mask_aligned(seed: int) -> None:
    """With photometric distortion off and identity normalisation, grey level = 40 * label."""
    torch.manual_seed(seed)
    image, mask = blocks(60, 90, block=12)
    transform = SegTrainTransform(
        (48, 48), scale_range=(0.5, 2.0), photometric=False, cat_max_ratio=1.0, mean=(0, 0, 0), std=(1, 1, 1)
    )
    out_image, out_mask = transform(image, mask)
    labelled = out_mask != 255
    grey = (out_image[0] * 255).round()
    agree = ((grey[labelled] - out_mask[labelled] * 40).abs() < 20).float().mean()
    assert agree > 0.9  # only pixels on block edges differ (antialiased bilinear image vs nearest mask)
    assert torch.equal(out_image[0], out_image[1])


def test_exact_alignment_without_rescale() -> None:
    image, mask = blocks(40, 50, block=5)
    transform = SegTrainTransform(
        (24, 24), scale_range=(1.0, 1.0), photometric=False, cat_max_ratio=1.0, mean=(0, 0, 0), std=(1, 1, 1)
    )
    for _ in range(10):
        out_image, out_mask = transform(image, mask)
        assert torch.equal((out_image[0] * 255).round().long(), out_mask * 40)


def test_random_rescale_with_base_size() -> None:
    image, mask = blocks(100, 200)
    rescale = RandomRescale((0.5, 0.5), base_size=(2048, 1024))
    out_image, out_mask = rescale(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert out_image.shape[-2:] == (512, 1024) and out_mask.shape == (512, 1024)
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())  # nearest for masks
    relative = RandomRescale((2.0, 2.0))(tv_tensors.Image(image))
    assert relative.shape[-2:] == (200, 400)


def test_crop_cat_max_ratio_rule() -> None:
    mask = torch.zeros(100, 100, dtype=torch.int64)
    mask[:, 90:] = 1
    crop = SegRandomCrop((20, 20), cat_max_ratio=0.75)
    assert crop._balanced(mask, (0, 80, 20, 20))  # half 0, half 1
    assert not crop._balanced(mask, (0, 0, 20, 20))  # only 0
    ignore = mask.clone()
    ignore[:, :85] = 255
    assert crop._balanced(ignore, (0, 80, 20, 20))  # 5 labelled columns of 0, 10 of 1: 2/3 < 0.75
    assert not crop._balanced(ignore, (0, 87, 20, 13))  # 3 columns of 0, 10 of 1: 10/13 > 0.75
    balanced = 0
    for _ in range(50):
        params = crop.make_params([tv_tensors.Mask(mask)])
        balanced += crop._balanced(mask, tuple(params[k] for k in ("top", "left", "height", "width")))
    plain = SegRandomCrop((20, 20), cat_max_ratio=1.0)
    plain_balanced = 0
    for _ in range(50):
        params = plain.make_params([tv_tensors.Mask(mask)])
        plain_balanced += crop._balanced(mask, tuple(params[k] for k in ("top", "left", "height", "width")))
    assert balanced > plain_balanced + 10


def test_pad_to_pads_bottom_right() -> None:
    image, mask = blocks(5, 7)
    out_image, out_mask = PadTo((8, 9), image_fill=3.0)(tv_tensors.Image(image.float()), tv_tensors.Mask(mask))
    assert out_image.shape[-2:] == (8, 9)
    assert torch.equal(out_mask[:5, :7], mask) and (out_mask[5:] == 255).all()
    assert (out_image[:, :, 7:] == 3.0).all()


def test_hsv_round_trip_and_reference() -> None:
    rgb = torch.rand(3, 16, 16)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5)
    pixels = (rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    reference = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
    ours = rgb_to_hsv(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255).permute(1, 2, 0).numpy()
    hue_error = np.abs(ours[..., 0] - reference[..., 0])
    assert np.minimum(hue_error, 1 - hue_error).max() < 2 / 255
    assert np.abs(ours[..., 1:] - reference[..., 1:]).max() < 2 / 255


def mmseg_hsv_step(pixels: np.ndarray, saturation: float = 1.0, hue_shift: int = 0) -> np.ndarray:
    """mmseg's saturation/hue steps with OpenCV's uint8 HSV (hue in 0..179); RGB in and out."""
    hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float32) * saturation, 0, 255).astype(np.uint8)
    hsv[..., 0] = (hsv[..., 0].astype(int) + hue_shift) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


@pytest.mark.parametrize("saturation, hue", [(1.4, 0), (0.6, 0), (1.0, 12), (1.0, -17)])
def test_photometric_hsv_steps_match_mmseg(saturation: float, hue: int) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    reference = mmseg_hsv_step(pixels, saturation, hue).astype(int)
    image = torch.from_numpy(pixels).permute(2, 0, 1)
    ours = PhotoMetricDistortion._hsv_step(image, saturation, hue / 180).permute(1, 2, 0).numpy().astype(int)
    difference = np.abs(ours - reference)
    assert np.median(difference) <= 1 and np.percentile(difference, 99) <= 6


def test_photometric_brightness_and_contrast_are_mmseg_affine() -> None:
    image = torch.tensor([[[0, 10, 100, 250]]], dtype=torch.uint8).expand(3, 1, 4)
    params = {"brightness": 20.7, "contrast_first": True, "contrast": 1.5, "saturation": None, "hue": None}
    out = PhotoMetricDistortion().transform(tv_tensors.Image(image), params)
    # (x + 20.7) truncated to uint8, then * 1.5 truncated, clipped at 255.
    assert out[0, 0].tolist() == [30, 45, 180, 255]
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
    mask = tv_tensors.Mask(torch.zeros(1, 4, dtype=torch.int64))
    assert PhotoMetricDistortion().transform(mask, params) is mask
    with pytest.raises(TypeError, match="uint8"):
        PhotoMetricDistortion().transform(tv_tensors.Image(image.float()), params)


def test_photometric_changes_colour_only() -> None:
    image, mask = blocks(32, 32)
    torch.manual_seed(3)
    out_image, out_mask = PhotoMetricDistortion()(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert out_image.shape == image.shape and torch.equal(out_mask, mask)


def test_eval_transform_resizes_image_only_by_default() -> None:
    image, mask = blocks(30, 60)
    out_image, out_mask = SegEvalTransform(resize_short=15)(image, mask)
    assert out_image.shape == (3, 15, 30) and out_image.dtype == torch.float32
    assert torch.equal(out_mask, mask) and out_mask.dtype == torch.int64
    out_image, out_mask = SegEvalTransform(resize_short=60, max_long=100, resize_mask=True)(image, mask)
    assert out_image.shape == (3, 50, 100) and out_mask.shape == (50, 100)
    out_image, none = SegEvalTransform()(image)
    assert none is None and out_image.shape == (3, 30, 60)


def test_normalisation_uses_imagenet_statistics() -> None:
    mean_colour = torch.tensor([round(m * 255) for m in IMAGENET_MEAN], dtype=torch.uint8)
    image = mean_colour[:, None, None].expand(3, 4, 4).clone()
    out_image, _ = SegEvalTransform()(image)
    assert out_image.abs().max() < 0.5 / 255 / min(IMAGENET_STD)
    white = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    out_image, _ = SegEvalTransform()(white)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    assert torch.allclose(out_image[:, 0, 0], expected)


def test_same_seed_same_augmentation() -> None:
    image, mask = blocks(50, 70)
    transform = SegTrainTransform(32, base_size=(70, 50))
    torch.manual_seed(11)
    first = transform(image, mask)
    torch.manual_seed(11)
    second = transform(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
