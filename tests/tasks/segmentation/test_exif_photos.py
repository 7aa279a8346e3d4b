"""A phone photo stored sideways with EXIF orientation 6 ("rotate 90° clockwise") and its mask drawn on the
upright picture: the folder dataset reads the pair at the same size, aligned, and a tiny network trains on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrnas.engine.config import load_config
from hrnas.engine.trainer import train
from hrnas.tasks.segmentation.datasets import FolderSegmentation

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)


def upright_scene(height: int, width: int) -> np.ndarray:
    """Class ids of the upright picture: a top band (0), a bottom-left block (1) and a bottom-right block (2)."""
    labels = np.zeros((height, width), np.uint8)
    labels[height // 2 :, : width // 2] = 1
    labels[height // 2 :, width // 2 :] = 2
    return labels


def write_phone_photo(folder: Path, stem: str, height: int = 48, width: int = 32) -> np.ndarray:
    """``images/{stem}.jpg`` stored rotated (``width`` high, ``height`` wide) with EXIF orientation 6, and
    ``masks/{stem}.png`` of the upright ``height`` × ``width`` picture; returns the upright labels."""
    labels = upright_scene(height, width)
    stored = np.rot90(COLOURS[labels], k=1)  # what the camera wrote: turning it 90° clockwise shows it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(stored)).save(
        folder / "images" / f"{stem}.jpg", format="JPEG", quality=95, subsampling=0, exif=exif.tobytes()
    )
    Image.fromarray(labels).save(folder / "masks" / f"{stem}.png")
    return labels


@pytest.fixture
def photo_root(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for split in ("train", "val"):
        for index in range(2):
            write_phone_photo(root / split, f"img{index}")
    (root / "classes.json").write_text(json.dumps(["sky", "road", "car"]))
    return root


def test_rotated_jpeg_and_its_mask_load_aligned(photo_root: Path) -> None:
    image, mask = FolderSegmentation(photo_root, "train").load(0)
    assert tuple(image.shape) == (3, 48, 32) and tuple(mask.shape) == (48, 32)
    pixels = image.permute(1, 2, 0).numpy().astype(int)
    for label, colour in enumerate(COLOURS):
        inside = mask.numpy() == label
        assert np.abs(pixels[inside] - colour).mean() < 20, f"class {label} is not under its colour"


def test_rotated_jpeg_trains(photo_root: Path, tmp_path: Path, single_thread: None) -> None:
    cfg = load_config(
        "demo_seg",
        [f"data.root={photo_root}", "data.format=folder", "model.spec=test_seg", "data.crop_size=[32, 32]",
         "data.batch_size=2", "data.eval_batch_size=2", "data.workers=0", "train.steps=2", "train.log_every=1",
         "train.eval_every=0", "train.checkpoint_every=0", "train.bn_calib_batches=1", "train.device=cpu",
         "schedule.warmup_steps=0", "search.enabled=false"],
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert (tmp_path / "run" / "final.pt").is_file()
    assert 0.0 <= result.metrics["miou"] <= 1.0
