"""Directory listings from the share: loaded lazily, cached in the namespace, refreshed.

A directory is listed (all pages) on first use; entries that are new or whose ETag changed and
that carry the POSIX marker (attrs.py) are `stat`ed too, because only `stat` returns the
metadata holding mode, owner and the symlink flag; unmarked entries have the defaults.
After `ttl` seconds a listing is stale: a lookup that finds its name serves the cached entry and
refreshes in the background; a lookup that misses, and readdir, refresh first (so a file another
machine just created is found), but wait for that refresh at most `wait_bound` seconds: after
that the cached listing is served and the refresh goes on in the background. A refresh that
fails with a transient error (or outlasts the bound) marks the share down until a refresh
succeeds; meanwhile stale listings are served at once and refreshed in the background, so an
outage costs each `ls` nothing. A directory never listed still needs the share.

A listing never overrides local state the share has not caught up with: a directory with queued
operations keeps its local view, entries with dirty content or queued operations are left
alone, and a listing during which the queue touched the directory is taken again.

A tree walk (find, du, rsync, tar) opens a directory's subdirectories one after another in
readdir order; each listing's round trip to the share is time the walk waits. Opening a
directory never listed, or one listed ahead, lists the next `list_ahead` sibling directories
that were never listed in the background (`open_dir`), so the share works on those while the
walk reads this one. A lookup never does this, nor does a listing of a directory's own entries.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import trio

from cache import BlockCache
from fsync_fuse.attrs import has_marker
from fsync_fuse.groups import single_error
from fsync_fuse.handles import References
from fsync_fuse.namespace import FsError, MergeResult, Namespace, is_hidden
from fsync_fuse.tasks import TaskOwner
from fsync_fuse.writeback.dirty import DirtySet
from remote.base import NotFound, Remote, RemoteEntry, RemoteError

log = logging.getLogger(__name__)


class _Round:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class Lister(TaskOwner):
    """Its nursery (tasks.py) owns the background refreshes."""

    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        refs: References,
        on_merge: Callable[[int, MergeResult], None],
        ttl: float,
        list_ttl: float | None = None,
        io_timeout: float = 60.0,
        stat_parallel: int = 16,
        list_ahead: int = 4,
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.remote = remote
        self.dirty = dirty
        #: what the kernel and open handles refer to: such entries are orphaned, not deleted,
        #: and open files keep the content their readers see
        self.refs = refs
        #: told what each merge changed (the kernel adapter invalidates its caches)
        self.on_merge = on_merge
        self.ttl_ns = int(ttl * 1e9)  # lookups of names a listing lacks, emptiness checks
        #: how long a listing answers readdir and lookups that find their name
        self.list_ttl_ns = int((ttl if list_ttl is None else max(ttl, list_ttl)) * 1e9)
        self.io_timeout = io_timeout
        self._stat_limiter = trio.CapacityLimiter(stat_parallel)
        self._bg_limiter = trio.CapacityLimiter(4)
        self._rounds: dict[int, _Round] = {}
        self._queued: set[int] = set()
        #: longest a caller waits for a refresh of a directory that has a cached listing
        self.wait_bound = min(2.0, io_timeout)
        #: set when a refresh failed transiently or outlasted `wait_bound`; cleared by a success
        self.share_down = False
        #: sibling directories a walk lists ahead (module docstring); 0: none
        self.list_ahead = list_ahead
        #: directories listed ahead and not opened since (the oldest forgotten past a bound)
        self._ahead: OrderedDict[int, bool] = OrderedDict()

    def is_fresh(self, listed_ns: int, *, strict: bool = True) -> bool:
        """Listed within --attr-timeout (`strict`) or within the listing TTL."""
        return self.fresh_for(listed_ns, strict=strict) > 0

    def fresh_for(self, listed_ns: int, *, strict: bool = True) -> float:
        """Seconds a listing made at `listed_ns` stays fresh (as in `is_fresh`); 0 if never."""
        if not listed_ns:
            return 0.0
        ttl = self.ttl_ns if strict else self.list_ttl_ns
        return max(0.0, (ttl - (time.time_ns() - listed_ns)) / 1e9)

    async def ensure(self, ino: int, *, refresh_stale: bool, strict: bool = False) -> None:
        """Make sure directory `ino` has a listing: load it if it never had one; when stale
        (older than the listing TTL, or --attr-timeout if `strict`), refresh now
        (`refresh_stale`) or in the background."""
        rec = self.ns.must(ino)
        if not rec.is_dir:
            raise FsError(errno.ENOTDIR)
        if self.is_fresh(rec.listed_ns, strict=strict):
            return
        if rec.listed_ns and (not refresh_stale or self.share_down):
            self.refresh_later(ino)
            return
        if rec.listed_ns and self._nursery is not None:
            await self._refresh_bounded(ino)
            return
        try:
            await self.refresh(ino)
        except RemoteError as exc:
            if rec.listed_ns:
                log.debug("listing %s failed (%s); serving the cached one", ino, exc)
                return
            log.warning("cannot list %r: %s", self.ns.path(ino), exc)
            raise FsError(exc.errno if not exc.transient else errno.EIO, str(exc)) from None

    async def open_dir(self, ino: int) -> None:
        """opendir: `ensure` a listing, then list the walk's next directories ahead."""
        rec = self.ns.must(ino)
        walking = self._ahead.pop(ino, False) or not rec.listed_ns
        await self.ensure(ino, refresh_stale=True)
        if walking and self.list_ahead and self._nursery is not None and not self.share_down:
            self._list_ahead(rec.parent, rec.name)

    def _list_ahead(self, parent: int, name: str) -> None:
        """The next `list_ahead` subdirectories after `name` in `parent`'s readdir order that
        were never listed: listed in the background (a few at a time, `refresh_later`)."""
        after = self.ns.entry_id(parent, name)
        if after is None:
            return
        dirs = 0
        for _id, _name, sib in self.ns.children(parent, after, limit=256):
            if not sib.is_dir:
                continue
            if not sib.listed_ns and sib.ino not in self._ahead:
                self._ahead[sib.ino] = True
                self.refresh_later(sib.ino)
            dirs += 1
            if dirs >= self.list_ahead:
                break
        while len(self._ahead) > 4096:
            self._ahead.popitem(last=False)

    async def _refresh_bounded(self, ino: int) -> None:
        """Refresh `ino` in the background nursery and wait for it at most `wait_bound`."""
        assert self._nursery is not None
        done = trio.Event()

        async def run() -> None:
            try:
                await self._quietly(ino)
            finally:
                done.set()

        self._nursery.start_soon(run)
        with trio.move_on_after(self.wait_bound) as scope:
            await done.wait()
        if scope.cancelled_caught:
            if not self.share_down:
                log.info("listing %r is slow; serving cached listings meanwhile", self.ns.path(ino))
            self.share_down = True

    async def _quietly(self, ino: int) -> None:
        try:
            await self.refresh(ino)
        except (RemoteError, FsError) as exc:
            log.debug("background listing of inode %d failed: %s", ino, exc)
        except Exception:  # a background task never takes the mount down
            log.exception("background listing of inode %d failed unexpectedly", ino)

    def refresh_later(self, ino: int) -> None:
        if self._nursery is None or ino in self._rounds or ino in self._queued:
            return
        self._queued.add(ino)

        async def later() -> None:
            try:
                async with self._bg_limiter:
                    self._queued.discard(ino)
                    await self._quietly(ino)
            finally:
                self._queued.discard(ino)

        self._nursery.start_soon(later)

    async def refresh(self, ino: int) -> None:
        """List directory `ino` from the share and merge; concurrent callers share one round."""
        rnd = self._rounds.get(ino)
        if rnd is not None:
            await rnd.done.wait()
            if rnd.error is not None:
                raise rnd.error
            return
        rnd = self._rounds[ino] = _Round()
        try:
            await self._refresh(ino)
        except BaseException as exc:
            rnd.error = exc
            if isinstance(exc, RemoteError) and exc.transient:
                if not self.share_down:
                    log.info("share unreachable (%s); serving cached listings", exc)
                self.share_down = True
            raise
        finally:
            del self._rounds[ino]
            rnd.done.set()

    async def _refresh(self, ino: int) -> None:
        outbox = self.ns.outbox
        for _attempt in range(5):
            rec = self.ns.get(ino)
            chain = self.ns.chain(ino)
            if rec is None or chain is None or not rec.is_dir:
                return
            if rec.remote_size is None and rec.listed_ns:
                return  # created here and not on the share yet: the local view is complete
            if outbox.has_child_ops(ino) or not outbox.path_settled(chain):
                if rec.listed_ns:
                    return  # the queue will bring the share in line with the local view
                with trio.move_on_after(self.io_timeout):
                    await outbox.wait_until(functools.partial(self._can_list, ino, chain))
                continue
            with outbox.watch() as v0:
                path = self.ns.path(ino)
                if path is None:
                    return
                entries = [
                    e
                    for e in await self.remote.list_dir(path)
                    if not is_hidden(e.name)  # files unlinked while open, new files
                ]
                if self.share_down:
                    log.info("share reachable again")
                self.share_down = False
                need = self._need_stat(ino, entries)
                metas = await self._stat_all(path, need)
                if any(outbox.touched_since(i, v0) for i in chain):
                    continue

                def busy(i: int, v0: int = v0) -> bool:
                    return self.dirty.busy(i) or outbox.touched_since(i, v0)

                def queued(i: int, v0: int = v0) -> bool:
                    """An operation carries this inode's path: it must not move."""
                    return (
                        outbox.is_subject(i)
                        or outbox.has_child_ops(i)
                        or outbox.touched_since(i, v0)
                    )

                res = self.ns.merge_listing(
                    ino, entries, metas, busy, self.refs.referenced, self.refs.is_open, queued
                )
            self._apply(res)
            self.on_merge(ino, res)
            return
        log.debug("listing of inode %d kept changing under local operations; kept local", ino)

    def _can_list(self, ino: int, chain: list[int]) -> bool:
        """No queued operation affects the directory's path or its entries."""
        outbox = self.ns.outbox
        return outbox.path_settled(chain) and not outbox.has_child_ops(ino)

    def _need_stat(self, ino: int, entries: list[RemoteEntry]) -> list[RemoteEntry]:
        """Entries whose POSIX attributes must be read: new or changed ones that carry the
        marker (attrs.py; unknown attributes count as marked). Unmarked ones have the
        defaults, so a fresh mount of a big tree costs its listings, not a call per entry."""
        need = []
        for e in entries:
            if has_marker(e.attributes) is False:
                continue
            found = self.ns.find(ino, e.name)
            rec = self.ns.get(found[0]) if found else None
            if rec is None or not rec.meta_known or rec.etag != e.etag:
                if rec is None or not self.dirty.busy(rec.ino):
                    need.append(e)
        return need

    async def _stat_all(self, path: str, entries: list[RemoteEntry]) -> dict[str, RemoteEntry]:
        out: dict[str, RemoteEntry] = {}

        async def one(e: RemoteEntry) -> None:
            async with self._stat_limiter:
                try:
                    out[e.name] = await self.remote.stat(
                        f"{path}/{e.name}" if path else e.name, is_dir=e.is_dir
                    )
                except NotFound:
                    pass

        with single_error():  # a failed stat arrives as itself, not as an ExceptionGroup
            async with trio.open_nursery() as nursery:
                for e in entries:
                    nursery.start_soon(one, e)
        return out

    def _apply(self, res: MergeResult) -> None:
        for rec in res.changed:
            log.debug(
                "%s changed on the share (size %s, etag %s): dropping cached content",
                rec.name,
                rec.remote_size,
                rec.etag,
            )
            self.cache.invalidate(rec.ino, rec.remote_size or 0)
        for ino in res.purged:
            self.cache.delete(ino)
            self.dirty.dropped(ino)
