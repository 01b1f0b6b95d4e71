"""The uploader: send each dirty file's content to the share once it is due.

Per upload (INVARIANTS.md, "Content: uploads", has the why of each step): under the shared
lock with a settled path, check for another site's change (Conflicts), then resize the share
down to the low-water mark and to the size, put the dirty ranges (several in parallel, each
cleaned only if unchanged since its snapshot), put the properties back (Put Range moved the
share's last-write time), and forget the file if nothing changed meanwhile. With upload
leases the file is leased from the conflict check to the end, and the shared lock held
throughout, so the recorded path stays the file's path.

An upload the share refuses for good (stuck.py `permanent`), or one whose share path waits
for a stuck operation, sets the file aside as stuck: its dirty data stays (never evicted),
it is not counted as pending, and it is retried when it is written again, when an operation
on it reaches the share, when the stuck operation is resolved, and at the next mount.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from cache import BlockCache
from cache.results import Token
from fsync_fuse.attrs import DIR, FILE
from fsync_fuse.conflicts import Conflicts
from fsync_fuse.groups import single_error
from fsync_fuse.leases import Leases
from fsync_fuse.namespace import ROOT, Gone, Namespace
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.newfiles import NewFiles, Restart
from fsync_fuse.writeback.pacing import Pacing, refused_backoff, transient_backoff
from fsync_fuse.writeback.rwlock import RWLock
from fsync_fuse.writeback.shareops import share_meta
from fsync_fuse.writeback.stuck import Stuck, StuckError, permanent
from remote.base import (
    LeaseConflict,
    NotFound,
    Remote,
    RemoteError,
    is_read_only,
    without_read_only,
)

log = logging.getLogger(__name__)

#: largest Put Range
MAX_PUT = 4 * 1024 * 1024


class Uploader:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        lock: RWLock,
        pacing: Pacing,
        new_files: NewFiles,
        conflicts: Conflicts,
        leases: Leases | None,
        stuck: Stuck,
        parallel_files: int = 8,
        parallel_ranges: int = 8,
        max_backoff: float = 30.0,
    ) -> None:
        self.ns, self.cache, self.remote, self.dirty = ns, cache, remote, dirty
        self.stuck = stuck
        self.outbox = ns.outbox
        self.lock = lock
        self.pacing = pacing
        self.new_files = new_files
        self.conflicts = conflicts
        #: upload leases (leases.py), optional: an upload then holds the shared lock for its
        #: whole duration, with the file leased after the conflict check
        self.leases = leases
        self.parallel_files = parallel_files
        self.parallel_ranges = parallel_ranges
        self.max_backoff = max_backoff
        self._files_limiter = trio.CapacityLimiter(parallel_files)
        self._running: set[int] = set()
        self._held: dict[int, str] = {}  # ino -> share path of a whole-upload section
        self._lease: dict[int, str] = {}  # ino -> lease id held by its upload
        self.scheduler_rounds = 0  # wake-ups of the scheduler (tests, status)
        self.last_error: str | None = None  # the latest failure (None after a success)
        #: since mount: files uploaded, bytes sent, failed uploads (status, metrics); shared
        #: with the creates that carry a new file's content (newfiles.py)
        self.stats = new_files.upload_stats

    @property
    def in_flight(self) -> int:
        """File uploads running now."""
        return len(self._running)

    # ------------------------------------------------------------------ share paths
    @asynccontextmanager
    async def share_path(self, ino: int) -> AsyncIterator[str]:
        """Hold the shared lock with the inode's current share path."""
        held = self._held.get(ino)
        if held is not None:  # inside a leased upload, which holds the lock throughout
            yield held
            return
        while True:
            await self._wait_settled(ino)
            async with self.lock.shared():
                path = self.ns.settled_path(ino)
                if path is not None:
                    yield path
                    return

    async def _wait_settled(self, ino: int) -> None:
        """Until the inode's share path is settled. StuckError when it waits for a stuck
        operation (its own create, a directory above it): that may take until the user
        resolves it, or the next mount."""
        while self.ns.settled_path(ino) is None:
            blocked = self.stuck.blocking_chain(self.ns.chain(ino) or ())
            if blocked is not None:
                raise blocked
            with self.stuck.interrupted_by_change():
                await self.outbox.wait_until(lambda: self.ns.settled_path(ino) is not None)

    # ------------------------------------------------------------------ waiting
    async def flush_now(self, ino: int) -> None:
        """fsync --fsync remote: this file's operations and content reach the share.
        StuckError (EIO) when it is stuck: waiting would not end."""

        def settled() -> bool:
            return self.outbox.path_settled(self.ns.chain(ino) or [ino])

        if self.dirty.is_dirty(ino):  # a queued create waits for nothing (until_due)
            self.dirty.due[ino] = trio.current_time()
        while not settled():
            blocked = self.stuck.blocking_chain(self.ns.chain(ino) or [ino])
            if blocked is not None:
                raise blocked
            with self.stuck.interrupted_by_change():
                await self.outbox.wait_until(settled)
        f = self.dirty.get(ino)
        if f is None:
            return
        target = f.gen
        self.dirty.due[ino] = trio.current_time()
        self.dirty.poke()
        with self.pacing.urgent():
            while True:
                f = self.dirty.get(ino)
                if f is None or f.uploaded_gen >= target:
                    return
                item = self.stuck.files.get(ino)
                if item is not None and ino not in self._running:
                    raise StuckError(item, item.root or 0)
                await self.dirty.changed()

    # ------------------------------------------------------------------ stuck files
    def retry_stuck(self, ino: int) -> None:
        """An operation on `ino` reached the share (a rename, say): a refused upload of it
        may pass now."""
        if self.stuck.unstick_file(ino) and self.dirty.is_dirty(ino):
            self.dirty.due[ino] = trio.current_time()

    def retry_blocked(self) -> None:
        """Stuck operations were resolved: files waiting for them are retried."""
        now = trio.current_time()
        for ino in self.stuck.blocked_files():
            if self.stuck.unstick_file(ino) and self.dirty.is_dirty(ino):
                self.dirty.due[ino] = now
        self.dirty.notify()

    # ------------------------------------------------------------------ tasks
    async def run(self) -> None:
        """The scheduler: start the upload of every file that is due, sleep until the next."""
        async with trio.open_nursery() as nursery:
            while True:
                self.scheduler_rounds += 1
                await self.pacing.yield_to_burst()
                self._files_limiter.total_tokens = self.pacing.parallel(self.parallel_files)
                for ino in self.dirty.due.take_due(trio.current_time(), self._running):
                    self._running.add(ino)
                    nursery.start_soon(self._upload_task, ino)
                await self.dirty.sleep_until_due()

    async def _upload_task(self, ino: int) -> None:
        try:
            async with self._files_limiter:
                await self._upload(ino)
            self.stats["files"] += 1
            f = self.dirty.get(ino)
            if f is not None:
                f.attempts = 0
            self.last_error = None
            self.stuck.unstick_file(ino, reached=True)
        except StuckError as exc:
            # its share path waits for a stuck operation: set aside until that is resolved
            self.stuck.stick_file(ino, self._path_of(ino), str(exc), root=exc.seq)
            self.dirty.due.pop(ino, None)
        except Gone:
            self.dirty.truncated_during.pop(ino, None)
            self.dirty.forget(ino)
            return
        except Restart:
            self.outbox.touch(ino)
            if self.dirty.is_dirty(ino):
                self.dirty.due[ino] = trio.current_time()
        except RemoteError as exc:
            self.stats["failures"] += 1
            if permanent(exc) and self.dirty.is_dirty(ino):
                # never accepted as it is: set aside (its data stays), retried when it
                # changes, is renamed, or at the next mount
                self.stuck.stick_file(ino, self._path_of(ino), str(exc))
                self.dirty.due.pop(ino, None)
                return
            f = self.dirty.get(ino)
            n = f.attempts if f is not None else 0
            if f is not None:
                f.attempts = n + 1
            quick = exc.transient or isinstance(exc, LeaseConflict)  # another site's upload
            delay = (
                transient_backoff(n, self.max_backoff) if quick else refused_backoff(n, floor=60.0)
            )
            self.last_error = f"{'share unreachable' if exc.transient else 'upload refused'}: {exc}"
            log.warning("upload of inode %d failed (%s); retrying in %.1fs", ino, exc, delay)
            if f is not None:
                self.dirty.due[ino] = min(
                    self.dirty.due.get(ino, math.inf), trio.current_time() + delay
                )
        except Exception as exc:
            self.stats["failures"] += 1
            log.exception("upload of inode %d failed unexpectedly; retrying in 60s", ino)
            self.last_error = f"upload failed: {exc!r}"
            if self.dirty.is_dirty(ino):
                self.dirty.due[ino] = trio.current_time() + 60
        finally:
            # After a failure the persisted mark (min of old and new truncates) stands.
            self.dirty.truncated_during.pop(ino, None)
            self._running.discard(ino)
            self.dirty.due.unpark(ino)  # due again while it ran: back on the heap
            self.dirty.notify()
            self.dirty.poke()

    def _path_of(self, ino: int) -> str:
        return self.ns.path(ino) or f"inode {ino}"

    async def _upload(self, ino: int) -> None:
        f = self.dirty.get(ino)
        meta0 = f is not None and f.meta
        if f is not None:
            f.meta = False  # a change from now on is sent by the next upload
        try:
            rec = self.ns.get(ino)
            if rec is not None and rec.kind == DIR:
                await self._upload_dir(ino, meta0)
            elif self.leases is None:
                await self._upload_steps(ino, meta0)
            else:
                async with self.share_path(ino) as path:
                    self._held[ino] = path
                    try:
                        await self._upload_steps(ino, meta0)
                    finally:
                        self._held.pop(ino, None)
                        lease_id = self._lease.pop(ino, None)
                        if lease_id is not None:
                            await self.leases.release(ino, path, lease_id)
        except BaseException:
            f = self.dirty.get(ino)
            if meta0 and f is not None:
                f.meta = True  # not sent: the next upload sends it
            raise

    async def _upload_dir(self, ino: int, meta0: bool) -> None:
        """A directory is dirty when entries were added, removed or renamed in it here: its
        mtime (and metadata, when they changed) goes to the share once it is quiet, one call
        however many entries changed, so a fresh mount shows the time POSIX says."""
        f = self.dirty.get(ino)
        if f is None:
            return
        gen0 = f.gen
        async with self.share_path(ino) as path:
            if self.dirty.get(ino) is not f:
                return  # its mkdir, applied meanwhile, sent this mtime (opworker.py)
            rec = self.ns.get(ino)
            if rec is None or rec.parent == 0 and ino != ROOT:
                raise Gone(ino)
            meta, attrs = (
                await share_meta(self.ns, self.remote, ino, path) if meta0 else (None, None)
            )
            etag = await self.remote.set_properties(
                path,
                last_write_ns=rec.mtime_ns,
                metadata=meta,
                attributes=attrs,
                is_dir=True,
                creation_ns=rec.share_creation() if meta is not None else None,
            )
        if self.dirty.gen(ino) == gen0:
            self.dirty.forget(ino)  # written by the update below, in the same transaction
        else:
            self.dirty.due.setdefault(ino, trio.current_time() + self.dirty.delay)
        self.ns.update(ino, etag=etag, **({"attrs": attrs} if attrs is not None else {}))
        self.outbox.touch(ino)
        cur = self.dirty.get(ino)
        if cur is not None:
            cur.uploaded_gen = gen0
        self.dirty.notify()

    async def _upload_steps(self, ino: int, meta0: bool) -> None:
        f = self.dirty.get(ino)
        if f is None:
            return
        rec = self.ns.get(ino)
        if rec is None or rec.parent == 0:
            raise Gone(ino)
        if rec.kind != FILE:
            self.dirty.forget(ino)
            return
        gen0, tgen0, low0 = f.gen, f.tgen, f.low
        self.dirty.truncated_during[ino] = None
        f.uploaded_gen = -1
        t0 = time.monotonic()
        # A listing taken while this upload runs shows a share version we are replacing.
        self.outbox.touch(ino)

        # 1. Size: first down to the low-water mark (re-extended regions must read as zeros),
        #    then to the current size. Size and ranges are taken at the same instant.
        async with self.share_path(ino) as path:
            cur = self.dirty.get(ino)
            if cur is None:
                return  # its create, applied while we waited, took the content along
            f = cur  # (a new entry if that create's content was written again since)
            rec = self.ns.get(ino)
            if rec is None:
                raise Gone(ino)
            if ino in self._held and rec.remote_size is not None and self.leases is not None:
                # leased before the conflict check: nobody writes between check and upload
                lease_id = await self.leases.acquire(ino, path)
                if lease_id is not None:
                    self._lease[ino] = lease_id

            async def unlease(path: str = path) -> None:
                lease_id = self._lease.pop(ino, None)
                if lease_id is not None and self.leases is not None:
                    await self.leases.release(ino, path, lease_id)

            if await self.conflicts.check(
                ino, rec, path, before_change=unlease, inflight=f.inflight
            ):
                f.inflight = False
                raise Restart(ino)
            if not f.inflight:
                f.inflight = True  # durable before the share changes
                self.dirty.persist(ino, now=True)
            lease = self._lease.get(ino)
            size = rec.size
            ranges = [(o, min(n, size - o)) for o, n in self.cache.dirty_ranges(ino) if o < size]
            rsize = rsize0 = rec.remote_size
            # Not on the share (a conflict made it a new file, or the share lost it): it is
            # created under a temporary name, filled there, then takes its name (step 3), so
            # no other site ever sees or checks it half written.
            fresh = rsize is None
            made = None
            if rsize is None:
                made = await self.new_files.create_aside(ino, rec, path, size)
                rsize, low0 = size, None  # a new file: zeros, nothing stale to cut
            # The share refuses content changes to a read-only file: the attribute is cleared
            # for them and put back with the properties (step 3), as the local change was
            # not refused (dosattrib.py). A crash in between: the next upload puts it back.
            restore = None
            changes = ranges or size != rsize or (low0 is not None and low0 < rsize)
            if not fresh and changes and is_read_only(rec.attrs):
                restore = rec.attrs
                await self.remote.set_properties(
                    path, attributes=without_read_only(rec.attrs), lease_id=lease, is_dir=False
                )
            if low0 is not None and low0 < rsize:
                await self.remote.resize(path, low0, lease_id=lease)
                rsize = low0
            if size != rsize:
                try:
                    await self.remote.resize(path, size, lease_id=lease)
                except NotFound:
                    # deleted since the conflict check: the next check keeps our version
                    raise Restart(ino) from None
            if size != rsize0 and not fresh:
                self.ns.update(ino, remote_size=size)
        # The share now reads as zeros wherever this file has no data here ([low0, size)
        # minus dirty blocks): the low-water mark is consumed (only truncates since this
        # upload began still count), and everything below `size` may be fetched again —
        # which must hold before any block is cleaned, or a clean block above the cache's
        # remote_valid would read as zeros once evicted. A fresh file holds it only once it
        # has its name: until then its blocks stay dirty (`placed` below).
        self.dirty.set_low(ino, self.dirty.truncated_during.get(ino))
        if self.dirty.tgen(ino) == tgen0 and not fresh:
            self.cache.set_remote_valid(ino, size)

        # 2. Dirty ranges, several in parallel; each range's blocks are cleaned only if no
        #    write touched them since their snapshot.
        sent = 0
        limiter = trio.CapacityLimiter(self.parallel_ranges)
        placed: list[Token] = []  # a fresh file's ranges, cleaned once it has its name

        async def put(off: int, length: int) -> None:
            nonlocal sent
            async with limiter:
                if self.dirty.tgen(ino) != tgen0:
                    # Truncated since this upload began: data written after the truncate
                    # must not be cleaned here, or the next upload's resize down to the new
                    # low-water mark would destroy it on the share while it is clean (and
                    # evictable) here. The next upload sends the rest.
                    return
                data, token = self.cache.snapshot_range(ino, off, length)
                async with self.share_path(ino) as p:
                    target = self.ns.new_path(p, ino) if fresh else p
                    if data.count(0) == len(data):  # zeros (punched, zeroed): no payload
                        await self.remote.clear_range(target, off, len(data), lease_id=lease)
                    else:
                        await self.remote.write(target, off, bytes(data), lease_id=lease)
                if fresh:
                    placed.append(token)
                else:
                    self.cache.mark_clean(ino, token)
                sent += len(data)
                self.stats["bytes"] += len(data)

        with single_error():  # a failed Put Range arrives as itself (backoff, last_error)
            async with trio.open_nursery() as n:
                for off, length in ranges:
                    for o in range(off, off + length, MAX_PUT):
                        n.start_soon(put, o, min(MAX_PUT, off + length - o))

        # 3. Properties: Put Range moved the share's last-write time; put ours back.
        async with self.share_path(ino) as path:
            rec = self.ns.get(ino)
            if rec is None:
                raise Gone(ino)
            lw = rec.mtime_ns
            if fresh:  # created with its metadata; now it takes its name
                assert made is not None
                tmp = self.ns.new_path(path, ino)
                await self.remote.set_properties(tmp, last_write_ns=lw, is_dir=False)
                etag = (await self.new_files.place(ino, rec, made, tmp, path, size)).etag
                if self.dirty.tgen(ino) == tgen0:
                    self.cache.set_remote_valid(ino, size)  # before cleaning (see above)
                for token in placed:
                    self.cache.mark_clean(ino, token)
            else:
                meta, attrs = (
                    await share_meta(self.ns, self.remote, ino, path) if meta0 else (None, None)
                )
                if restore is not None and attrs is None:
                    attrs = rec.share_attributes(self.ns.owner) or restore
                etag = await self.remote.set_properties(
                    path,
                    last_write_ns=lw,
                    metadata=meta,
                    attributes=attrs,
                    lease_id=lease,
                    is_dir=False,
                    creation_ns=rec.share_creation() if meta is not None else None,
                )
                if attrs is not None:
                    self.ns.update(ino, attrs=attrs)

        # 4. Bookkeeping: the share now holds [0, size) as snapshotted.
        truncated_since = self.dirty.tgen(ino) != tgen0
        self.dirty.truncated_during.pop(ino, None)
        if self.dirty.gen(ino) == gen0 and not self.dirty.dirty_blocks(ino):
            self.dirty.forget(ino)  # written by the update below, in the same transaction
        else:
            self.dirty.due.setdefault(ino, trio.current_time() + self.dirty.delay)
        cur = self.dirty.get(ino)
        if cur is not None and cur.inflight:
            cur.inflight = False
            self.dirty.persist(ino)  # written by the update below
        self.ns.update(ino, etag=etag, remote_size=size, base_lw=lw)
        self.outbox.touch(ino)
        if cur is not None:
            cur.uploaded_gen = gen0
        self.dirty.notify()
        log.debug(
            "uploaded inode %d: size %d (share had %s, low %s), %d bytes, ranges %s, %.2fs%s",
            ino,
            size,
            rsize0,
            low0,
            sent,
            ranges[:8],
            time.monotonic() - t0,
            ", truncated meanwhile" if truncated_since else "",
        )
