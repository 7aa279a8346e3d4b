"""Progress bars: one tqdm style (rate and ETA) for every long loop of the library."""

from __future__ import annotations

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
            iterates).
        kwargs: passed to ``tqdm`` (e.g. ``leave=False``, ``initial=`` when resuming).
    """
    if isinstance(iterable_or_total, int) and not isinstance(iterable_or_total, bool):
        return tqdm(total=iterable_or_total, desc=desc, disable=not enabled, dynamic_ncols=True, **kwargs)
    return tqdm(iterable_or_total, desc=desc, disable=not enabled, dynamic_ncols=True, **kwargs)
