"""Reading file content: the cache's fetch function and a per-handle read-ahead window.

A fetch reads the file's share path, which is only known while no queued operation affects the
file (see Outbox.path_settled); it waits for that, bounded by `io_timeout`, and retries once
more when the worker renamed the file between computing the path and the GET. After the
remote's own retries, an unreachable share surfaces as an error the caller turns into EIO.

Sequential readers get a read-ahead window that doubles with every sequential read up to
`max_window`, fetched as block-aligned chunks by several background tasks in parallel. The
tasks of a handle live in one cancel scope: a seek cancels them.

A file read at random that keeps missing the cache (RECALL_AFTER reads that had to fetch,
none of them sequential) is *recalled*: the rest of it is fetched in the background, 4 MiB
at a time, several in parallel, as Azure File Sync recalls a tiered file an application
uses. Only files up to `recall_max` (a quarter of the cache) are; the recall stops when the
last handle of the file is released. Each miss of a random reader otherwise waits for its
own round trip, and a database or an archive is read in thousands of them.

Reading the files of a directory one after the other (`grep -r`, `tar -c`, a build) is the
same pattern one level up: once DIR_AHEAD_AFTER files of a directory were read from their
start in a row, the next small files of that directory (in listing order, up to DIR_AHEAD
of them, each at most one block) are fetched in the background, and the window moves on as
the reader reaches them. Small cold files otherwise cost a round trip each, one at a time.
A walk over a tree carries its streak into the next directory it reads, so a directory's
files are fetched ahead from its first read on (a tree of small directories had only the
first two of each fetched one at a time).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio

from cache import BlockCache
from cache.results import Fetch, FileSlice
from fsync_fuse.attrs import FILE, Inode
from fsync_fuse.namespace import Gone, Namespace
from fsync_fuse.tasks import TaskOwner
from fsync_fuse.writeback.dirty import DirtySet
from remote.base import NotFound, Remote, Transient

log = logging.getLogger(__name__)


RECALL_AFTER = 4
RECALL_CHUNK = 4 << 20
DIR_AHEAD_AFTER = 2
DIR_AHEAD = 32
DIR_AHEAD_GAP = 2.0  # seconds between two reads of a directory's files that still count
#: after a fetch of a file waited --io-timeout for the share in vain, further fetches of it
#: fail at once for this long (the kernel retries a failed read immediately)
RETRY_WINDOW = 1.0


class TimedOut(Transient):
    """The share did not answer a fetch within --io-timeout."""


@dataclass
class _DirReader:
    """Files of one directory being read in a row (see the module doc)."""

    last: float = 0.0
    streak: int = 0
    upto: int = 0  # entry id the background fetches have reached
    fetched: set[int] = field(default_factory=set)  # inodes fetched ahead, not read yet


@dataclass
class ReadState:
    """Per open handle: where a sequential reader would read next, and what is prefetched."""

    next_off: int = -1
    streak: int = 0
    window: int = 0
    ahead_end: int = 0
    scopes: set[trio.CancelScope] = field(default_factory=set)
    random_misses: int = 0

    def reset(self) -> None:
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()
        self.streak = 0
        self.window = 0
        self.ahead_end = 0


class Reader(TaskOwner):
    """Its nursery (tasks.py) owns read-ahead, recalls and directory read-ahead."""

    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        max_window: int,
        io_timeout: float = 60.0,
        parallel: int = 16,
        recall_max: int = 0,
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.remote = remote
        self.dirty = dirty
        self.max_window = max_window
        self.io_timeout = io_timeout
        self._limiter = trio.CapacityLimiter(parallel)
        self.recall_max = recall_max
        self._recalls: dict[int, trio.CancelScope] = {}  # ino -> its running recall
        self._dirs: dict[int, _DirReader] = {}  # directory ino -> files read in a row
        self._walk = (0.0, 0)  # (when, streak) of the last file read from its start
        self.stats = {"recalls": 0, "recalled_bytes": 0, "dir_ahead_files": 0, "failed_at_once": 0}
        #: ino -> trio time a fetch of it waited --io-timeout in vain
        self._failed: dict[int, float] = {}

    def fetcher(self, ino: int) -> Fetch:
        """The cache's fetch function for this inode: ranged GETs of its share path.

        A fetch waits at most `io_timeout`. When one of a file waited that long in vain, the
        kernel's immediate retry of the same read (it retries a failed
        read-ahead page with a read of its own) fails at once instead of waiting again, so an
        application's read fails within `--io-timeout`, not twice that."""

        async def fetch(offset: int, length: int) -> bytes | FileSlice:
            failed = self._failed.get(ino)
            if failed is not None and trio.current_time() - failed < RETRY_WINDOW:
                self.stats["failed_at_once"] += 1
                raise Transient(f"reading {self.ns.path(ino)!r}: the share did not answer")
            try:
                data = await fetch_once(offset, length)
            except TimedOut:
                if len(self._failed) > 4096:
                    self._failed.clear()
                self._failed[ino] = trio.current_time()
                raise
            self._failed.pop(ino, None)
            return data

        async def fetch_once(offset: int, length: int) -> bytes | FileSlice:
            outbox = self.ns.outbox
            with trio.move_on_after(self.io_timeout):
                for _ in range(3):
                    version = outbox.version
                    try:
                        await outbox.wait_until(lambda: self.ns.settled_path(ino) is not None)
                        settled = self.ns.settled_path(ino)
                        path = settled if settled is not None else await self._hidden_path(ino)
                    except Gone:
                        path = await self._hidden_path(ino)
                    try:
                        return await self.remote.read(path, offset, length)
                    except NotFound:
                        if outbox.version == version:
                            raise
            raise TimedOut(f"reading {self.ns.path(ino)!r}: no answer from the share in time")

        return fetch

    async def _hidden_path(self, ino: int) -> str:
        """An open file that was unlinked: its content was renamed aside on the share
        (`Namespace._remove_op`); read it there once that rename was applied."""
        outbox = self.ns.outbox
        await outbox.wait_until(
            lambda: self.ns.hidden_path(ino) is None or not outbox.is_subject(ino)
        )
        path = self.ns.hidden_path(ino)
        if path is None:
            raise NotFound(f"inode {ino} was unlinked before its content was read")
        return path

    async def read(self, ino: int, off: int, size: int, state: ReadState | None) -> bytes:
        rec = self.ns.get(ino)
        if rec is None:
            return b""
        fsize = rec.size
        if off >= fsize or size <= 0:
            return b""
        if state is None:
            return await self.cache.read(ino, off, size, size=fsize, fetch=self.fetcher(ino))
        # before our own read, so the read-ahead runs beside it
        self._ahead(ino, state, off, min(size, fsize - off), fsize)
        fetch = self.fetcher(ino)
        missed = False

        async def counting(offset: int, length: int) -> bytes | FileSlice:
            nonlocal missed
            missed = True
            return await fetch(offset, length)

        data = await self.cache.read(ino, off, size, size=fsize, fetch=counting)
        if off == 0:
            self._dir_read(rec, missed)
        if missed and state.streak < 2:
            state.random_misses += 1
            if state.random_misses >= RECALL_AFTER:
                self._recall(ino, fsize)
        return data

    def _recall(self, ino: int, fsize: int) -> None:
        """Fetch the rest of a file read at random in the background (see the module doc)."""
        if ino in self._recalls or self._nursery is None or not 0 < fsize <= self.recall_max:
            return
        scope = self._recalls[ino] = trio.CancelScope()
        self.stats["recalls"] += 1
        self._nursery.start_soon(self._recall_task, ino, fsize, scope)

    async def _recall_task(self, ino: int, fsize: int, scope: trio.CancelScope) -> None:
        try:
            with scope:
                log.debug("recalling inode %d (%d bytes): read at random", ino, fsize)
                fetch = self.fetcher(ino)

                async def chunk(off: int) -> None:
                    async with self._limiter:
                        await self.cache.prefetch(ino, off, RECALL_CHUNK, size=fsize, fetch=fetch)
                    self.stats["recalled_bytes"] += min(RECALL_CHUNK, fsize - off)

                async with trio.open_nursery() as n:
                    for off in range(0, fsize, RECALL_CHUNK):
                        n.start_soon(chunk, off)
        except Exception as exc:  # noqa: BLE001 - a recall is best effort
            log.debug("recall of inode %d stopped: %s", ino, exc)
        finally:
            if self._recalls.get(ino) is scope:
                del self._recalls[ino]

    def _dir_read(self, rec: Inode, missed: bool) -> None:
        """A file was read from its start: count the directory's streak, move its window."""
        d = self._dirs.get(rec.parent)
        now = time.monotonic()
        if d is None:
            if not missed:
                return
            if len(self._dirs) > 256:
                self._dirs.clear()
            d = self._dirs[rec.parent] = _DirReader()
        ahead = rec.ino in d.fetched
        d.fetched.discard(rec.ino)
        if now - d.last > DIR_AHEAD_GAP:
            d.streak = 0
        if not (missed or ahead):
            return
        walk_last, walk_streak = self._walk
        if not d.streak and now - walk_last <= DIR_AHEAD_GAP and walk_streak >= DIR_AHEAD_AFTER:
            # a tree walk (grep -r, find | xargs) moved on to this directory: its streak
            # starts where the walk's is, so its next files are fetched from the first read
            d.streak = DIR_AHEAD_AFTER - 1
        d.last = now
        d.streak += 1
        self._walk = (now, d.streak)
        if d.streak < DIR_AHEAD_AFTER or self._nursery is None:
            return
        if len(d.fetched) > DIR_AHEAD // 2:
            return  # enough fetched and not read yet
        after = max(d.upto, self.ns.entry_id(rec.parent, rec.name) or 0)
        todo = []
        for dent, _name, child in self.ns.children(rec.parent, after, DIR_AHEAD):
            d.upto = dent
            if (
                child.kind == FILE
                and child.remote_size is not None
                and 0 < child.size <= self.cache.block_size
                and not self.dirty.busy(child.ino)
                and self.cache.cached_bytes(child.ino) == 0
            ):
                todo.append(child)
        for child in todo:
            d.fetched.add(child.ino)
            self.stats["dir_ahead_files"] += 1
            self._nursery.start_soon(self._fetch_whole, child)

    async def _fetch_whole(self, rec: Inode) -> None:
        async with self._limiter:
            try:
                self.dirty.sync_remote_valid(rec)
                await self.cache.prefetch(
                    rec.ino, 0, rec.size, size=rec.size, fetch=self.fetcher(rec.ino)
                )
            except Exception as exc:  # noqa: BLE001 - read-ahead is best effort
                log.debug("fetching inode %d ahead failed: %s", rec.ino, exc)

    def closed(self, ino: int) -> None:
        """The last handle of `ino` was released: a recall of it stops."""
        scope = self._recalls.pop(ino, None)
        if scope is not None:
            scope.cancel()

    def _ahead(self, ino: int, st: ReadState, off: int, n: int, fsize: int) -> None:
        # The kernel's own read-ahead sends several requests at once and they may arrive out
        # of order: "sequential" means near where the last one ended.
        bs = self.cache.block_size
        slack = max(2 * bs, st.window)
        if st.next_off < 0 or not (st.next_off - slack <= off <= st.next_off + slack):
            st.reset()
            st.next_off = off + n
        else:
            st.next_off = max(st.next_off, off + n)
        st.streak += 1
        if st.streak < 2 or self._nursery is None or self.max_window <= 0:
            return
        st.window = min(self.max_window, max(2 * bs, st.window * 2))
        if st.ahead_end - (off + n) > st.window // 2:
            return  # enough in flight: top up in big steps, so each GET is a big one
        end = min(fsize, off + n + st.window)
        start = max(st.ahead_end, off + n)
        start -= start % bs
        if end <= start:
            return
        chunk = max(bs, min(4 << 20, st.window // 4))
        chunk -= chunk % bs
        for o in range(start, end, chunk):
            scope = trio.CancelScope()
            st.scopes.add(scope)
            self._nursery.start_soon(self._prefetch, ino, o, min(chunk, end - o), fsize, st, scope)
        st.ahead_end = end

    async def _prefetch(
        self, ino: int, off: int, length: int, fsize: int, st: ReadState, scope: trio.CancelScope
    ) -> None:
        with scope:
            async with self._limiter:
                try:
                    await self.cache.prefetch(ino, off, length, size=fsize, fetch=self.fetcher(ino))
                except Exception as exc:  # noqa: BLE001 - read-ahead is best effort
                    log.debug("read-ahead of inode %d at %d failed: %s", ino, off, exc)
        st.scopes.discard(scope)
