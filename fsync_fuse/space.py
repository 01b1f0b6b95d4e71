"""Space: the share's quota as statfs shows it, a file's size (truncate), and fallocate(2) on a
share that has no reservations.

The share cannot reserve space: mode 0 extends the file's size (refused with ENOSPC when the
share's free space cannot hold the growth), KEEP_SIZE alone changes nothing. PUNCH_HOLE and
ZERO_RANGE write zeros through the cache, and the upload sends whole zero ranges as "clear
range" calls (no payload; writeback/uploader.py). COLLAPSE_RANGE, INSERT_RANGE and
UNSHARE_RANGE would shift or unshare data the share cannot move: EOPNOTSUPP.
"""

from __future__ import annotations

import errno
import logging
import time

import pyfuse3
import trio

from cache import BlockCache
from fsync_fuse import names
from fsync_fuse.attrs import Inode
from fsync_fuse.namespace import Namespace
from fsync_fuse.reader import Reader
from fsync_fuse.writeback.dirty import DirtySet
from remote.base import Remote, RemoteError

log = logging.getLogger(__name__)

#: fallocate(2) modes (linux/falloc.h)
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10
#: a punched or zeroed range is written this much at a time
ZERO_CHUNK = 4 << 20
#: how long an answer about the share's usage is reused
USAGE_TTL = 30.0


class Space:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        reader: Reader,
    ) -> None:
        self.ns, self.cache, self.remote, self.dirty, self.reader = ns, cache, remote, dirty, reader
        self._usage: tuple[float, pyfuse3.StatvfsData] | None = None

    async def usage(self) -> pyfuse3.StatvfsData:
        """The share's quota and use as statfs answers them, asked at most every USAGE_TTL."""
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] > USAGE_TTL:
            s = pyfuse3.StatvfsData()
            bs = 4096
            s.f_bsize = self.cache.block_size
            s.f_frsize = bs
            quota, used = 5 << 40, 0
            with trio.move_on_after(5):
                try:
                    u = await self.remote.usage()
                    quota, used = u.quota_bytes or quota, u.used_bytes
                except RemoteError as exc:
                    log.debug("share usage unavailable: %s", exc)
                    if self._usage is not None:
                        return self._usage[1]
            s.f_blocks = quota // bs
            s.f_bfree = s.f_bavail = max(0, quota - used) // bs
            s.f_files = 1 << 32
            s.f_ffree = s.f_favail = 1 << 31
            s.f_namemax = names.MAX_NAME
            self._usage = (now, s)
        return self._usage[1]

    async def fallocate(self, ino: int, mode: int, offset: int, length: int) -> bool:
        """Apply fallocate(2) to file `ino`; True when its content or size changed."""
        if offset < 0 or length <= 0:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if mode & ~(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if mode & PUNCH_HOLE and not mode & KEEP_SIZE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # as fallocate(2) says
        rec = self.ns.must(ino)
        end = offset + length
        grow = not mode & KEEP_SIZE and end > rec.size
        if grow:
            free = await self.usage()
            if end - rec.size > free.f_bavail * free.f_frsize:
                raise pyfuse3.FUSEError(errno.ENOSPC)
        changed = False
        if mode & (PUNCH_HOLE | ZERO_RANGE):
            stop = end if grow else min(end, rec.size)
            self.dirty.sync_remote_valid(rec)
            fetch = self.reader.fetcher(ino)
            for off in range(offset, stop, ZERO_CHUNK):
                n = min(ZERO_CHUNK, stop - off)
                await self.cache.write(ino, off, bytes(n), fetch=fetch)
                self.ns.wrote(ino, off + n)
                self.dirty.mark_dirty(ino)
                changed = True
        if grow and self.ns.must(ino).size < end:
            self.truncate(ino, end)  # extended like a truncate upwards: zeros
            changed = True
        return changed

    def truncate(self, ino: int, size: int) -> Inode:
        """Give file `ino` this size (a truncate that is not a setattr: O_TRUNC, fallocate)."""
        rec = self.ns.setattr(ino, size=size, queue=False)
        self.resized(ino, size)
        return rec

    def resized(self, ino: int, size: int) -> None:
        """The namespace recorded the new size: the write-back and the cache follow."""
        # The low-water mark and the new size are durable (mark_dirty flushes them in one
        # transaction) before the cache drops any data: a crash in between must not leave
        # the share's old bytes above `size` looking current (cache/INVARIANTS.md).
        self.dirty.mark_dirty(ino, truncated_to=size)
        self.ns.flush()
        self.cache.truncate(ino, size)
