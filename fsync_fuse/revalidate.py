"""Close-to-open: an open() sees the share's latest version of a file.

When what we know of a file is older than `ttl` (its directory was not listed and the file not
checked since), open() asks the share: it re-lists the file's directory when that holds at
most `list_max` entries (one call then revalidates every sibling, so reading a tree costs a
listing per directory, not a call per file), else it `stat`s the file. A different version (ETag plus size, last-write
time or FileId) bumps the inode's content version: clean cached blocks are dropped and the
kernel's page cache is not kept (fs.py compares content versions at open). Files with local
changes not uploaded yet, or with operations pending, keep their local state: the uploader's
conflict check deals with them.
"""

from __future__ import annotations

import logging
import time

from cache import BlockCache
from fsync_fuse.attrs import FILE, Inode
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import FsError, Gone, Namespace
from fsync_fuse.writeback.dirty import DirtySet
from remote.base import NotFound, Remote, RemoteError

log = logging.getLogger(__name__)


class Revalidator:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        lister: Lister,
        ttl: float,
        list_max: int = 1000,
    ) -> None:
        self.ns, self.cache, self.remote, self.dirty = ns, cache, remote, dirty
        self.ttl_ns = int(ttl * 1e9)
        self.lister = lister
        self.list_max = list_max
        self._checked: dict[int, int] = {}  # ino -> time.time_ns() of the last stat at open
        self.stats = {"checks": 0, "changed": 0, "listed": 0}

    def _fresh(self, rec: Inode) -> bool:
        now = time.time_ns()
        if now - self._checked.get(rec.ino, 0) < self.ttl_ns:
            return True
        parent = self.ns.get(rec.parent)
        return parent is not None and now - parent.listed_ns < self.ttl_ns

    async def check(self, ino: int) -> Inode | None:
        """Revalidate a file about to be opened; returns its record when the share's content
        changed (the caller tells the kernel), else None."""
        rec = self.ns.get(ino)
        if (
            rec is None
            or rec.kind != FILE
            or rec.remote_size is None
            or self.dirty.busy(ino)
            or self._fresh(rec)
        ):
            return None
        if self.ns.count_children(rec.parent, self.list_max + 1) <= (self.list_max):
            try:
                await self.lister.refresh(rec.parent)
            except (RemoteError, FsError) as exc:
                log.debug("revalidating by listing failed (%s): using what we have", exc)
                return None
            parent = self.ns.get(rec.parent)
            if parent is not None and time.time_ns() - parent.listed_ns < self.ttl_ns:
                self.stats["listed"] += 1
                new = self.ns.get(ino)
                if new is None or new.cver == rec.cver:
                    return None
                self.stats["changed"] += 1
                return new  # the merge dropped its clean blocks and told the kernel
            # not listed (operations pending in the directory): ask for the file itself
        outbox = self.ns.outbox
        with outbox.watch() as v0:
            try:
                path = self.ns.settled_path(ino)
            except Gone:
                return None
            if path is None:
                return None
            try:
                entry = await self.remote.stat(path)
            except NotFound:
                return None  # gone from the share: the next listing removes it
            except RemoteError as exc:
                log.debug("revalidating %r failed (%s): using what we have", path, exc)
                return None
            self.stats["checks"] += 1
            chain = self.ns.chain(ino) or [ino]
            if any(outbox.touched_since(i, v0) for i in chain):
                return None
            changed = self.ns.refresh_entry(ino, entry, self.dirty.busy)
        self._checked[ino] = time.time_ns()
        if len(self._checked) > 100_000:
            self._checked.clear()
        if changed is not None:
            self.stats["changed"] += 1
            log.debug("%s changed on the share since it was cached: dropping clean blocks", path)
            self.cache.invalidate(ino, changed.remote_size or 0)
        return changed
