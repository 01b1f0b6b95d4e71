"""The write-back queue as the rest of the mount sees it: run it, drain it, ask what is left.

Two streams share one lock (the full story is in INVARIANTS.md):

- the **operation worker** (opworker.py) applies the persisted namespace operations of the
  outbox on the share, in order, independent ones side by side;
- the **uploader** (uploader.py) sends the content of each dirty file (dirty.py) once it has
  been quiet for the write-back delay, at once on `flush_now` (fsync with `--fsync remote`),
  while draining, or when dirty data fill half the cache.

Renames and removals hold the exclusive side of the lock (rwlock.py), every upload call the
shared side with a path computed under it, so a path never changes under a call using it.

What the share refuses for good is set aside as *stuck* (stuck.py): not counted as pending
(so a drain, and `fsync-fuse unmount`, end), listed in status, retried at the next mount or
when the user renames or removes it here.
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
from fsync_fuse.writeback.stuck import Stuck
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
        parallel_ops: int = 16,
        max_backoff: float = 30.0,
    ) -> None:
        self.ns = ns
        self.outbox = ns.outbox
        self.dirty = dirty
        self.pacing = pacing
        self.conflicts = conflicts
        self.leases = leases
        #: paths stay put under calls: uploads take it shared, renames exclusive (rwlock.py)
        self.lock = lock = RWLock()
        self.stuck = Stuck(ns=ns)
        self.stuck.forget_stale(dirty.files)
        new_files = NewFiles(ns=ns, cache=cache, remote=remote, dirty=dirty, conflicts=conflicts)
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
            stuck=self.stuck,
            parallel_files=parallel_files,
            parallel_ranges=parallel_ranges,
            max_backoff=max_backoff,
        )
        self.worker = OpWorker(
            ns=ns,
            remote=remote,
            lock=lock,
            pacing=pacing,
            new_files=new_files,
            stuck=self.stuck,
            on_applied=self.uploader.retry_stuck,
            on_resolved=self.uploader.retry_blocked,
            parallel=parallel_ops,
            max_backoff=max_backoff,
        )
        dirty.on_forget = self.stuck.unstick_file

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
        """What is not on the share yet, stuck items left out (they are in `stuck_status`)."""
        aside = [ino for ino in self.stuck.files if self.dirty.is_dirty(ino)]
        nbytes = self.dirty.nbytes() - sum(self.dirty.cache.dirty_bytes(i) for i in aside)
        files, dirs = self._dirty_pending()
        return Pending(
            files=files,
            bytes=max(0, nbytes),
            ops=self.worker.pending(),
            error=self.worker.error or self.uploader.last_error,
            dirs=dirs,
        )

    def stuck_status(self) -> dict[str, object]:
        """`user.fsync.status`'s `stuck`: how many items, and the first ones."""
        count, items = self.stuck.items()
        return {"count": count, "items": items}

    def _files_pending(self) -> int:
        """Dirty files and directories not set aside as stuck."""
        if not self.stuck.files:
            return len(self.dirty)
        return len(self.dirty) - sum(1 for ino in self.stuck.files if self.dirty.is_dirty(ino))

    def _dirty_pending(self) -> tuple[int, int]:
        """(files, directories) of `_files_pending`."""
        dirs = sum(1 for ino in self.dirty.dirs if ino not in self.stuck.files)
        return self._files_pending() - dirs, dirs

    async def wait_idle(self) -> None:
        """Until every queued operation and dirty file is on the share or stuck."""
        while self.worker.pending() or self._files_pending():
            with self.stuck.interrupted_by_change():
                if self._files_pending():
                    await self.dirty.changed()
                else:
                    await self.outbox.wait_until(lambda: not self.worker.pending())

    async def drain(self) -> None:
        """Upload everything now, ignoring the quiet delay; returns when all is on the share."""
        with self.pacing.drain():
            self.dirty.due_now()
            await self.wait_idle()
        count, items = self.stuck.items(limit=3)
        if count:
            log.warning(
                "drained, except %d stuck items the share refuses (kept here, retried at the "
                "next mount; user.fsync.status lists them): %s",
                count,
                "; ".join(f"{i['op']} {i['path']!r}" for i in items),
            )

    async def flush_now(self, ino: int) -> None:
        """fsync --fsync remote: this file's operations and content reach the share."""
        await self.uploader.flush_now(ino)

    def local_change(self) -> None:
        """The kernel adapter reports every mutating request (bursts hold work back)."""
        self.pacing.local_change()
