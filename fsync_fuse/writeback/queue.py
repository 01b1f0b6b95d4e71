"""The write-back queue as the rest of the mount sees it: run it, drain it, ask what is left.

Two streams share one lock (the full story is in INVARIANTS.md):

- the **operation worker** (opworker.py) applies the persisted namespace operations of the
  outbox on the share, in order, independent ones side by side;
- the **uploader** (uploader.py) sends the content of each dirty file (dirty.py) once it has
  been quiet for the write-back delay, at once on `flush_now` (fsync with `--fsync remote`),
  while draining, or when dirty data fill half the cache.

Renames and removals hold the exclusive side of the lock (rwlock.py), every upload call the
shared side with a path computed under it, so a path never changes under a call using it.
"""

from __future__ import annotations

import logging

import trio

from cache import BlockCache
from fsync_fuse.conflicts import Conflicts
from fsync_fuse.control import Pending
from fsync_fuse.leases import Leases
from fsync_fuse.namespace import Namespace
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.newfiles import NewFiles
from fsync_fuse.writeback.opworker import OpWorker
from fsync_fuse.writeback.pacing import Pacing
from fsync_fuse.writeback.rwlock import RWLock
from fsync_fuse.writeback.uploader import Uploader
from remote.base import Remote

log = logging.getLogger(__name__)


class WriteBack:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        pacing: Pacing,
        conflicts: Conflicts,
        leases: Leases | None,
        parallel_files: int = 8,
        parallel_ranges: int = 8,
        parallel_ops: int = 8,
        max_backoff: float = 30.0,
    ) -> None:
        self.ns = ns
        self.outbox = ns.outbox
        self.dirty = dirty
        self.pacing = pacing
        self.conflicts = conflicts
        self.leases = leases
        lock = RWLock()
        new_files = NewFiles(ns=ns, cache=cache, remote=remote, dirty=dirty, conflicts=conflicts)
        self.worker = OpWorker(
            ns=ns,
            remote=remote,
            lock=lock,
            pacing=pacing,
            new_files=new_files,
            parallel=parallel_ops,
            max_backoff=max_backoff,
        )
        self.uploader = Uploader(
            ns=ns,
            cache=cache,
            remote=remote,
            dirty=dirty,
            lock=lock,
            pacing=pacing,
            new_files=new_files,
            conflicts=conflicts,
            leases=leases,
            parallel_files=parallel_files,
            parallel_ranges=parallel_ranges,
            max_backoff=max_backoff,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Break the upload leases a previous run left, then run both streams."""
        if self.leases is not None:
            try:
                with trio.move_on_after(30):
                    await self.leases.break_leftovers()
            except Exception:  # noqa: BLE001 - retried at the next start; never fatal
                log.exception("breaking leftover upload leases failed")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.worker.run)
            nursery.start_soon(self.uploader.run)
            task_status.started()

    def status(self) -> Pending:
        return Pending(
            files=len(self.dirty),
            bytes=self.dirty.nbytes(),
            ops=len(self.outbox),
            error=self.worker.error or self.uploader.last_error,
        )

    async def wait_idle(self) -> None:
        """Until the outbox is empty and nothing is dirty."""
        while len(self.outbox) or len(self.dirty):
            if len(self.dirty):
                await self.dirty.changed()
            else:
                await self.outbox.wait_until(lambda: not len(self.outbox))

    async def drain(self) -> None:
        """Upload everything now, ignoring the quiet delay; returns when all is on the share."""
        with self.pacing.drain():
            self.dirty.due_now()
            await self.wait_idle()

    async def flush_now(self, ino: int) -> None:
        """fsync --fsync remote: this file's operations and content reach the share."""
        await self.uploader.flush_now(ino)

    def local_change(self) -> None:
        """The kernel adapter reports every mutating request (bursts hold work back)."""
        self.pacing.local_change()
