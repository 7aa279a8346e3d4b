"""Atomic writes: a file or a folder appears under its final name complete, or not at all.

Everything is first written under a temporary name in the destination's folder (so the final
``os.replace`` is a rename on one file system), then moved into place. On any error, including
``KeyboardInterrupt``, the temporary file or folder is removed and a previous file at the destination
is left untouched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TMP_MARKER", "atomic_folder", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]

TMP_MARKER = ".hrnas-tmp-"
"""Part of every temporary name written here (``.{name}.hrnas-tmp-{pid}-{random}``), to find stale ones."""


def fsync_dir(folder: Path) -> None:
    """Persist a rename on POSIX file systems (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.{name}.hrnas-tmp-{pid}-{8 hex}``."""
    return path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


@contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    The caller writes the temporary file (with any writer: ``torch.save``, ``fig.savefig``, an ONNX
    exporter, ...) and may check it before the block ends: an exception removes it and leaves ``path`` as
    it was. ``durable`` also syncs the folder after the rename (checkpoints). The folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (fsync-ed before the rename when ``durable``)."""
    path = Path(path)
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


@contextmanager
def atomic_folder(root: str | os.PathLike[str], check_replaceable: Callable[[Path], None] | None = None
                  ) -> Iterator[Path]:
    """Yield an empty staging folder beside ``root``; when the block ends without error it becomes ``root``.

    A previous ``root`` is moved aside first and deleted after, so ``root`` is at every moment absent,
    the previous complete folder, or the new complete one. ``check_replaceable(root)`` runs before
    anything is written and may raise to refuse replacing an existing folder.
    """
    root = Path(root)
    if check_replaceable is not None:
        check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}{TMP_MARKER}", dir=root.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if not root.exists():
            os.replace(staging, root)
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "previous")
            os.replace(staging, root)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
