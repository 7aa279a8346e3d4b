"""Fashion-MNIST from local IDX files, never downloaded from the internet at run time.

The four gzip'd IDX files (``train-images-idx3-ubyte.gz`` and friends, Xiao et al. 2017) are looked
for, in order:

1. the ``root`` argument;
2. the folder named by the environment variable ``HRNAS_FASHION_MNIST``;
3. the files installed by the Debian package ``dataset-fashion-mnist`` (``dpkg -L``), or its known
   install folder ``/usr/share/datasets/fashion-mnist``;
4. the user cache, ``$XDG_CACHE_HOME/hrnas/fashion-mnist`` (default ``~/.cache/hrnas/fashion-mnist``).

When none holds them, :func:`fetch_fashion_mnist` takes them from the Debian package through the
system package manager (``apt-get download`` needs no root) and copies them into the user cache.
An explicit ``root`` or ``HRNAS_FASHION_MNIST`` that lacks the files is an error, not a fall-through.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from hrnas.data.errors import DatasetError
from hrnas.utils.atomic import atomic_path

ENV_VAR = "HRNAS_FASHION_MNIST"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES: tuple[str, ...] = tuple(name for pair in SPLIT_FILES.values() for name in pair)

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def default_cache_dir() -> Path:
    """The per-user cache folder for Fashion-MNIST: ``$XDG_CACHE_HOME/hrnas/fashion-mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hrnas" / "fashion-mnist"


def _missing_files(folder: Path) -> list[str]:
    return [name for name in ALL_FILES if not (folder / name).is_file()]


def _require_complete(folder: Path, origin: str) -> Path:
    missing = _missing_files(folder)
    if missing:
        raise DatasetError(f"{folder}: missing {', '.join(missing)} (folder given by {origin})")
    return folder


def _dpkg_folders() -> list[Path]:
    """Folders holding the IDX files of the installed Debian package, per ``dpkg -L``; [] if none."""
    if shutil.which("dpkg") is None:
        return []
    try:
        listing = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    folders: list[Path] = []
    for line in listing.stdout.splitlines():
        path = Path(line.strip())
        if path.name == ALL_FILES[0] and path.parent not in folders:
            folders.append(path.parent)
    return folders


def fashion_mnist_root(root: str | os.PathLike[str] | None = None, fetch: bool = True) -> Path:
    """The folder holding the four Fashion-MNIST IDX ``.gz`` files.

    Args:
        root: explicit folder; when given it must hold all four files.
        fetch: when no folder holds them, take them from the Debian package into the user cache
            (see :func:`fetch_fashion_mnist`); when False, raise instead.

    Raises:
        DatasetError: the files are not found (and ``fetch`` is False or fetching failed).
    """
    if root is not None:
        return _require_complete(Path(root), "the root argument")
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return _require_complete(Path(from_env), f"${ENV_VAR}")
    cache = default_cache_dir()
    candidates = [*_dpkg_folders(), DEBIAN_DATA_DIR, cache]
    for folder in candidates:
        if not _missing_files(folder):
            return folder
    if fetch:
        return fetch_fashion_mnist(cache)
    looked = ", ".join(str(folder) for folder in dict.fromkeys(candidates))
    raise DatasetError(
        f"{cache}: Fashion-MNIST not found (looked in {looked}); install the Debian package "
        f"{DEBIAN_PACKAGE}, set {ENV_VAR}, or call fetch_fashion_mnist()"
    )


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _download_deb(workdir: Path) -> Path:
    """``apt-get download`` the package into ``workdir``; ``apt-get update`` once first if that fails as root."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DatasetError(
            f"{workdir}: apt-get/dpkg-deb not found, cannot fetch {DEBIAN_PACKAGE}; "
            f"put the IDX files in a folder and set {ENV_VAR}"
        )
    # apt drops to the _apt user for downloads, which needs to enter the folder.
    workdir.chmod(0o755)
    result = _run(["apt-get", "download", DEBIAN_PACKAGE], workdir)
    if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        _run(["apt-get", "update"], workdir)
        result = _run(["apt-get", "download", DEBIAN_PACKAGE], workdir)
    debs = sorted(workdir.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise DatasetError(f"{workdir}: apt-get download {DEBIAN_PACKAGE} failed: {_last_line(result.stderr)}")
    return debs[-1]


def fetch_fashion_mnist(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Copy the IDX files of the Debian package ``dataset-fashion-mnist`` into ``cache_dir``.

    The ``.deb`` is fetched with ``apt-get download`` (no root needed) into a temporary folder
    inside ``cache_dir``, unpacked with ``dpkg-deb -x``, each file is checked with :func:`load_idx`,
    then moved into place atomically (:mod:`hrnas.utils.atomic`), so a reader never sees a half-written file.

    Args:
        cache_dir: destination folder; default :func:`default_cache_dir`.

    Returns:
        ``cache_dir``, now holding the four ``.gz`` files.

    Raises:
        DatasetError: apt/dpkg are unavailable, the download failed, or the package lacks a file.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
        workdir = Path(tmp)
        deb = _download_deb(workdir)
        unpacked = workdir / "unpacked"
        result = _run(["dpkg-deb", "-x", str(deb), str(unpacked)], workdir)
        if result.returncode != 0:
            raise DatasetError(f"{deb}: dpkg-deb -x failed: {_last_line(result.stderr)}")
        found = {path.name: path for path in unpacked.rglob("*.gz") if path.name in ALL_FILES}
        missing = [name for name in ALL_FILES if name not in found]
        if missing:
            raise DatasetError(f"{deb}: package lacks {', '.join(missing)}")
        for name in ALL_FILES:
            load_idx(found[name])
            with atomic_path(cache / name) as staged:
                shutil.copyfile(found[name], staged)
    return cache


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one IDX file (gzip'd when its name ends in ``.gz``).

    Returns:
        A writable array in native byte order with the file's dims and dtype
        (uint8 for Fashion-MNIST images ``(N, 28, 28)`` and labels ``(N,)``).

    Raises:
        DatasetError: naming the file, when it is unreadable, not gzip, has a bad magic number, or
            its size disagrees with the dims in its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                data = stream.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: cannot read ({error})") from None
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes, too short for an IDX header")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        magic = struct.unpack(">I", data[:4])[0]
        raise DatasetError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x00000803 for images, 0x00000801 for "
            "labels: two zero bytes, a type code, the number of dims)"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dims)")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise DatasetError(
            f"{path}: IDX header gives dims {dims} ({expected} bytes) but the file holds "
            f"{len(data) - header_size} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=4)
def _load_split_cached(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = SPLIT_FILES[split]
    images_path, labels_path = Path(folder) / images_name, Path(folder) / labels_name
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DatasetError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_name}")
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(
            f"{labels_path}: label {int(labels.max())} is outside the {len(FASHION_MNIST_CLASSES)} classes"
        )
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: Literal["train", "test"],
    root: str | os.PathLike[str] | None = None,
    fetch: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels of one split.

    Decoded arrays are cached per process and returned read-only (copy before writing).

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000 items).
        root, fetch: where to look, as in :func:`fashion_mnist_root`.

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` with 0 = background, and int64 ``(N,)`` indices
        into :data:`FASHION_MNIST_CLASSES`.
    """
    if split not in SPLIT_FILES:
        raise DatasetError(f"split {split!r}: expected one of {sorted(SPLIT_FILES)}")
    folder = fashion_mnist_root(root, fetch=fetch)
    return _load_split_cached(str(folder.resolve()), split)
