"""The operation worker: apply the outbox's namespace operations on the share, in order.

Operations independent of every earlier pending one run side by side (opwindow.py), the rest
in order; renames and removals hold the exclusive side of the write-back lock (they change
paths uploads use), the others the shared side. Transient failures are retried quickly,
other refusals slowly (they may end: credentials renewed, quota raised) while blocking what
depends on them; only operations that can never succeed are dropped (INVARIANTS.md,
"Ordering: the outbox"). Finished operations leave the outbox in group commits.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import trio

from fsync_fuse.attrs import FILE
from fsync_fuse.namespace import Namespace
from fsync_fuse.opwindow import OpWindow
from fsync_fuse.writeback.newfiles import Applied, NewFiles
from fsync_fuse.writeback.pacing import (
    BURST_PARALLEL,
    Pacing,
    refused_backoff,
    transient_backoff,
)
from fsync_fuse.writeback.rwlock import RWLock
from fsync_fuse.writeback.shareops import share_meta, with_parents
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


class SourceMissing(NotFound):
    """A queued rename whose source and destination are both missing on the share."""


class OpWorker:
    def __init__(
        self,
        *,
        ns: Namespace,
        remote: Remote,
        lock: RWLock,
        pacing: Pacing,
        new_files: NewFiles,
        parallel: int = 8,
        max_backoff: float = 30.0,
    ) -> None:
        self.ns = ns
        self.outbox = ns.outbox
        self.remote = remote
        self.lock = lock
        self.pacing = pacing
        self.new_files = new_files
        self.parallel = parallel
        self.max_backoff = max_backoff
        self._errors: dict[int, str] = {}  # seq -> why that queued operation is failing
        #: applied, not yet recorded: (seq, op, result, bookkeeping to run at the recording)
        self._done: list[tuple[int, dict, dict | None, Callable[[], None] | None]] = []
        self._done_wake = trio.Event()

    @property
    def error(self) -> str | None:
        """Why the oldest failing queued operation is not applied yet (None: none fails)."""
        return self._errors[min(self._errors)] if self._errors else None

    async def run(self) -> None:
        """Apply the outbox: operations independent of every earlier pending one run side
        by side (opwindow.py), the rest in order."""
        window = OpWindow(self.outbox, parallel=self.parallel)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._record_done)
            while True:
                if not len(self.outbox):
                    await self.outbox.wait_until(lambda: len(self.outbox) > 0)
                await self.pacing.yield_to_burst()
                version = self.outbox.version
                window.parallel = BURST_PARALLEL if self.pacing.in_burst else self.parallel
                for seq, op in window.ready():
                    window.running.add(seq)
                    nursery.start_soon(self._apply_op, window, seq, op)
                # something changed: an op appended or finished (both bump the version)
                await self.outbox.wait_until(functools.partial(self._moved_on, version))

    def _moved_on(self, version: int) -> bool:
        return self.outbox.version != version

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
                    result, after = await self._apply(op)
            except (InvalidName, SourceMissing) as exc:
                # can never succeed: the share cannot hold the name, or the file to rename
                # is gone (both names missing). Dropped; a create/mkdir stays "not on the
                # share" (ops_done gets no result), so its upload creates it later.
                log.error("%s %s can never succeed on the share, dropped: %s", op["op"], where, exc)
                result, after = None, None
            except Exception as exc:  # noqa: BLE001 - every other failure is retried
                # Transient failures and another site's lease end soon: short backoff. Any
                # other refusal (expired SAS, permission, quota...) may end too (credentials
                # renewed, quota raised): long backoff, blocking what depends on it, shown in
                # status. Dropping it would break the ordering later operations rely on.
                quick = isinstance(exc, RemoteError) and (
                    exc.transient or isinstance(exc, LeaseConflict)
                )
                delay = (
                    transient_backoff(attempt, self.max_backoff)
                    if quick
                    else refused_backoff(attempt)
                )
                attempt += 1
                what = "share unreachable" if quick else "refused by the share"
                error = f"{op['op']} {where}: {what}: {exc}"
                if error != self._errors.get(seq):
                    if isinstance(exc, RemoteError):
                        log.warning("%s; retrying (%d operations queued)", error, len(self.outbox))
                    else:
                        log.exception("%s; retrying", error)
                else:
                    log.debug("%s; retrying in %.1fs", error, delay)
                self._errors[seq] = error
                await trio.sleep(delay)
                continue
            self._errors.pop(seq, None)
            window.done(seq)
            # Operations that depend on this one may start now (it is on the share); its
            # removal from the outbox joins the others that end in the same moment.
            self._done.append((seq, op, result, after))
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

    async def _apply(self, op: dict) -> Applied:
        kind = op["op"]
        r = self.remote
        if kind == "mkdir":
            rec = self.ns.get(op["ino"])
            meta = rec.metadata(self.ns.owner) if rec is not None else op["meta"]
            attrs = rec.share_attributes(self.ns.owner) if rec is not None else None
            try:
                e = await with_parents(
                    r, op["path"], lambda: r.mkdir(op["path"], metadata=meta, attributes=attrs)
                )
            except AlreadyExists:
                await r.set_properties(op["path"], metadata=meta, attributes=attrs, is_dir=True)
                e = await r.stat(op["path"], is_dir=True)
            return {"file_id": e.file_id, "etag": e.etag, "attrs": e.attributes}, None
        if kind in ("create", "symlink"):
            return await self.new_files.create(op)
        if kind == "unlink":
            try:
                await r.delete_file(op["path"])
            except NotFound:
                pass
            return None, None
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
            return None, None
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
            return await self._etag_after_rename(op), None
        if kind == "setattr":
            try:
                meta, attrs = await share_meta(self.ns, r, op["ino"], op["path"], op.get("meta"))
                rec = self.ns.get(op["ino"])
                etag = await r.set_properties(
                    op["path"],
                    last_write_ns=op.get("mtime"),
                    metadata=meta,
                    attributes=attrs,
                    is_dir=rec.is_dir if rec is not None else None,
                )
            except NotFound:
                return None, None
            return {"etag": etag, "attrs": attrs}, None
        log.error("unknown queued operation %r dropped", kind)
        return None, None

    async def _etag_after_rename(self, op: dict) -> dict | None:
        """A rename gives the file a new ETag on the share: record it as the version our
        local state is based on, or the next upload's conflict check would see a change.
        Only when it still is our version (same FileId and size), else the check must fire."""
        rec = self.ns.get(op["ino"])
        if rec is None or rec.kind != FILE or rec.etag is None:
            return None
        try:
            e = await self.remote.stat(op["dst"])
        except NotFound:
            return None
        if e.file_id == rec.file_id and e.size == rec.remote_size:
            return {"etag": e.etag, "lw": e.last_write_ns}
        return None
