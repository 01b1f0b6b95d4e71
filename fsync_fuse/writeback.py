"""The write-back queue: apply namespace operations in order, upload dirty files when quiet.

Two streams, one lock (the full story is in INVARIANTS.md):

- The **outbox worker** (one task) applies the persisted namespace operations strictly in order,
  each under the exclusive side of `lock`, retrying transient failures with exponential backoff
  (the lock is released while it sleeps).
- **Uploads** are per inode. A dirty inode is uploaded once it has been quiet for
  `delay` seconds (each write pushes its deadline back), or at once on `flush_now` (fsync with
  `--fsync remote`, draining at unmount). Each remote call of an upload runs under the shared
  side of `lock` with a path computed while no operation on the inode's chain is pending, so
  that path is the share path and the worker cannot rename it mid-call.

The dirty set is persisted in the `dirty` LMDB database (ino → {"low": lowest size the file was
truncated to since its last upload}); together with the cache's dirty blocks it is what the
next start re-queues.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from fsync_fuse.attrs import FILE, OUR_KEYS, with_marker
from fsync_fuse.deadlines import Deadlines
from fsync_fuse.groups import single_error
from fsync_fuse.namespace import Namespace
from fsync_fuse.opwindow import OpWindow
from remote.base import (
    AlreadyExists,
    InvalidName,
    LeaseConflict,
    NotEmpty,
    NotFound,
    Remote,
    RemoteError,
)

log = logging.getLogger(__name__)

MAX_PUT = 4 * 1024 * 1024
#: new files up to this size are created with their content (one Put Range)
INLINE_MAX = MAX_PUT
#: the mount counts as busy while local changes arrive less than this apart ...
QUIET_GAP = 0.3
#: ... and while it is busy the queue and the uploads wait, for at most this long, then run
#: with at most this many operations (and uploads) at a time until it is quiet again
BURST_HOLD = 30.0
BURST_PARALLEL = 1
#: backoff cap for refusals that may end (expired SAS, permissions, quota, a missing parent)
MAX_REFUSED_BACKOFF = 300.0


class SourceMissing(NotFound):
    """A queued rename whose source and destination are both missing on the share."""


class RWLock:
    """Many shared holders or one exclusive holder; a waiting exclusive blocks new shared ones."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while self._writer or self._writers_waiting:
            await self._changed.wait()
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._writers_waiting += 1
        try:
            while self._writer or self._readers:
                await self._changed.wait()
        finally:
            self._writers_waiting -= 1
        self._writer = True
        try:
            yield
        finally:
            self._writer = False
            self._notify()


class Gone(Exception):
    """The inode was unlinked: there is nothing left to upload."""


class Restart(Exception):
    """A conflict was resolved (conflicts.py): upload the file again from the start."""


@dataclass
class Status:
    files: int
    bytes: int
    ops: int
    error: str | None = None

    def as_json(self) -> bytes:
        return json.dumps(
            {"files": self.files, "bytes": self.bytes, "ops": self.ops, "error": self.error}
        ).encode()


class WriteBack:
    def __init__(
        self,
        ns: Namespace,
        cache,
        remote: Remote,
        *,
        delay: float = 5.0,
        parallel_files: int = 8,
        parallel_ranges: int = 8,
        parallel_ops: int = 8,
        max_backoff: float = 30.0,
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.remote = remote
        self.delay = delay
        self.parallel_ranges = parallel_ranges
        self.parallel_files = parallel_files
        self.parallel_ops = parallel_ops
        self.max_backoff = max_backoff
        self.lock = RWLock()
        self.outbox = ns.outbox
        self.db = ns.env.open_db(b"dirty")
        self._dirty: dict[int, int | None] = {}  # ino -> low-water mark (mirror of the db)
        self._meta: set[int] = set()  # dirty inodes whose mode/owner changed (mirror too)
        self._gen: dict[int, int] = {}  # bumped by every write/truncate
        self._tgen: dict[int, int] = {}  # bumped by every truncate
        # low-water mark of truncates since the running upload of an inode started: what
        # the next upload must resize down to once this one succeeded
        self._low_during: dict[int, int | None] = {}
        self._uploaded_gen: dict[int, int] = {}  # gen an upload of this inode started from
        # ino -> trio.current_time() deadline; setting an earlier one than the scheduler
        # sleeps until wakes it, a later one (every write) costs O(1) and wakes nobody
        self._due = Deadlines(self._poke)
        self._attempts: dict[int, int] = {}
        self._running: set[int] = set()
        self._files_limiter = trio.CapacityLimiter(parallel_files)
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._drains = 0
        self._urgent = 0  # fsync --fsync remote waiting: no holding back for bursts
        #: trio time of the latest local change (fs.py sets it on every mutating request)
        self.activity_at = -math.inf
        self._busy_since: float | None = None
        self.scheduler_rounds = 0  # wake-ups of the upload scheduler (tests, status)
        self.last_error: str | None = None  # the uploads' latest failure (None after a success)
        self._op_errors: dict[int, str] = {}  # seq -> why that queued operation is failing
        #: applied, not yet recorded: (seq, op, result, bookkeeping to run at the recording)
        self._done: list[tuple[int, dict, dict | None, Callable[[], None] | None]] = []
        self._after_done: dict[int, Callable[[], None]] = {}  # ino -> its create's bookkeeping
        self._done_wake = trio.Event()
        #: multi-site conflict check before each upload (conflicts.Conflicts), optional
        self.conflicts = None
        #: upload leases (leases.Leases), optional: an upload then holds the shared lock
        #: for its whole duration, with the file leased after the conflict check
        self.leases = None
        self._held: dict[int, str] = {}  # ino -> share path of a whole-upload section
        #: uploads that began changing the share and did not finish (persisted in `dirty`):
        #: the share's ETag moved because of *us*, so the next conflict check must not count
        #: a change of the same file (same FileId) as another site's
        self._inflight: set[int] = set()
        self._lease: dict[int, str] = {}  # ino -> lease id held by its upload
        #: is this inode open for writing here? (fs.py sets it)
        self.writing: Callable[[int], bool] = lambda ino: False
        with ns.env.begin(db=self.db) as txn:
            for key, raw in txn.cursor():
                rec = json.loads(raw)
                ino = int.from_bytes(key, "big")
                self._dirty[ino] = rec.get("low")
                if rec.get("meta"):
                    self._meta.add(ino)
                if rec.get("inflight"):
                    self._inflight.add(ino)

    # ------------------------------------------------------------------ bookkeeping
    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _poke(self) -> None:
        self._wake.set()

    def is_dirty(self, ino: int) -> bool:
        return ino in self._dirty

    def busy(self, ino: int) -> bool:
        """Local state of this inode is ahead of the share (listings must not overwrite it)."""
        return ino in self._dirty or self.outbox.is_subject(ino)

    def _persist(self, ino: int, low: int | None, *, now: bool = False) -> None:
        """Record the inode's entry of the dirty set: with the namespace's write-behind
        records (durable at the next commit point, like the data it describes), or at once."""
        rec = {"low": low, "meta": ino in self._meta}
        if ino in self._inflight:
            rec["inflight"] = True
        self.ns.deferred[(self.db, ino.to_bytes(8, "big"))] = json.dumps(rec).encode()
        if now:
            self.ns.flush()

    def _forget(self, ino: int) -> None:
        self._dirty.pop(ino, None)
        self._inflight.discard(ino)
        self._meta.discard(ino)
        self._due.pop(ino, None)
        self._gen.pop(ino, None)
        self._tgen.pop(ino, None)
        self._uploaded_gen.pop(ino, None)
        self._attempts.pop(ino, None)
        self.ns.deferred[(self.db, ino.to_bytes(8, "big"))] = None
        self._notify()

    def mark_dirty(self, ino: int, *, truncated_to: int | None = None, meta: bool = False) -> None:
        """A write, truncate or attribute change happened: (re)start the quiet timer of this
        inode. A regular file's mode, owner and mtime travel with its upload (`meta`), not as
        queued operations, so `tar` setting them on each file it extracts costs nothing extra."""
        low = self._dirty.get(ino)
        new_low = low
        if meta and ino not in self._meta:
            self._meta.add(ino)
            low = -1  # force the persist below
        if truncated_to is not None:
            new_low = truncated_to if low is None else min(low, truncated_to)
            self._tgen[ino] = self._tgen.get(ino, 0) + 1
            if ino in self._low_during:
                during = self._low_during[ino]
                self._low_during[ino] = (
                    truncated_to if during is None else min(during, truncated_to)
                )
        if ino not in self._dirty or new_low != low:
            self._dirty[ino] = new_low
            # a low-water mark must not be lost once the cache dropped the truncated data
            self._persist(ino, new_low, now=truncated_to is not None)
            self._notify()
        self._gen[ino] = self._gen.get(ino, 0) + 1
        self._due[ino] = trio.current_time() + (
            0.0 if self.draining or self._pressure() else self.delay
        )  # wakes the scheduler only if this is now the earliest deadline

    def _set_low(self, ino: int, low: int | None) -> None:
        if ino in self._dirty and self._dirty[ino] != low:
            self._dirty[ino] = low
            self._persist(ino, low)

    def _pressure(self) -> bool:
        """Dirty data fills half the cache: upload now, or writers would hit ENOSPC."""
        try:
            return self.cache.dirty_bytes() * 2 > self.cache.max_bytes
        except Exception:  # noqa: BLE001
            return False

    def dropped(self, ino: int) -> None:
        """The inode was deleted for good: nothing of it will be uploaded."""
        self._forget(ino)

    def requeue_all(self) -> None:
        """At start: everything dirty (ours or the cache's) goes out as soon as it can.

        The cache may hold dirty blocks beyond the file's recorded size (a crash after the
        cache committed a write but before the namespace recorded the size it grew to):
        those lie above EOF, would never be uploaded nor cleaned, and the file would be
        re-queued forever. They are cut off here (cache/API.md: the owner truncates every
        dirty key to its committed size at start)."""
        for ino in self.cache.dirty_keys():
            rec = self.ns.get(ino)
            if rec is None or rec.kind != FILE:
                continue
            if any(o + n > rec.size for o, n in self.cache.dirty_ranges(ino)):
                log.info("inode %d: dropping cached writes beyond its size %d", ino, rec.size)
                self.cache.truncate(ino, rec.size)
        for ino in set(self._dirty) | set(self.cache.dirty_keys()):
            if ino not in self._dirty:
                self._dirty[ino] = None
                self._persist(ino, None)
            self._due[ino] = 0.0

    def status(self) -> Status:
        nbytes = 0
        for ino in self._dirty:
            try:
                nbytes += self.cache.dirty_bytes(ino)
            except Exception:  # noqa: BLE001 - a key the cache dropped counts as 0
                pass
        return Status(len(self._dirty), nbytes, len(self.outbox), self.op_error or self.last_error)

    # ------------------------------------------------------------------ waiting
    async def wait_idle(self) -> None:
        """Until the outbox is empty and nothing is dirty (used when draining)."""
        while len(self.outbox) or self._dirty:
            await self._changed.wait()

    async def drain(self) -> None:
        """Upload everything now, ignoring the quiet delay; returns when all is on the share."""
        self._drains += 1
        for ino in self._dirty:
            self._due[ino] = min(self._due.get(ino, 0.0), trio.current_time())
        self._poke()
        try:
            await self.wait_idle()
        finally:
            self._drains -= 1

    @property
    def conflict_count(self) -> int:
        return self.conflicts.count if self.conflicts is not None else 0

    @property
    def draining(self) -> bool:
        return self._drains > 0

    async def flush_now(self, ino: int) -> None:
        """fsync --fsync remote: this file's operations and content reach the share."""
        chain = self.ns.chain(ino) or [ino]
        await self.outbox.wait_until(lambda: self.outbox.path_settled(chain))
        if ino not in self._dirty:
            return
        target = self._gen.get(ino, 0)
        self._due[ino] = trio.current_time()
        self._poke()
        self._urgent += 1
        try:
            while ino in self._dirty and self._uploaded_gen.get(ino, -1) < target:
                await self._changed.wait()
        finally:
            self._urgent -= 1

    @property
    def in_burst(self) -> bool:
        """Local changes are arriving (see yield_to_burst)."""
        return trio.current_time() - self.activity_at < QUIET_GAP

    async def yield_to_burst(self) -> None:
        """While local changes keep coming (`tar -x`, a build), let them have the machine:
        the queue and the uploads wait until QUIET_GAP passes without a change, but for at
        most BURST_HOLD per burst (then they run alongside until the next quiet moment).
        Never when draining, for an fsync that waits for the share, or under dirty-data
        pressure. Uploads sent after the burst also find files complete (one call less)."""
        while not (self.draining or self._urgent or self._pressure()):
            now = trio.current_time()
            idle = now - self.activity_at
            if idle >= QUIET_GAP:
                self._busy_since = None
                return
            if self._busy_since is None:
                self._busy_since = now
            held = now - self._busy_since
            if held >= BURST_HOLD:
                return
            await trio.sleep(min(QUIET_GAP - idle, BURST_HOLD - held))

    # ------------------------------------------------------------------ share paths
    def settled_path(self, ino: int) -> str | None:
        """The inode's share path if no pending operation affects it, else None. Raises Gone
        for an unlinked inode."""
        chain = self.ns.chain(ino)
        if chain is None:
            raise Gone(ino)
        if not self.outbox.path_settled(chain):
            return None
        path = self.ns.path(ino)
        if path is None:
            raise Gone(ino)
        return path

    @asynccontextmanager
    async def share_path(self, ino: int) -> AsyncIterator[str]:
        """Hold the shared lock with the inode's current share path."""
        held = self._held.get(ino)
        if held is not None:  # inside a leased upload, which holds the lock throughout
            yield held
            return
        while True:
            await self.outbox.wait_until(lambda: self.settled_path(ino) is not None)
            async with self.lock.shared():
                path = self.settled_path(ino)
                if path is not None:
                    yield path
                    return

    # ------------------------------------------------------------------ tasks
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self.leases is not None:
            try:
                with trio.move_on_after(30):
                    await self.leases.break_leftovers()
            except Exception:  # noqa: BLE001 - retried at the next start; never fatal
                log.exception("breaking leftover upload leases failed")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._worker)
            nursery.start_soon(self._scheduler, nursery)
            task_status.started()

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff, 0.5 * 2 ** min(attempt, 10))

    async def _worker(self) -> None:
        """Apply the outbox: operations independent of every earlier pending one run side
        by side (opwindow.py), the rest in order."""
        window = OpWindow(self.outbox, parallel=self.parallel_ops)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._record_done)
            while True:
                if not len(self.outbox):
                    await self.outbox.wait_until(lambda: len(self.outbox) > 0)
                await self.yield_to_burst()
                version = self.outbox.version
                window.parallel = BURST_PARALLEL if self.in_burst else self.parallel_ops
                for seq, op in window.ready():
                    window.running.add(seq)
                    nursery.start_soon(self._apply_op, window, seq, op)
                # something changed: an op appended or finished (both bump the version)
                await self.outbox.wait_until(lambda v=version: self.outbox.version != v)

    async def _apply_op(self, window: OpWindow, seq: int, op: dict) -> None:
        """One queued operation, retried until it is on the share (or can never be)."""
        attempt = 0
        where = op.get("path") or op.get("src")
        # renames and removals change paths uploads may be using: they wait for those
        lock = (
            self.lock.exclusive if op["op"] in ("rename", "unlink", "rmdir") else self.lock.shared
        )
        while True:
            try:
                async with lock():
                    result = await self._apply(op)
            except (InvalidName, SourceMissing) as exc:
                # can never succeed: the share cannot hold the name, or the file to rename
                # is gone (both names missing). Dropped; a create/mkdir stays "not on the
                # share" (op_done gets no result), so its upload creates it later.
                log.error("%s %s can never succeed on the share, dropped: %s", op["op"], where, exc)
                result = None
            except Exception as exc:  # noqa: BLE001 - every other failure is retried
                # Transient failures and another site's lease end soon: short backoff. Any
                # other refusal (expired SAS, permission, quota...) may end too (credentials
                # renewed, quota raised): long backoff, blocking what depends on it, shown in
                # status. Dropping it would break the ordering later operations rely on.
                quick = isinstance(exc, RemoteError) and (
                    exc.transient or isinstance(exc, LeaseConflict)
                )
                delay = (
                    self._backoff(attempt)
                    if quick
                    else min(MAX_REFUSED_BACKOFF, 5.0 * 2 ** min(attempt, 10))
                )
                attempt += 1
                what = "share unreachable" if quick else "refused by the share"
                error = f"{op['op']} {where}: {what}: {exc}"
                if error != self._op_errors.get(seq):
                    if isinstance(exc, RemoteError):
                        log.warning("%s; retrying (%d operations queued)", error, len(self.outbox))
                    else:
                        log.exception("%s; retrying", error)
                else:
                    log.debug("%s; retrying in %.1fs", error, delay)
                self._op_errors[seq] = error
                self._notify()
                await trio.sleep(delay)
                continue
            self._op_errors.pop(seq, None)
            window.done(seq)
            # Operations that depend on this one may start now (it is on the share); its
            # removal from the outbox joins the others that end in the same moment.
            self._done.append((seq, op, result, self._after_done.pop(op.get("ino"), None)))
            self._done_wake.set()
            return

    async def _record_done(self) -> None:
        """Group commit of finished operations (`Namespace.ops_done`): a crash before it
        replays them, which every operation survives (INVARIANTS.md, "Crash")."""
        while True:
            await self._done_wake.wait()
            self._done_wake = trio.Event()
            await trio.sleep(0.002)  # others finishing now join this commit
            done, self._done = self._done, []
            if done:
                for *_, after in done:
                    if after is not None:
                        after()
                self.ns.ops_done([(seq, op, result) for seq, op, result, _ in done])
                self._notify()

    @property
    def op_error(self) -> str | None:
        """Why the oldest failing queued operation is not applied yet (None: none fails)."""
        return self._op_errors[min(self._op_errors)] if self._op_errors else None

    async def _with_parents(self, path: str, call):
        """Run `call()`; if the share lacks the parent directory (deleted elsewhere, or never
        created), create the missing directories (`mkdir -p`) and run it once more."""
        try:
            return await call()
        except NotFound:
            parts = path.split("/")[:-1]
            if not parts:
                raise
        for i in range(1, len(parts) + 1):
            try:
                await self.remote.mkdir("/".join(parts[:i]))
            except AlreadyExists:
                pass
        log.warning("%s: parent directory was missing on the share; created it", path)
        return await call()

    async def _apply(self, op: dict) -> dict | None:
        kind = op["op"]
        r = self.remote
        if kind == "mkdir":
            rec = self.ns.get(op["ino"])
            meta = rec.metadata(self.ns.owner) if rec is not None else op["meta"]
            attrs = rec.share_attributes(self.ns.owner) if rec is not None else None
            try:
                e = await self._with_parents(
                    op["path"], lambda: r.mkdir(op["path"], metadata=meta, attributes=attrs)
                )
            except AlreadyExists:
                await r.set_properties(op["path"], metadata=meta, attributes=attrs, is_dir=True)
                e = await r.stat(op["path"], is_dir=True)
            return {"file_id": e.file_id, "etag": e.etag, "attrs": e.attributes}
        if kind in ("create", "symlink"):
            return await self._create(op)
        if kind == "unlink":
            try:
                await r.delete_file(op["path"])
            except NotFound:
                pass
            return None
        if kind == "rmdir":
            try:
                await r.rmdir(op["path"])
            except NotFound:
                pass
            except NotEmpty:
                log.error(
                    "rmdir %s: the share still has entries in it (created elsewhere?); "
                    "kept on the share",
                    op["path"],
                )
            return None
        if kind == "rename":
            try:
                await r.rename(op["src"], op["dst"], replace=op["replace"])
            except NotFound:
                try:
                    await r.stat(op["dst"])  # replayed after a crash: already done
                except NotFound:
                    raise SourceMissing(
                        f"rename {op['src']} -> {op['dst']}: source missing"
                    ) from None
            return await self._etag_after_rename(op)
        if kind == "setattr":
            try:
                meta, attrs = await self._share_meta(op["ino"], op["path"], op.get("meta"))
                rec = self.ns.get(op["ino"])
                etag = await r.set_properties(
                    op["path"],
                    last_write_ns=op.get("mtime"),
                    metadata=meta,
                    attributes=attrs,
                    is_dir=rec.is_dir if rec is not None else None,
                )
            except NotFound:
                return None
            return {"etag": etag, "attrs": attrs}
        log.error("unknown queued operation %r dropped", kind)
        return None

    async def _create(self, op: dict) -> dict:
        """Apply a queued create/symlink: the file is made under a temporary name as it is
        *now* (size, attributes, mtime; a small quiet file with its content too, so it costs
        three calls and needs no upload), then renamed to its name without replacing
        anything (Conflicts.place: a file created elsewhere meanwhile is kept)."""
        ino, path = op["ino"], op["path"]
        rec = self.ns.get(ino)
        tgen0 = self._tgen.get(ino, 0)
        gen0 = self._gen.get(ino, 0)
        owner = self.ns.owner
        if op["op"] == "symlink":
            content = op["target"].encode()
            size, meta, mtime = len(content), op["meta"], op.get("mtime")
            attrs = with_marker(None, True, False)
        elif rec is not None and rec.kind == FILE:
            content = None
            size, meta, mtime = rec.size, rec.metadata(owner), rec.mtime_ns
            attrs = rec.share_attributes(owner)
        else:  # removed meanwhile: its removal follows in the queue
            content, size, meta, mtime, attrs = None, 0, op["meta"], op.get("mtime"), None
        inline = content is None and rec is not None and self._inline(ino, size)
        tmp = self.ns.new_path(path, ino)
        tokens = []
        pieces: list[tuple[int, bytes]] = []
        if content:
            pieces.append((0, content))
        elif inline:
            for off, n in self.cache.dirty_ranges(ino):
                if off < size:
                    data, token = self.cache.snapshot_range(ino, off, min(n, size - off))
                    pieces.append((off, data))
                    tokens.append(token)
        try:
            # create, fill and take the name in one go; a name taken meanwhile: see below
            entry = await self._with_parents(
                path,
                lambda: self.remote.create_filled(
                    tmp,
                    path,
                    size,
                    pieces,
                    metadata=meta,
                    last_write_ns=mtime,
                    attributes=attrs,
                ),
            )
            where = path
        except AlreadyExists:
            if self.conflicts is None or rec is None:
                raise
            entry, where = await self.conflicts.place(
                ino, rec, tmp, path, movable=self.outbox.only_op_on(ino)
            )
        if where != path:  # ours kept beside theirs: a local rename, nothing queued
            moved = self.ns.detach(ino, where.rpartition("/")[2])
            if moved is not None and self.conflicts is not None and self.conflicts.on_change:
                self.conflicts.on_change(*moved)

        def recorded() -> None:
            """Run when the operation's removal is committed, in the same synchronous step
            (`_record_done`): the cache and the dirty set learn that the share has the file
            only together with the outbox, so a crash replays all of it or none."""
            if rec is None or self._tgen.get(ino, 0) != tgen0 or self.ns.get(ino) is None:
                return  # removed meanwhile: nothing of it is kept
            if op["op"] == "symlink":
                self.cache.set_remote_valid(ino, size)
                return
            self._set_low(ino, None)  # a new file holds no stale content
            if inline:
                # the share holds [0, size): remote_valid first, then clean (INVARIANTS)
                self.cache.set_remote_valid(ino, size)
                for token in tokens:
                    self.cache.mark_clean(ino, token)
                if self._gen.get(ino, 0) == gen0 and not self._dirty_blocks(ino):
                    self._forget(ino)  # written by the same transaction
                else:
                    self._uploaded_gen[ino] = gen0

        self._after_done[op["ino"]] = recorded
        return {
            "file_id": entry.file_id,
            "etag": entry.etag,
            "size": size,
            "attrs": entry.attributes,
            "lw": entry.last_write_ns or mtime,
        }

    async def _recreate(self, ino: int, rec, path: str, size: int) -> None:
        """The upload's file is not on the share (first upload after a conflict turned it
        into a new file): create it, `size` zero bytes, the way `_create` does, never
        replacing a file of that name. Ours moved aside instead: upload again (Restart)."""
        owner = self.ns.owner
        tmp = self.ns.new_path(path, ino)
        created = await self.remote.create_file(
            tmp,
            size,
            metadata=rec.metadata(owner),
            last_write_ns=rec.mtime_ns,
            attributes=with_marker(None, not rec.posix_default(owner), False),
        )
        if self.conflicts is not None:
            entry, where = await self.conflicts.place(ino, rec, tmp, path, movable=True)
        else:
            entry, where = await self.remote.rename(tmp, path, replace=False), path
        entry = entry or created
        self.ns.update(
            ino,
            attrs=entry.attributes or created.attributes,
            file_id=entry.file_id or created.file_id,
            etag=entry.etag,
            remote_size=size,
            base_lw=entry.last_write_ns or rec.mtime_ns,
        )
        if where != path:
            moved = self.ns.detach(ino, where.rpartition("/")[2])
            if moved is not None and self.conflicts is not None and self.conflicts.on_change:
                self.conflicts.on_change(*moved)
            raise Restart(ino)

    def _inline(self, ino: int, size: int) -> bool:
        """Send a new file's content with its create: small, dirty, and done being
        written (not open for writing, or quiet for the write-back delay)."""
        if size > INLINE_MAX or ino not in self._dirty:
            return False
        due = self._due.get(ino)
        return not self.writing(ino) or due is None or due <= trio.current_time()

    async def _share_meta(
        self, ino: int, path: str, fallback: dict[str, str] | None = None
    ) -> tuple[dict[str, str] | None, str | None]:
        """The metadata and SMB attributes (None: leave them) to write for `ino` now. Other
        tools' metadata keys and the share's attributes are read first when this mount never
        saw them (an entry known from a listing only): Set Metadata replaces every key."""
        rec = self.ns.get(ino)
        if rec is None:
            return fallback, None
        owner = self.ns.owner
        if not rec.extra_known or (rec.attrs is None and not rec.posix_default(owner)):
            try:
                e = await self.remote.stat(path, is_dir=rec.is_dir)
            except NotFound:
                e = None
            if e is not None:
                rec.extra = {
                    k: v for k, v in (e.metadata or {}).items() if k.lower() not in OUR_KEYS
                }
                rec.attrs = e.attributes
                self.ns.update(ino, extra=rec.extra, extra_known=True, attrs=rec.attrs)
        return rec.metadata(owner), rec.share_attributes(owner)

    async def _etag_after_rename(self, op: dict) -> dict | None:
        """A rename gives the file a new ETag on the share: record it as the version our
        local state is based on, or the next upload's conflict check would see a change.
        Only when it still is our version (same FileId and size), else the check must fire."""
        rec = self.ns.get(op["ino"])
        if rec is None or rec.kind != FILE or rec.etag is None or self.conflicts is None:
            return None
        try:
            e = await self.remote.stat(op["dst"])
        except NotFound:
            return None
        if e.file_id == rec.file_id and e.size == rec.remote_size:
            return {"etag": e.etag, "lw": e.last_write_ns}
        return None

    async def _scheduler(self, nursery: trio.Nursery) -> None:
        while True:
            self.scheduler_rounds += 1
            await self.yield_to_burst()
            self._files_limiter.total_tokens = (
                BURST_PARALLEL if self.in_burst and not self.draining else self.parallel_files
            )
            for ino in self._due.take_due(trio.current_time(), self._running):
                self._running.add(ino)
                nursery.start_soon(self._upload_task, ino)
            self._wake = trio.Event()
            deadline = self._due.waiting_until = self._due.next_deadline()
            with trio.move_on_at(deadline):
                await self._wake.wait()

    async def _upload_task(self, ino: int) -> None:
        try:
            async with self._files_limiter:
                await self._upload(ino)
            self._attempts.pop(ino, None)
            self.last_error = None
        except Gone:
            self._low_during.pop(ino, None)
            self._forget(ino)
            return
        except Restart:
            self.outbox.touch(ino)
            if ino in self._dirty:
                self._due[ino] = trio.current_time()
        except RemoteError as exc:
            n = self._attempts.get(ino, 0)
            self._attempts[ino] = n + 1
            quick = exc.transient or isinstance(exc, LeaseConflict)  # another site's upload
            delay = (
                self._backoff(n)
                if quick
                else max(60.0, min(MAX_REFUSED_BACKOFF, 5.0 * 2 ** min(n, 10)))
            )
            self.last_error = f"{'share unreachable' if exc.transient else 'upload refused'}: {exc}"
            log.warning("upload of inode %d failed (%s); retrying in %.1fs", ino, exc, delay)
            if ino in self._dirty:
                self._due[ino] = min(self._due.get(ino, math.inf), trio.current_time() + delay)
        except Exception as exc:
            log.exception("upload of inode %d failed unexpectedly; retrying in 60s", ino)
            self.last_error = f"upload failed: {exc!r}"
            if ino in self._dirty:
                self._due[ino] = trio.current_time() + 60
        finally:
            # After a failure the persisted mark (min of old and new truncates) stands.
            self._low_during.pop(ino, None)
            self._running.discard(ino)
            self._due.unpark(ino)  # due again while it ran: back on the heap
            self._notify()
            self._poke()

    async def _upload(self, ino: int) -> None:
        meta0 = ino in self._meta
        self._meta.discard(ino)  # a change from now on is sent by the next upload
        try:
            if self.leases is None:
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
            if meta0 and ino in self._dirty:
                self._meta.add(ino)  # not sent: the next upload sends it
            raise

    async def _upload_steps(self, ino: int, meta0: bool) -> None:
        if ino not in self._dirty:
            return
        rec = self.ns.get(ino)
        if rec is None or rec.parent == 0:
            raise Gone(ino)
        if rec.kind != FILE:
            self._forget(ino)
            return
        gen0 = self._gen.get(ino, 0)
        tgen0 = self._tgen.get(ino, 0)
        low0 = self._dirty[ino]
        self._low_during[ino] = None
        self._uploaded_gen[ino] = -1
        t0 = time.monotonic()
        # A listing taken while this upload runs shows a share version we are replacing.
        self.outbox.touch(ino)

        # 1. Size: first down to the low-water mark (re-extended regions must read as zeros),
        #    then to the current size. Size and ranges are taken at the same instant.
        async with self.share_path(ino) as path:
            if ino not in self._dirty:
                return  # its create, applied while we waited, took the content along
            rec = self.ns.get(ino)
            if rec is None:
                raise Gone(ino)
            if ino in self._held and rec.remote_size is not None:
                # leased before the conflict check: nobody writes between check and upload
                lease_id = await self.leases.acquire(ino, path)
                if lease_id is not None:
                    self._lease[ino] = lease_id

            async def unlease(path: str = path) -> None:
                lease_id = self._lease.pop(ino, None)
                if lease_id is not None:
                    await self.leases.release(ino, path, lease_id)

            if self.conflicts is not None and await self.conflicts.check(
                ino, rec, path, before_change=unlease, inflight=ino in self._inflight
            ):
                self._inflight.discard(ino)
                raise Restart(ino)
            if ino not in self._inflight:
                self._inflight.add(ino)  # durable before the share changes
                self._persist(ino, self._dirty.get(ino), now=True)
            lease = self._lease.get(ino)
            size = rec.size
            ranges = [(o, min(n, size - o)) for o, n in self.cache.dirty_ranges(ino) if o < size]
            rsize = rsize0 = rec.remote_size
            if rsize is None:  # the share lost it (or never had it): start again
                await self._recreate(ino, rec, path, size)
                rsize, low0 = size, None  # a new file: zeros, nothing stale to cut
            if low0 is not None and low0 < rsize:
                await self.remote.resize(path, low0, lease_id=lease)
                rsize = low0
            if size != rsize:
                try:
                    await self.remote.resize(path, size, lease_id=lease)
                except NotFound:
                    if self.conflicts is not None:
                        # deleted since the conflict check: the next check keeps our version
                        raise Restart(ino) from None
                    log.warning("%s vanished from the share while dirty here: recreating it", path)
                    await self._recreate(ino, rec, path, size)
            if size != rsize0:
                self.ns.update(ino, remote_size=size)
        # The share now reads as zeros wherever this file has no data here ([low0, size)
        # minus dirty blocks): the low-water mark is consumed (only truncates since this
        # upload began still count), and everything below `size` may be fetched again —
        # which must hold before any block is cleaned, or a clean block above the cache's
        # remote_valid would read as zeros once evicted.
        self._set_low(ino, self._low_during.get(ino))
        if self._tgen.get(ino, 0) == tgen0:
            self.cache.set_remote_valid(ino, size)

        # 2. Dirty ranges, several in parallel; each range's blocks are cleaned only if no
        #    write touched them since their snapshot.
        sent = 0
        limiter = trio.CapacityLimiter(self.parallel_ranges)

        async def put(off: int, length: int) -> None:
            nonlocal sent
            async with limiter:
                if self._tgen.get(ino, 0) != tgen0:
                    # Truncated since this upload began: data written after the truncate
                    # must not be cleaned here, or the next upload's resize down to the new
                    # low-water mark would destroy it on the share while it is clean (and
                    # evictable) here. The next upload sends the rest.
                    return
                data, token = self.cache.snapshot_range(ino, off, length)
                async with self.share_path(ino) as p:
                    await self.remote.write(p, off, bytes(data), lease_id=lease)
                self.cache.mark_clean(ino, token)
                sent += len(data)

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
            meta, attrs = await self._share_meta(ino, path) if meta0 else (None, None)
            lw = rec.mtime_ns
            etag = await self.remote.set_properties(
                path,
                last_write_ns=lw,
                metadata=meta,
                attributes=attrs,
                lease_id=lease,
                is_dir=False,
            )
            if attrs is not None:
                self.ns.update(ino, attrs=attrs)

        # 4. Bookkeeping: the share now holds [0, size) as snapshotted.
        truncated_since = self._tgen.get(ino, 0) != tgen0
        self._low_during.pop(ino, None)
        if self._gen.get(ino, 0) == gen0 and not self._dirty_blocks(ino):
            self._forget(ino)  # written by the update below, in the same transaction
        else:
            self._due.setdefault(ino, trio.current_time() + self.delay)
        if ino in self._inflight:
            self._inflight.discard(ino)
            if ino in self._dirty:
                self._persist(ino, self._dirty[ino])  # written by the update below
        self.ns.update(ino, etag=etag, remote_size=size, base_lw=lw)
        self.outbox.touch(ino)
        self._uploaded_gen[ino] = gen0
        self._notify()
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

    def _dirty_blocks(self, ino: int) -> bool:
        try:
            return self.cache.dirty_bytes(ino) > 0
        except Exception:  # noqa: BLE001
            return False
