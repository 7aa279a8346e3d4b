"""Classification data: ImageNet-layout folders, Fashion-MNIST, TF-style transforms, top-k accuracy."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from hrnas.data.errors import DatasetError
from hrnas.data.images import IMAGENET_MEAN, IMAGENET_STD
from hrnas.tasks.classification import datasets as classification
from hrnas.tasks.classification.datasets import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FashionMNISTClassification,
    ImageFolderClassification,
    TFCenterCrop,
    TFRandomResizedCrop,
    build_classification_dataset,
    imagenet_eval_transform,
    imagenet_train_transform,
    topk_accuracy,
)


def make_image_folder(root, classes=("cat", "dog"), per_class=2, size=(40, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i}.png")
    return root


def test_image_folder_items(tmp_path):
    ds = ImageFolderClassification(make_image_folder(tmp_path), "train", imagenet_eval_transform(32))
    assert len(ds) == 4 and ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1
    raw, _ = ImageFolderClassification(tmp_path, "train")[0]
    assert isinstance(raw, Image.Image) and raw.mode == "RGB"


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: dataset folder not found"):
        ImageFolderClassification(tmp_path / "nowhere", "train")
    make_image_folder(tmp_path)
    with pytest.raises(DatasetError, match=r"val: split folder 'val' not found"):
        ImageFolderClassification(tmp_path, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no class folders"):
        ImageFolderClassification(tmp_path, "empty")
    (tmp_path / "train" / "zebra").mkdir()
    (tmp_path / "train" / "zebra" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"train/zebra: class folder holds no images") as err:
        ImageFolderClassification(tmp_path, "train")
    assert "\n" not in str(err.value)
    (tmp_path / "train" / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = ImageFolderClassification(tmp_path, "train")
    index = [path for path, _ in ds.samples].index(str(tmp_path / "train" / "zebra" / "broken.jpg"))
    ds[0]
    with pytest.raises(DatasetError, match=r"zebra/broken\.jpg: cannot decode image"):
        ds[index]


def test_tf_random_resized_crop_constraints():
    crop = TFRandomResizedCrop(32, rng=random.Random(0))
    for _ in range(300):
        top, left, h, w = crop.get_params(200, 150)
        assert 0.1 * 200 * 150 <= h * w <= 200 * 150
        assert 0.72 <= w / h <= 1.38
        assert 0 <= top <= 150 - h and 0 <= left <= 200 - w
    # a 1000×10 strip cannot hold 10 % of its area at aspect 3/4–4/3: centre-crop fallback
    assert crop.get_params(1000, 10) is None
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 1000, 3), dtype=np.uint8))
    fallback = TF.resize(TF.center_crop(strip, [5, 5]), [32, 32], InterpolationMode.BICUBIC)
    assert np.array_equal(np.asarray(crop(strip)), np.asarray(fallback))


def test_imagenet_transforms():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 320, 3), dtype=np.uint8))
    random.seed(0)
    torch.manual_seed(0)
    out = imagenet_train_transform(64)(img)
    assert out.shape == (3, 64, 64) and torch.isfinite(out).all()
    ev = imagenet_eval_transform(224)(img)
    manual = TF.resize(TF.center_crop(img, [224, 224]), [224, 224], InterpolationMode.BICUBIC)
    manual = TF.normalize(TF.to_tensor(manual), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(ev, manual)
    assert TFCenterCrop(0.5)(img).size == (128, 128)


@pytest.fixture
def fake_fashion(monkeypatch):
    images = np.zeros((6, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 255
    labels = np.arange(6, dtype=np.int64)
    calls = []

    def load(split, root=None):
        calls.append((split, root))
        return images, labels

    monkeypatch.setattr(classification, "load_fashion_mnist", load)
    return calls


def test_fashion_mnist_padding_and_channels(fake_fashion):
    ds = FashionMNISTClassification("train")
    assert len(ds) == 6 and len(ds.classes) == 10
    x, y = ds[4]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 4 and isinstance(y, int)
    background = (0.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    white = (1.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert torch.allclose(x[:, :2], torch.tensor(background))  # 2-pixel zero padding
    assert torch.allclose(x[:, 12:20, 12:20], torch.tensor(white))  # the square moved by the padding
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert FashionMNISTClassification("test", image_size=28)[0][0].shape == (3, 28, 28)
    big = FashionMNISTClassification("test", image_size=64, transform=lambda t: t.flip(-1))[0][0]
    assert big.shape == (3, 64, 64)
    assert fake_fashion == [("train", None), ("test", None), ("test", None)]


def test_fashion_mnist_val_alias_and_bad_split(fake_fashion, tmp_path):
    FashionMNISTClassification("val", root=tmp_path)
    assert fake_fashion == [("test", tmp_path)]
    with pytest.raises(DatasetError, match="Fashion-MNIST split 'dev'"):
        FashionMNISTClassification("dev")


def test_factory(fake_fashion, tmp_path):
    ds = build_classification_dataset("fashion_mnist", None, "train", image_size=28)
    assert isinstance(ds, FashionMNISTClassification) and ds[0][0].shape == (3, 28, 28)
    folder = build_classification_dataset("imagefolder", make_image_folder(tmp_path), "train", image_size=48)
    assert isinstance(folder, ImageFolderClassification) and folder[0][0].shape == (3, 48, 48)
    with pytest.raises(
        DatasetError, match="unknown classification dataset format 'cifar'; known: fashion_mnist, imagefolder"
    ):
        build_classification_dataset("cifar", tmp_path, "train")


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([1, 2, 1, 2])
    acc = topk_accuracy(logits, target, ks=(1, 2, 5))
    assert acc == {"top1": 0.25, "top2": 0.5, "top5": 1.0}  # top-5 of 3 classes is top-3
    assert topk_accuracy(logits[:0], target[:0]) == {"top1": 0.0, "top5": 0.0}
    with pytest.raises(ValueError, match="logits must be"):
        topk_accuracy(logits, target[:2])
