"""One user of a cache directory at a time: a mount, or `migrate --cutover` filling it.

Two processes sharing one index would corrupt it, so each holds an exclusive flock on
CACHE_DIR/lock for as long as it uses the directory (released when the process ends).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class CacheInUse(Exception):
    """The cache directory cannot be used (another holder, or not creatable): why."""


def lock_cache_dir(directory: Path, *, who: str = "another fsync-fuse mount") -> int:
    """Create the directory (0700) and take its lock; the descriptor holds it."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CacheInUse(f"cache directory {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CacheInUse(
            f"cache directory {directory} is in use by {who} "
            "(give this one its own --cache-dir, or unmount that first)"
        ) from None
    return fd
