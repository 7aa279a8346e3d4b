"""The one error type raised by every hrnas dataset reader and writer.

Messages are a single line that starts with the file, folder or key at fault, e.g.
``DatasetError(f"{path}: mask label 23 is outside the 11 classes")``, so a user can open the
offending file straight from the message.
"""

from __future__ import annotations

from hrnas.utils.errors import HrnasError


class DatasetError(HrnasError, ValueError):
    """A dataset on disk is missing, incomplete, corrupt or inconsistent with its class list."""
