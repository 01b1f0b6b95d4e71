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
