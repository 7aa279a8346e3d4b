"""Fashion-MNIST location and IDX decoding, on small synthetic IDX files (plus the real files if present)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from hrnas.data import fashion_mnist as fm
from hrnas.data.errors import DatasetError

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    code = IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fake_dataset(folder: Path, num_train: int = 12, num_test: int = 6) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("test", num_test)):
        images_name, labels_name = fm.SPLIT_FILES[split]
        write_idx(folder / images_name, rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(folder / labels_name, (np.arange(count) % 10).astype(np.uint8))
    return folder


@pytest.fixture(autouse=True)
def isolated_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the search away from the real machine: no env var, no package, an empty cache."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(fm, "_dpkg_folders", lambda: [])
    monkeypatch.setattr(fm, "DEBIAN_DATA_DIR", tmp_path / "no-debian-package")
    fm._load_split_cached.cache_clear()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 70000], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ],
)
@pytest.mark.parametrize("suffix", [".gz", ""])
def test_load_idx_round_trip(tmp_path: Path, array: np.ndarray, suffix: str) -> None:
    path = write_idx(tmp_path / f"data-idx{suffix}", array)
    loaded = fm.load_idx(path)
    assert loaded.dtype == array.dtype and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)
    loaded[...] = 0  # writable


def corrupt_variants(tmp_path: Path) -> dict[str, Path]:
    good = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    variants = {
        "bad magic": b"\x01\x02" + good[2:],
        "unknown type": good[:2] + b"\x07" + good[3:],
        "truncated data": good[:-10],
        "extra data": good + b"\x00",
        "short header": good[:6],
        "too short": good[:2],
    }
    paths = {}
    for name, data in variants.items():
        path = tmp_path / f"{name.replace(' ', '-')}.gz"
        with gzip.open(path, "wb") as stream:
            stream.write(data)
        paths[name] = path
    not_gzip = tmp_path / "not-gzip.gz"
    not_gzip.write_bytes(good)
    paths["not gzip"] = not_gzip
    cut_gzip = tmp_path / "cut-gzip.gz"
    cut_gzip.write_bytes(gzip.compress(good)[:-20])
    paths["cut gzip"] = cut_gzip
    paths["missing"] = tmp_path / "missing.gz"
    return paths


def test_load_idx_rejects_corrupt_files_naming_them(tmp_path: Path) -> None:
    for name, path in corrupt_variants(tmp_path).items():
        with pytest.raises(DatasetError) as info:
            fm.load_idx(path)
        message = str(info.value)
        assert str(path) in message, name
        assert "\n" not in message, name


def test_explicit_root_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_fake_dataset(tmp_path / "fm")
    assert fm.fashion_mnist_root(folder) == folder
    monkeypatch.setenv(fm.ENV_VAR, str(folder))
    assert fm.fashion_mnist_root() == folder
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*HRNAS_FASHION_MNIST"):
        fm.fashion_mnist_root()
    with pytest.raises(DatasetError, match="root argument"):
        fm.fashion_mnist_root(folder)


def test_search_order_package_before_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = write_fake_dataset(fm.default_cache_dir())
    assert cache == tmp_path / "xdg-cache" / "hrnas" / "fashion-mnist"
    assert fm.fashion_mnist_root(fetch=False) == cache
    package = write_fake_dataset(tmp_path / "usr-share")
    monkeypatch.setattr(fm, "DEBIAN_DATA_DIR", package)
    assert fm.fashion_mnist_root(fetch=False) == package
    listed = write_fake_dataset(tmp_path / "dpkg-listed")
    monkeypatch.setattr(fm, "_dpkg_folders", lambda: [listed])
    assert fm.fashion_mnist_root(fetch=False) == listed


def test_not_found_without_fetch(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found.*dataset-fashion-mnist"):
        fm.fashion_mnist_root(fetch=False)


def test_fetch_without_apt_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm.shutil, "which", lambda name: None)
    with pytest.raises(DatasetError, match="apt-get/dpkg-deb not found"):
        fm.fetch_fashion_mnist(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary folder is gone


def test_load_fashion_mnist_contract(tmp_path: Path) -> None:
    folder = write_fake_dataset(tmp_path / "fm", num_train=12, num_test=6)
    images, labels = fm.load_fashion_mnist("train", folder)
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int64
    assert not images.flags.writeable and not labels.flags.writeable
    again, _ = fm.load_fashion_mnist("train", folder)
    assert again is images  # decoded once per process
    test_images, _ = fm.load_fashion_mnist("test", folder)
    assert test_images.shape == (6, 28, 28)
    with pytest.raises(DatasetError, match="split 'val'"):
        fm.load_fashion_mnist("val", folder)  # type: ignore[arg-type]


def test_load_fashion_mnist_rejects_inconsistent_files(tmp_path: Path) -> None:
    folder = write_fake_dataset(tmp_path / "fm")
    labels_path = folder / "train-labels-idx1-ubyte.gz"
    write_idx(labels_path, np.full(12, 10, np.uint8))
    with pytest.raises(DatasetError, match="label 10 is outside the 10 classes"):
        fm.load_fashion_mnist("train", folder)
    fm._load_split_cached.cache_clear()
    write_idx(labels_path, np.zeros(11, np.uint8))
    with pytest.raises(DatasetError, match="11 labels for 12 images"):
        fm.load_fashion_mnist("train", folder)
    fm._load_split_cached.cache_clear()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((11, 32, 32), np.uint8))
    with pytest.raises(DatasetError, match=r"expected uint8 images \(N, 28, 28\)"):
        fm.load_fashion_mnist("train", folder)


def test_real_files_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real dataset, if this machine has it in a standard place (never fetched here)."""
    monkeypatch.undo()
    fm._load_split_cached.cache_clear()
    try:
        folder = fm.fashion_mnist_root(fetch=False)
    except DatasetError:
        pytest.skip("Fashion-MNIST is not installed on this machine")
    images, labels = fm.load_fashion_mnist("test", folder)
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10
    assert len(fm.FASHION_MNIST_CLASSES) == 10


@pytest.mark.slow
def test_fetch_from_debian_package(tmp_path: Path) -> None:
    cache = fm.fetch_fashion_mnist(tmp_path / "cache")
    assert sorted(p.name for p in cache.iterdir()) == sorted(fm.ALL_FILES)
    images, labels = fm.load_fashion_mnist("train", cache)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
