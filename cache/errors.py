"""Errors the cache raises; both carry a message meant for the user."""

from __future__ import annotations

import errno
import os


class CacheMismatch(Exception):
    """The cache directory was made for another share, block size or schema version."""


class CacheTooSmall(CacheMismatch):
    """max_bytes cannot hold what the directory keeps besides data plus a few blocks;
    `minimum` is the smallest max_bytes that can."""

    def __init__(self, message: str, minimum: int) -> None:
        super().__init__(message)
        self.minimum = minimum


class CacheFull(OSError):
    """Dirty and pinned data fill the cache and nothing became evictable in time (ENOSPC)."""

    def __init__(self, message: str = "local cache is full of dirty or pinned data") -> None:
        super().__init__(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {message}")


class PinTooLarge(CacheFull):
    """A pin refused before anything changed: what is pinned already plus what was asked would
    exceed what the data may use, less the data waiting for upload. The numbers are bytes."""

    def __init__(self, message: str, *, pinned: int, available: int, asked: int) -> None:
        super().__init__(message)
        self.pinned = pinned
        self.available = available
        self.asked = asked
