"""Shared image helpers: decoding with one-line errors, class colours, atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrnas.data.errors import DatasetError
from hrnas.data.images import palette, read_image, save_png


def test_read_image_gives_rgb_uint8_chw(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 9, np.uint8)).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (3, 5, 7) and image.dtype.is_floating_point is False and int(image.max()) == 9
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad.png: cannot decode image \("):
        read_image(tmp_path / "bad.png")


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
