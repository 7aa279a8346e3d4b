"""Segmentation datasets on tiny files written in each published layout, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hrnas.data.errors import DatasetError
from hrnas.tasks.segmentation.datasets import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    ADE20KSegmentation,
    CityscapesSegmentation,
    FolderSegmentation,
    build_segmentation_dataset,
)
from hrnas.tasks.segmentation.transforms import SegTrainTransform


def save_image(path: Path, height: int = 8, width: int = 12, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def save_mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def cityscapes_tree(root: Path, split: str = "train", kinds: tuple[str, ...] = ("labelIds",)) -> list[str]:
    stems = ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"]
    for index, stem in enumerate(stems):
        city = stem.split("_")[0]
        save_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=index)
        for kind in kinds:
            values = np.full((8, 12), 7 if kind == "labelIds" else 0)
            save_mask(root / "gtFine" / split / city / f"{stem}_gtFine_{kind}.png", values)
    return stems


def mask_path(root: Path, stem: str, kind: str, split: str = "train") -> Path:
    return root / "gtFine" / split / stem.split("_")[0] / f"{stem}_gtFine_{kind}.png"


def test_class_tables() -> None:
    assert len(CITYSCAPES_CLASSES) == 19 and len(ADE20K_CLASSES) == 150
    assert len(set(ADE20K_CLASSES)) == 150
    assert sorted(CITYSCAPES_LABEL_TO_TRAIN_ID.values()) == list(range(19))
    assert ADE20K_CLASSES[0] == "wall" and ADE20K_CLASSES[-1] == "flag"


def test_cityscapes_label_ids_map_to_train_ids(tmp_path: Path) -> None:
    stems = cityscapes_tree(tmp_path)
    raw = np.array([[7, 26, 0, 33, 255, 9, 24, 11, 1, 21, 23, 32]] * 8)
    save_mask(mask_path(tmp_path, stems[0], "labelIds"), raw)
    dataset = CityscapesSegmentation(tmp_path, "train")
    assert dataset.label_type == "labelIds" and dataset.classes == list(CITYSCAPES_CLASSES)
    assert len(dataset) == 3 and dataset.num_classes == 19
    image, mask = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 12)
    assert mask.dtype == torch.int64 and mask.shape == (8, 12)
    assert mask[0].tolist() == [0, 13, 255, 18, 255, 255, 11, 2, 255, 8, 10, 17]


def test_cityscapes_auto_prefers_train_ids_and_reads_classes_json(tmp_path: Path) -> None:
    stems = cityscapes_tree(tmp_path, kinds=("labelIds", "labelTrainIds"))
    save_mask(mask_path(tmp_path, stems[1], "labelTrainIds"), np.full((8, 12), 18))
    assert CityscapesSegmentation(tmp_path, "train").label_type == "trainIds"
    assert CityscapesSegmentation(tmp_path, "train", label_type="labelIds").label_type == "labelIds"
    assert int(CityscapesSegmentation(tmp_path, "train")[1][1].max()) == 18
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b", "c"]))
    dataset = CityscapesSegmentation(tmp_path, "train")
    assert dataset.classes == ["a", "b", "c"]
    with pytest.raises(DatasetError, match=f"{stems[1]}_gtFine_labelTrainIds.png: mask label 18 is outside the 3"):
        dataset[1]
    with pytest.raises(DatasetError, match="classes.json: custom classes need"):
        CityscapesSegmentation(tmp_path, "train", label_type="labelIds")


def test_cityscapes_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nowhere'}: dataset root folder not found"):
        CityscapesSegmentation(tmp_path / "nowhere", "train")
    stems = cityscapes_tree(tmp_path)
    with pytest.raises(DatasetError, match="leftImg8bit/val: 'val' image folder not found"):
        CityscapesSegmentation(tmp_path, "val")
    (tmp_path / "leftImg8bit" / "test").mkdir()
    (tmp_path / "gtFine" / "test").mkdir()
    with pytest.raises(DatasetError, match="leftImg8bit/test: no"):
        CityscapesSegmentation(tmp_path, "test")
    save_mask(mask_path(tmp_path, stems[0], "labelIds"), np.full((8, 12), 40))
    with pytest.raises(DatasetError, match="label id 40 is not a Cityscapes label id"):
        CityscapesSegmentation(tmp_path, "train")[0]
    mask_path(tmp_path, stems[2], "labelIds").unlink()
    with pytest.raises(DatasetError, match=f"{stems[2]}_leftImg8bit.png: no mask .*{stems[2]}_gtFine_labelIds.png"):
        CityscapesSegmentation(tmp_path, "train")


def test_corrupt_files_and_size_mismatch(tmp_path: Path) -> None:
    stems = cityscapes_tree(tmp_path)
    image_path = tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stems[0]}_leftImg8bit.png"
    image_path.write_bytes(b"not a png at all")
    save_mask(mask_path(tmp_path, stems[1], "labelIds"), np.full((9, 12), 7))
    rgb_mask = mask_path(tmp_path, stems[2], "labelIds")
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(rgb_mask)
    dataset = CityscapesSegmentation(tmp_path, "train")
    with pytest.raises(DatasetError, match=f"{image_path}: cannot decode image"):
        dataset[0]
    with pytest.raises(DatasetError, match=f"{stems[1]}_gtFine_labelIds.png: mask is 12x9 but image .* is 12x8"):
        dataset[1]
    with pytest.raises(DatasetError, match=f"{rgb_mask}: mask must be single-channel, got PIL mode RGB"):
        dataset[2]
    truncated = save_image(tmp_path / "big.png", 64, 64)
    truncated.write_bytes(truncated.read_bytes()[:200])
    dataset.samples[0] = (truncated, dataset.samples[1][1])
    with pytest.raises(DatasetError, match=f"{truncated}: cannot decode image"):
        dataset[0]


def ade_tree(root: Path, folder: str = "training") -> Path:
    base = root / "ADEChallengeData2016"
    for index in range(2):
        save_image(base / "images" / folder / f"ADE_{folder[:5]}_{index:08d}.jpg", seed=index)
        save_mask(
            base / "annotations" / folder / f"ADE_{folder[:5]}_{index:08d}.png",
            np.tile(np.array([0, 1, 2, 150, 255, 5]), (8, 2)),
        )
    return base


def test_ade20k_reduce_zero_label_and_roots(tmp_path: Path) -> None:
    base = ade_tree(tmp_path)
    for root in (tmp_path, base):
        dataset = ADE20KSegmentation(root, "train")
        assert len(dataset) == 2 and dataset.num_classes == 150
        image, mask = dataset[0]
        assert image.shape == (3, 8, 12)
        assert mask[0, :6].tolist() == [255, 0, 1, 149, 255, 4]
    with pytest.raises(DatasetError, match="annotations/validation"):
        (base / "images" / "validation").mkdir()
        ADE20KSegmentation(tmp_path, "val")
    save_mask(base / "annotations" / "training" / "ADE_train_00000001.png", np.full((8, 12), 151))
    with pytest.raises(DatasetError, match="ADE_train_00000001.png: mask label 151 is outside the 150 classes"):
        ADE20KSegmentation(tmp_path, "training")[1]
    with pytest.raises(DatasetError, match="split 'test'"):
        ADE20KSegmentation(tmp_path, "test")


def folder_tree(root: Path, split: str = "train") -> None:
    for index, suffix in enumerate((".png", ".jpg", ".jpeg")):
        save_image(root / split / "images" / f"img{index}{suffix}", seed=index)
        save_mask(root / split / "masks" / f"img{index}.png", np.full((8, 12), index))


def test_folder_dataset_classes_sources(tmp_path: Path) -> None:
    folder_tree(tmp_path)
    with pytest.raises(DatasetError, match="no classes given and no classes.json or classes.txt"):
        FolderSegmentation(tmp_path, "train")
    assert FolderSegmentation(tmp_path, "train", classes=["x", "y", "z"]).classes == ["x", "y", "z"]
    (tmp_path / "classes.txt").write_text("sky\nroad\n\ncar\n")
    dataset = FolderSegmentation(tmp_path, "train")
    assert dataset.classes == ["sky", "road", "car"] and len(dataset) == 3
    assert [int(dataset[i][1][0, 0]) for i in range(3)] == [0, 1, 2]
    (tmp_path / "classes.json").write_text('["a", "b"]')
    dataset = FolderSegmentation(tmp_path, "train")
    assert dataset.classes == ["a", "b"]
    with pytest.raises(DatasetError, match="img2.png: mask label 2 is outside the 2 classes"):
        dataset[2]
    (tmp_path / "classes.json").write_text('{"a": 1}')
    with pytest.raises(DatasetError, match="classes.json: expected a non-empty list"):
        FolderSegmentation(tmp_path, "train")
    with pytest.raises(DatasetError, match="class name 'a' appears twice"):
        FolderSegmentation(tmp_path, "train", classes=["a", "a"])


def test_folder_dataset_errors(tmp_path: Path) -> None:
    classes = ["a", "b", "c"]
    with pytest.raises(DatasetError, match="split 'train' folder not found"):
        tmp_path.joinpath("val").mkdir()
        FolderSegmentation(tmp_path, "train", classes)
    (tmp_path / "val" / "images").mkdir()
    (tmp_path / "val" / "masks").mkdir()
    with pytest.raises(DatasetError, match="val/images: no .png/.jpg images"):
        FolderSegmentation(tmp_path, "val", classes)
    folder_tree(tmp_path)
    (tmp_path / "train" / "masks" / "img1.png").unlink()
    with pytest.raises(DatasetError, match="img1.jpg: no mask .*img1.png"):
        FolderSegmentation(tmp_path, "train", classes)
    save_mask(tmp_path / "train" / "masks" / "img1.png", np.zeros((8, 12)))
    save_image(tmp_path / "train" / "images" / "img1.png")
    with pytest.raises(DatasetError, match="img1.png: same stem as img1.jpg"):
        FolderSegmentation(tmp_path, "train", classes)


def test_palette_and_16_bit_masks(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "images" / "a.png")
    (tmp_path / "train" / "masks").mkdir()
    palette = Image.fromarray(np.full((8, 12), 2, np.uint8)).convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "train" / "masks" / "a.png")
    save_image(tmp_path / "train" / "images" / "b.png")
    Image.fromarray(np.full((8, 12), 300, np.uint16)).save(tmp_path / "train" / "masks" / "b.png")
    dataset = FolderSegmentation(tmp_path, "train", classes=["x", "y", "z"])
    assert int(dataset[0][1][0, 0]) == 2
    with pytest.raises(DatasetError, match="b.png: mask label 300 is outside the 3 classes"):
        dataset[1]


def test_factory(tmp_path: Path) -> None:
    cityscapes_tree(tmp_path / "cs")
    ade_tree(tmp_path / "ade")
    folder_tree(tmp_path / "mine")
    assert isinstance(build_segmentation_dataset("cityscapes", tmp_path / "cs", "train"), CityscapesSegmentation)
    assert isinstance(build_segmentation_dataset("ade20k", tmp_path / "ade", "train"), ADE20KSegmentation)
    dataset = build_segmentation_dataset("folder", tmp_path / "mine", "train", classes=["a", "b", "c"])
    assert isinstance(dataset, FolderSegmentation)
    with pytest.raises(DatasetError, match="unknown, expected one of cityscapes, ade20k, folder"):
        build_segmentation_dataset("pascal", tmp_path, "train")
    with pytest.raises(DatasetError, match="defines its own classes"):
        build_segmentation_dataset("ade20k", tmp_path / "ade", "train", classes=["a"])


def test_transforms_and_batching(tmp_path: Path) -> None:
    cityscapes_tree(tmp_path)
    dataset = build_segmentation_dataset("cityscapes", tmp_path, "train", transforms=SegTrainTransform((16, 16)))
    torch.manual_seed(0)
    images, masks = next(iter(DataLoader(dataset, batch_size=3)))
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert masks.shape == (3, 16, 16) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= {0, 255}


def test_kept_decoded_samples_give_the_same_batches(tmp_path: Path) -> None:
    """A dataset that keeps its decoded samples yields, under the same seeds, the batches of one that
    decodes every time, over several epochs (so the augmentations never alter what it keeps)."""
    cityscapes_tree(tmp_path)
    transform = SegTrainTransform((8, 8), scale_range=(0.5, 1.5), cat_max_ratio=1.0)
    plain = build_segmentation_dataset("cityscapes", tmp_path, "train", transforms=transform)
    kept = build_segmentation_dataset("cityscapes", tmp_path, "train", transforms=transform)
    kept.keep_decoded(2**20)
    for epoch in range(4):
        for index in range(len(plain)):
            torch.manual_seed(epoch * 10 + index)
            want = plain[index]
            torch.manual_seed(epoch * 10 + index)
            got = kept[index]
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            assert got[1].dtype == torch.int64
    assert kept.cache is not None and len(kept.cache) == 3
    assert kept.cache.misses == 3 and kept.cache.hits == 9


def test_kept_decoded_samples_stop_at_the_budget(tmp_path: Path) -> None:
    cityscapes_tree(tmp_path)  # 8x12 RGB images (288 bytes) and uint8 masks (96 bytes)
    dataset = build_segmentation_dataset("cityscapes", tmp_path, "train")
    dataset.keep_decoded(2 * (288 + 96))
    for _ in range(2):
        for index in range(3):
            image, mask = dataset[index]
            assert image.shape == (3, 8, 12) and mask.dtype == torch.int64
    assert dataset.cache is not None
    assert len(dataset.cache) == 2 and dataset.cache.used_bytes == 2 * (288 + 96) and dataset.cache.full
    assert dataset.cache.misses == 4  # the third sample is decoded on both reads
    dataset.keep_decoded(0)
    assert dataset.cache is None
