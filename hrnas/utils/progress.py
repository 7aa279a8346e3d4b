"""Progress bars: one tqdm style (rate and ETA) for every long loop of the library."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable_or_total: Iterable[T] | int, desc: str = "", enabled: bool = True,
             **kwargs: Any) -> tqdm:
    """A tqdm bar with rate and ETA over an iterable, or a bar of ``total`` steps updated by hand.

    Args:
        iterable_or_total: what to iterate, or an int total for a bar updated with ``bar.update(n)``.
        desc: the bar's label.
        enabled: show the bar; pass ``is_main()`` so other ranks stay silent (a disabled bar still
            iterates). An enabled bar is drawn only when stderr is a terminal, so logs and captured
            output get no redrawn lines and an error after a bar stays the only line; set
            ``HRNAS_PROGRESS=1`` to draw bars into a file or pipe anyway. A bar given its own ``file=``
            is drawn there.
        kwargs: passed to ``tqdm`` (e.g. ``leave=False``, ``initial=`` when resuming).
    """
    disable = _disabled(enabled) if "file" not in kwargs or not enabled else False
    if isinstance(iterable_or_total, int) and not isinstance(iterable_or_total, bool):
        return tqdm(total=iterable_or_total, desc=desc, disable=disable, dynamic_ncols=True, **kwargs)
    return tqdm(iterable_or_total, desc=desc, disable=disable, dynamic_ncols=True, **kwargs)


def _disabled(enabled: bool) -> bool | None:
    """tqdm's ``disable``: True when not enabled; None (off unless stderr is a terminal) by default;
    False (always on) with ``HRNAS_PROGRESS=1``."""
    if not enabled:
        return True
    return False if os.environ.get("HRNAS_PROGRESS", "") not in ("", "0") else None
