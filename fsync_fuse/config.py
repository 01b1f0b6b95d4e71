"""Mount settings: parsing sizes, choosing the cache directory, `-o` options from mount(8)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
KiB = 1 << 10
MiB = 1 << 20
LOG_NAME = "fsync-fuse.log"


def log_limit(cache_size: int) -> int:
    """The size at which a log in the cache directory rotates: 1/64 of the cache, from 64 KiB
    to 4 MiB, in whole pages. With the one older file kept, the log takes at most twice this,
    which the cache reserves out of --cache-size."""
    return max(64 * KiB, min(cache_size // 64, 4 * MiB)) // 4096 * 4096


def inside(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Whether `path` is `directory` or below it (symbolic links resolved)."""
    p, d = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([p, d]) == d


def parse_size(text: str) -> int:
    """'512M', '10G', '1T', '1.5G', '4096', '64KiB' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"invalid size {text!r} (examples: 512M, 10G, 1T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def share_id(account_url: str, share: str) -> str:
    """A directory-safe id for one share on one endpoint."""
    digest = hashlib.sha256(f"{account_url}/{share}".encode()).hexdigest()[:10]
    account = account_url.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{account}-{share}")
    return f"{safe}-{digest}"


def default_cache_dir(sid: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fsync-fuse" / sid


def cache_dir_for(account_url: str, share: str, given: str | None) -> Path:
    """--cache-dir (made absolute), else the default cache directory of this share (mount
    and migrate --cutover must agree on it)."""
    return (
        Path(os.path.abspath(given)) if given else default_cache_dir(share_id(account_url, share))
    )


@dataclass
class MountConfig:
    url: str
    mountpoint: str
    cache_dir: Path
    share_id: str
    share_url: str  # without any SAS: safe to log
    cache_size: int = 10 << 30
    block_size: int = 1 << 20
    writeback_delay: float = 5.0
    read_ahead: int = 64 << 20
    list_ahead: int = 4  # sibling directories a tree walk lists ahead (listing.py)
    attr_timeout: float = 1.0
    fsync_remote: bool = False
    allow_other: bool = False
    foreground: bool = False
    log_file: str | None = None
    debug: bool = False
    io_timeout: float = 60.0
    exit_drain_timeout: float = 30.0
    poll_interval: float = 30.0
    dir_cache_time: float | None = None  # None: see `listing_ttl`
    upload_leases: bool = True
    site_name: str = "site"
    #: longest a write waits for room when dirty and pinned data fill the cache (ENOSPC after)
    full_timeout: float = 30.0
    #: tiering policies given explicitly (settings.py: name -> text); the rest persisted
    policies: dict[str, str] = field(default_factory=dict)
    initial_download: str = "namespace"
    metrics: tuple[str, int] | None = None  # serve Prometheus metrics on (addr, port)
    #: the read-only directory of share snapshots in the mount root; None: not shown
    snapshot_dir: str | None = ".snapshots"
    creds: dict[str, Any] = field(default_factory=dict)

    @property
    def log_path(self) -> str | None:
        """Where the daemon logs: --log, else CACHE_DIR/fsync-fuse.log in the background;
        None: stderr (in the foreground)."""
        if self.log_file:
            return self.log_file
        return None if self.foreground else str(self.cache_dir / LOG_NAME)

    @property
    def log_max_bytes(self) -> int:
        """The rotation size of a log that lives in the cache directory; 0 for a log
        elsewhere (the user's to manage) or on stderr."""
        path = self.log_path
        if path is None or not inside(path, self.cache_dir):
            return 0
        return log_limit(self.cache_size)

    @property
    def log_reserve(self) -> int:
        """What the log may take in the cache directory: the file and its one older copy."""
        return 2 * self.log_max_bytes

    @property
    def listing_ttl(self) -> float:
        """How long a listing (and the kernel's copy of entries and attributes) is trusted.
        The poller re-lists used directories every interval and tells the kernel what
        changed, so by default one poll interval; without polling, --attr-timeout."""
        if self.dir_cache_time is not None:
            return self.dir_cache_time
        if self.poll_interval > 0:
            return max(self.attr_timeout, self.poll_interval)
        return self.attr_timeout


# Options mount(8)/mount.fuse3 may pass that mean nothing to us.
GENERIC_MOUNT_OPTIONS = {
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "nofail",
    "_netdev",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "async",
    "sync",
    "owner",
    "group",
    "comment",
}


def options_to_args(opts: str) -> list[str]:
    """Translate `-o cache_size=10G,allow_other,...` (fstab style) into command-line flags."""
    args: list[str] = []
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key in GENERIC_MOUNT_OPTIONS or key.startswith(("x-", "comment=")):
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag, value] if sep else [flag]
    return args
