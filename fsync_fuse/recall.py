"""Recall: bringing files local on purpose (the recall command, pins, initial download,
proactive recall), as opposed to the reader's fetches for an application's read.

A recall fetches what a file lacks in ranged GETs of RECALL_CHUNK, PER_FILE at a time, into
the cache. Calls from the control surface run in parallel (the command's threads); the
background queue (pinned files, the initial download, new versions of used files) is worked
by BACKGROUND workers, lowest priority number first, so a file someone opens jumps ahead
(`bump`). A recall that would not stay in the cache (it fills with dirty and pinned data,
or the free-space floor leaves no room) fails with CacheFull instead of evicting what it just
brought in.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time

import trio

from cache import BlockCache, CacheFull
from fsync_fuse.attrs import FILE
from fsync_fuse.groups import single_error
from fsync_fuse.namespace import Namespace
from fsync_fuse.reader import Reader
from fsync_fuse.tasks import TaskOwner
from fsync_fuse.writeback.dirty import DirtySet
from remote.base import RemoteError

log = logging.getLogger(__name__)

RECALL_CHUNK = 4 << 20
PER_FILE = 4
BACKGROUND = 4

#: background priorities: lower first
OPENED, PINNED, CHANGED, INITIAL = 0, 1, 2, 3


class Recaller(TaskOwner):
    """Its nursery (tasks.py) runs the background workers."""

    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        dirty: DirtySet,
        reader: Reader,
    ) -> None:
        self.ns, self.cache, self.dirty, self.reader = ns, cache, dirty, reader
        self._heap: list[tuple[int, int, int]] = []  # (priority, order, ino)
        self._queued: dict[int, int] = {}  # ino -> its priority in the heap
        self._order = itertools.count()
        self._wake = trio.Event()
        self.running = 0  # recalls in progress (any caller)
        self.stats = {
            "recalls": 0,
            "recalled_files": 0,
            "recalled_bytes": 0,
            "failures": 0,
            "queued": 0,
            "max_parallel": 0,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(BACKGROUND):
                nursery.start_soon(self._worker)
            task_status.started()

    # ------------------------------------------------------------------ the background queue
    def queue(self, ino: int, priority: int) -> None:
        """Recall `ino` in the background (again at a better priority if queued already)."""
        have = self._queued.get(ino)
        if have is not None and have <= priority:
            return
        self._queued[ino] = priority
        heapq.heappush(self._heap, (priority, next(self._order), ino))
        self.stats["queued"] = len(self._queued)
        self._wake.set()

    def bump(self, ino: int) -> None:
        """Someone opened `ino`: if it waits in the queue, it goes first."""
        if ino in self._queued:
            self.queue(ino, OPENED)

    def pending(self) -> int:
        return len(self._queued)

    async def _worker(self) -> None:
        while True:
            while not self._heap:
                self._wake = trio.Event()
                await self._wake.wait()
            prio, _order, ino = heapq.heappop(self._heap)
            if self._queued.get(ino) != prio:
                continue  # re-queued at a better priority: that entry is the one
            del self._queued[ino]
            self.stats["queued"] = len(self._queued)
            try:
                await self.recall(ino)
            except CacheFull as exc:
                log.info("background recall of %r stopped: %s", self.ns.path(ino), exc)
            except (RemoteError, OSError) as exc:
                log.debug("background recall of inode %d failed: %s", ino, exc)
            except Exception:  # a background task never takes the mount down
                log.exception("background recall of inode %d failed unexpectedly", ino)

    # ------------------------------------------------------------------ one file
    async def recall(self, ino: int) -> int:
        """Bring the whole file local; returns the bytes fetched (0: it was local)."""
        rec = self.ns.get(ino)
        if rec is None or rec.kind != FILE or rec.remote_size is None:
            return 0
        self.dirty.sync_remote_valid(rec)
        size = rec.size
        if self.cache.state(ino, size).full:
            return 0
        self.running += 1
        self.stats["max_parallel"] = max(self.stats["max_parallel"], self.running)
        self.stats["recalls"] += 1
        fetch = self.reader.fetcher(ino)
        before = self.cache.cached_bytes(ino)
        t0 = time.monotonic()
        limiter = trio.CapacityLimiter(PER_FILE)
        try:

            async def chunk(off: int) -> None:
                async with limiter:
                    await self.cache.prefetch(ino, off, RECALL_CHUNK, size=size, fetch=fetch)

            if size <= RECALL_CHUNK:  # most files: one GET, no nursery to pay for
                await chunk(0)
            else:
                with single_error():  # a failed GET arrives as itself
                    async with trio.open_nursery() as nursery:
                        for off in range(0, size, RECALL_CHUNK):
                            nursery.start_soon(chunk, off)
        except BaseException:
            self.stats["failures"] += 1
            raise
        finally:
            self.running -= 1
        if not self.cache.state(ino, size).full:
            self.stats["failures"] += 1
            raise CacheFull(
                f"{self.ns.path(ino)!r} does not stay in the cache: it is full of dirty and "
                "pinned data, or the free-space floor leaves no room"
            )
        fetched = max(0, self.cache.cached_bytes(ino) - before)
        self.stats["recalled_files"] += 1
        self.stats["recalled_bytes"] += fetched
        log.debug(
            "recalled %r: %d bytes in %.2fs", self.ns.path(ino), fetched, time.monotonic() - t0
        )
        return fetched

    def tier(self, ino: int) -> int:
        """Evict the clean content of a file now (pinned or dirty content stays)."""
        return self.cache.tier(ino)
