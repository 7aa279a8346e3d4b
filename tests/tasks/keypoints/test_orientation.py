"""The keypoint reader and EXIF orientation: a sideways-stored JPEG is read upright when the annotation file
records the upright size, as stored when it records the stored size (COCO was annotated on stored pixels),
and refused when it records neither."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrnas.data.errors import DatasetError
from hrnas.tasks.keypoints.dataset import CocoKeypoints


def write_set(root: Path, width: int, height: int) -> np.ndarray:
    """One JPEG stored 64 wide × 32 high with EXIF orientation 6 (shown 32 × 64) and one annotation whose
    image entry records ``width`` × ``height``; returns the stored pixels."""
    (root / "images").mkdir(parents=True)
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "images" / "a.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    keypoints = [4.0, 4.0, 2, 10.0, 4.0, 2]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400,
                         "iscrowd": 0, "num_keypoints": 2, "keypoints": keypoints}],  # fmt: skip
        "categories": [{"id": 1, "name": "thing", "keypoints": ["a", "b"]}],
    }
    (root / "ann.json").write_text(json.dumps(data))
    return stored


def read(root: Path) -> np.ndarray:
    ds = CocoKeypoints(root, "ann.json", "images", split_is_train=False, input_size=(32, 32))
    return ds._read_image(ds.records[0])


def test_upright_size_recorded_reads_upright(tmp_path: Path) -> None:
    stored = write_set(tmp_path, width=32, height=64)
    pixels = read(tmp_path)
    assert pixels.shape == (64, 32, 3)
    assert np.abs(pixels.astype(int) - np.rot90(stored, k=-1)).max() < 40  # red on top after turning clockwise


def test_stored_size_recorded_reads_as_stored(tmp_path: Path) -> None:
    stored = write_set(tmp_path, width=64, height=32)
    pixels = read(tmp_path)
    assert pixels.shape == (32, 64, 3) and np.abs(pixels.astype(int) - stored).max() < 40


def test_size_fitting_neither_is_refused(tmp_path: Path) -> None:
    write_set(tmp_path, width=50, height=50)
    with pytest.raises(DatasetError, match=r"a\.jpg: image is 32x64 but ann\.json records width 50, height 50"):
        read(tmp_path)
