"""Shared image helpers: decoding with one-line errors and the EXIF orientation, class colours, atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrnas.data.errors import DatasetError
from hrnas.data.images import load_image, palette, read_image, read_image_array, save_png


def test_read_image_gives_rgb_uint8_chw(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 9, np.uint8)).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (3, 5, 7) and image.dtype.is_floating_point is False and int(image.max()) == 9
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad.png: cannot decode image \("):
        read_image(tmp_path / "bad.png")


def write_rotated_jpeg(path: Path, stored: np.ndarray, orientation: int = 6) -> None:
    """Write ``stored`` (H, W, 3) as a JPEG whose EXIF says how to show it (6: rotate 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, format="JPEG", quality=95, subsampling=0, exif=exif.tobytes())


def blocks(height: int, width: int) -> np.ndarray:
    """Four flat quadrants (red, green, blue, white) that survive JPEG coding."""
    pixels = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    pixels[:h, :w] = (255, 0, 0)
    pixels[:h, w:] = (0, 255, 0)
    pixels[h:, :w] = (0, 0, 255)
    pixels[h:, w:] = (255, 255, 255)
    return pixels


def test_exif_orientation_6_is_read_upright(tmp_path: Path) -> None:
    stored = blocks(16, 32)  # 32 wide, 16 high as stored; shown 16 wide, 32 high
    write_rotated_jpeg(tmp_path / "phone.jpg", stored)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 32, 16)
    upright = np.rot90(stored, k=-1)  # 90° clockwise: the stored top-left (red) goes to the top-right
    got = image.permute(1, 2, 0).numpy().astype(int)
    assert np.abs(got - upright).max() < 40
    assert tuple(got[2, 13]) == pytest.approx((255, 0, 0), abs=40)  # red at the top right
    assert tuple(got[29, 2]) == pytest.approx((255, 255, 255), abs=40)  # white at the bottom left
    raw = read_image_array(tmp_path / "phone.jpg", orient=False)
    assert raw.shape == (16, 32, 3) and np.abs(raw.astype(int) - stored).max() < 40


@pytest.mark.parametrize("orientation", [1, 3, 8])
def test_other_orientations(tmp_path: Path, orientation: int) -> None:
    stored = blocks(16, 32)
    write_rotated_jpeg(tmp_path / "a.jpg", stored, orientation)
    expected = {1: stored, 3: np.rot90(stored, 2), 8: np.rot90(stored, 1)}[orientation]
    got = read_image_array(tmp_path / "a.jpg")
    assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() < 40


def test_load_image_names_missing_file_and_keeps_mode(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothing\.png: mask file not found"):
        load_image(tmp_path / "nothing.png", what="mask")
    Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3), mode="L").save(tmp_path / "m.png")
    mask = load_image(tmp_path / "m.png")
    assert mask.mode == "L" and mask.size == (3, 2)


def test_palette_is_distinct_and_starts_dark_grey() -> None:
    colours = palette(12)
    assert colours.shape == (12, 3) and colours.dtype == np.uint8
    assert tuple(colours[0]) == (64, 64, 64) and len({tuple(c) for c in colours}) == 12


def test_save_png_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = save_png(np.arange(12, dtype=np.uint8).reshape(3, 4), tmp_path / "sub" / "a.png")
    assert np.array_equal(np.asarray(Image.open(out)), np.arange(12).reshape(3, 4))

    def broken(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((2, 2), np.uint8), out)
    assert [p.name for p in out.parent.iterdir()] == ["a.png"]
    assert np.array_equal(np.asarray(Image.open(out)), np.arange(12).reshape(3, 4))
