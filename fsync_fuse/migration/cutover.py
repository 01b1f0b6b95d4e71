"""`migrate --cutover`: after the last pass, the source becomes the mount's cache.

The mount is assembled in-process without the kernel (assembly.open_mount, as the
in-process tests do) on the cache directory the real mount will use, with the initial
download of every file (`--initial-download all`: every directory listed, every file that
fits the cache recalled, newest first). Its share is the real one except for ranged reads
of files this migration copied and the source still holds unchanged: those are answered
as ranges of the source file (`Seeded`), which the cache copies file to file with
copy_file_range: on XFS or Btrfs with the cache on the same filesystem a reflink (the data
is shared, not copied, and takes no more space until one side changes), elsewhere a copy
inside the kernel. So the cache ends up holding every such file as clean blocks,
recorded with the share's ETag by the listing, and a mount on that cache afterwards serves
them with no download. A file changed on the share since it was copied, or not copied by
this migration, is fetched from the share as any recall would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import trio

from cache.results import FileSlice
from fsync_fuse.assembly import open_mount
from fsync_fuse.attrs import FILE
from fsync_fuse.cachelock import lock_cache_dir
from fsync_fuse.config import MountConfig, share_id
from fsync_fuse.initial import is_done
from fsync_fuse.migration.journal import Journal
from fsync_fuse.migration.source import Scan
from remote.base import Remote

log = logging.getLogger(__name__)


class Seeded:
    """The share, but a read of a seeded file comes from the source (where the same bytes
    are: the journal says this migration copied them and the source has not changed since).
    Everything else goes to the share unchanged."""

    def __init__(self, inner: Remote, seeds: Mapping[str, bytes]) -> None:
        self._inner = inner
        self._seeds = seeds  # share path -> source path
        self.from_source = 0  # bytes served from the source
        self.from_share = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read(self, path: str, offset: int, length: int) -> bytes | FileSlice:
        """A seeded file's range is answered as a FileSlice of the source, which the cache
        copies file to file (a reflink where the filesystem shares extents); the reader hands
        it through untouched."""
        src = self._seeds.get(path.strip("/"))
        if src is None:
            data = await self._inner.read(path, offset, length)
            self.from_share += len(data)
            return data
        n = max(0, min(length, os.stat(src).st_size - offset))
        self.from_source += n
        return FileSlice(src, offset, n)


def seeds_of(root: str, found: Scan, journal: Journal) -> dict[str, bytes]:
    """Share path -> source path of every regular file the journal has as copied from the
    source as it is now."""
    out = {}
    for e in found.entries:
        if e.kind != FILE:
            continue
        rec = journal.get(e.rel)
        if rec is not None and rec["sig"] == e.signature():
            out[e.share] = os.path.join(os.fsencode(root), e.rel)
    return out


async def adopt(
    *,
    remote: Remote,
    url: str,
    share_url: str,
    account_url: str,
    share: str,
    cache_dir: Path,
    cache_size: int,
    seeds: dict[str, bytes],
) -> dict[str, int]:
    """Fill `cache_dir` as the mount's cache; returns what came from where."""
    cfg = MountConfig(
        url=url,
        mountpoint="",  # never handed to the kernel
        cache_dir=cache_dir,
        share_id=share_id(account_url, share),
        share_url=share_url,
        cache_size=cache_size,
        initial_download="all",
        poll_interval=0,
        snapshot_dir=None,
    )
    seeded = Seeded(remote, seeds)
    lock = lock_cache_dir(cache_dir, who="a mount (unmount it before the cutover)")
    try:
        async with open_mount(cfg, cast(Remote, seeded)) as mount:
            while not is_done(mount.ns):
                await trio.sleep(0.2)
            st = mount.cache.stats()
    finally:
        os.close(lock)
    log.info(
        "cutover: %d bytes from the source, %d from the share",
        seeded.from_source,
        seeded.from_share,
    )
    return {
        "from_source_bytes": seeded.from_source,
        "from_share_bytes": seeded.from_share,
        "cached_bytes": st.used,
    }
