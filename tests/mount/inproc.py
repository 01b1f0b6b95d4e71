"""The filesystem built in-process over the emulator, its handlers called directly (no kernel).

It is assembled by the same code as the daemon's (`open_mount`): conflicts, leases, the
poller, close-to-open and the periodic flush all run as in a real mount.

Requests are plain objects with the attributes the handlers read (uid/gid of the caller, which
setattr fields are set); everything else (namespace, cache, queue, remote) is the real thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pyfuse3

from fsync_fuse.assembly import open_mount
from fsync_fuse.config import MountConfig
from fsync_fuse.fs import FS
from remote.azure import AzureOptions
from remote.credentials import open_remote

CTX = SimpleNamespace(uid=0, gid=0, pid=0, umask=0o022)


def fields(**set_) -> SimpleNamespace:
    names = (
        "update_atime",
        "update_mtime",
        "update_ctime",
        "update_mode",
        "update_uid",
        "update_gid",
        "update_size",
    )
    return SimpleNamespace(**{n: set_.get(n.removeprefix("update_"), False) for n in names})


def attrs(**values) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    for k, v in values.items():
        setattr(a, k, v)
    return a


@asynccontextmanager
async def filesystem(
    url: str,
    cache_dir: Path,
    *,
    cache_size: int = 64 << 20,
    block_size: int = 1 << 20,
    delay: float = 0.2,
    ttl: float = 1.0,
    read_ahead: int = 4 << 20,
    options: AzureOptions | None = None,
    fsync_remote: bool = False,
    full_timeout: float = 30.0,
    poll_interval: float = 0.0,
    upload_leases: bool = True,
) -> AsyncIterator[FS]:
    """The mount as the daemon builds it (fsync_fuse/assembly.py), minus the kernel. Polling
    is off unless asked for: a test lists when it wants to."""
    remote = await open_remote(url, options=options) if options else await open_remote(url)
    cfg = MountConfig(
        url=url,
        mountpoint="",  # never handed to the kernel
        cache_dir=Path(cache_dir),
        share_id="inproc",
        share_url=url,
        cache_size=cache_size,
        block_size=block_size,
        writeback_delay=delay,
        read_ahead=read_ahead,
        attr_timeout=ttl,
        fsync_remote=fsync_remote,
        io_timeout=30.0,
        poll_interval=poll_interval,
        upload_leases=upload_leases,
        site_name="inproc",
        full_timeout=full_timeout,
    )
    try:
        async with open_mount(cfg, remote) as mount:
            yield mount.fs
    finally:
        await remote.aclose()
