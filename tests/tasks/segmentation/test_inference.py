"""Whole, sliding-window, multi-scale and flip inference with tiny conv nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnas.tasks.segmentation.inference import infer_multiscale, infer_slide, infer_whole

NUM_CLASSES = 5


class TinySegNet(nn.Module):
    """(N, 3, H, W) -> (N, C, H/4, W/4): a 3x3 conv, ReLU, 4x4 average pool, 1x1 classifier."""

    def __init__(self, symmetric: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, padding=1)
        self.classifier = nn.Conv2d(8, NUM_CLASSES, 1)
        if symmetric:  # kernels mirror-symmetric in x make the whole net commute with a horizontal flip
            with torch.no_grad():
                weight = self.features.weight
                weight.copy_((weight + weight.flip(-1)) / 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.avg_pool2d(torch.relu(self.features(image)), 4))


class PixelNet(nn.Module):
    """A per-pixel classifier at full resolution: its output at a pixel depends on that pixel only."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(image)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def test_whole_upsamples_to_input_size() -> None:
    model, image = TinySegNet(), torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        logits = infer_whole(model, image)
        expected = F.interpolate(model(image), size=(32, 48), mode="bilinear", align_corners=False)
    assert logits.shape == (2, NUM_CLASSES, 32, 48)
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("crop", [(32, 48), (40, 64), 64])
def test_slide_with_crop_covering_the_image_equals_whole(crop: int | tuple[int, int]) -> None:
    model, image = TinySegNet(), torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        slid = infer_slide(model, image, crop=crop, stride=(16, 16), num_classes=NUM_CLASSES)
        whole = infer_whole(model, image)
    assert torch.equal(slid, whole)


@pytest.mark.parametrize("crop, stride", [((16, 16), (8, 8)), ((20, 12), (7, 11)), ((37, 50), (5, 5))])
def test_slide_averages_overlaps_exactly(crop: tuple[int, int], stride: tuple[int, int]) -> None:
    """For a per-pixel model every window gives the same logits, so the average equals whole-image."""
    model, image = PixelNet(), torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        slid = infer_slide(model, image, crop=crop, stride=stride, num_classes=NUM_CLASSES)
        whole = infer_whole(model, image)
    torch.testing.assert_close(slid, whole)


def test_slide_windows_tile_large_images() -> None:
    calls = []

    class Recorder(PixelNet):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(image.shape[-2:]))
            return super().forward(image)

    image = torch.randn(1, 3, 40, 70)
    with torch.no_grad():
        infer_slide(Recorder(), image, crop=(32, 32), stride=(16, 16), num_classes=NUM_CLASSES)
    assert calls == [(32, 32)] * 2 * 4  # rows 0, 8(-> 40-32); cols 0, 16, 32, 38


def test_slide_pad_small_runs_full_crops() -> None:
    shapes = []

    class Recorder(TinySegNet):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(image.shape[-2:]))
            return super().forward(image)

    image = torch.randn(1, 3, 20, 30)
    with torch.no_grad():
        logits = infer_slide(Recorder(), image, crop=(32, 32), stride=(16, 16), num_classes=NUM_CLASSES, pad_small=True)
    assert shapes == [(32, 32)] and logits.shape == (1, NUM_CLASSES, 20, 30)
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="num_classes is 4"):
        infer_slide(TinySegNet(), image, crop=16, stride=8, num_classes=4)


def test_multiscale_single_scale_is_softmax_of_whole() -> None:
    model, image = TinySegNet(), torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        probs = infer_multiscale(model, image)
        expected = infer_whole(model, image).softmax(1)
    torch.testing.assert_close(probs, expected)


def test_flip_with_flip_equivariant_model_changes_nothing() -> None:
    model, image = TinySegNet(symmetric=True), torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model(image.flip(-1)).flip(-1), model(image), atol=1e-5)  # the premise
        plain = infer_multiscale(model, image, scales=(0.75, 1.0, 1.5))
        flipped = infer_multiscale(model, image, scales=(0.75, 1.0, 1.5), flip=True)
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)


def test_flip_matters_for_a_generic_model() -> None:
    model, image = TinySegNet(), torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        plain = infer_multiscale(model, image)
        flipped = infer_multiscale(model, image, flip=True)
    assert not torch.allclose(plain, flipped)


def test_multiscale_slide_and_out_size() -> None:
    model, image = TinySegNet(), torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        probs = infer_multiscale(
            model,
            image,
            scales=(0.5, 1.25),
            flip=True,
            mode="slide",
            crop=(32, 32),
            stride=(16, 16),
            num_classes=NUM_CLASSES,
            out_size=(64, 96),
        )
    assert probs.shape == (1, NUM_CLASSES, 64, 96)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 96))
    with pytest.raises(ValueError, match="needs crop, stride and num_classes"):
        infer_multiscale(model, image, mode="slide")
    with pytest.raises(ValueError, match="mode 'tiles'"):
        infer_multiscale(model, image, mode="tiles")  # type: ignore[arg-type]
