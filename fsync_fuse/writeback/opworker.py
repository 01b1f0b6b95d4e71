"""The operation worker: apply the outbox's namespace operations on the share, in order.

Operations independent of every earlier pending one run side by side (stuck.Window, with
opwindow.py's rule), the rest in order; renames and removals hold the exclusive side of the
write-back lock (they change paths uploads use), the others the shared side. Transient
failures are retried quickly, other refusals slowly (they may end: credentials renewed,
quota raised) while blocking what depends on them. A refusal no retry can change (stuck.py:
the share cannot hold the name or path) sets the operation aside as *stuck*, with everything
queued after it that depends on it; independent work proceeds, and a later local rename or
removal of the stuck entry resolves it (`_fold`). Finished operations leave the outbox in
group commits.

Every operation recognises its own earlier success when it is applied again (an answer lost
and the operation retried, or replayed after a crash): a mkdir finding the directory, a
delete or rmdir finding nothing, a rename finding its source gone and the destination there
(the same FileId when we know it), a create finding its own file under the name
(newfiles.py).
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from fsync_fuse.attrs import FILE
from fsync_fuse.namespace import Namespace
from fsync_fuse.outbox import FILE_CREATE_OPS
from fsync_fuse.writeback.fold import fold
from fsync_fuse.writeback.newfiles import Applied, NewFiles
from fsync_fuse.writeback.pacing import (
    BURST_PARALLEL,
    Pacing,
    refused_backoff,
    transient_backoff,
)
from fsync_fuse.writeback.rwlock import RWLock
from fsync_fuse.writeback.shareops import share_meta, with_parents
from fsync_fuse.writeback.stuck import Stuck, Window, op_path, permanent
from remote.base import (
    AlreadyExists,
    LeaseConflict,
    NotEmpty,
    NotFound,
    ReadOnlyOnShare,
    Remote,
    RemoteError,
    without_read_only,
)

log = logging.getLogger(__name__)


class SourceMissing(NotFound):
    """A queued rename whose source and destination are both missing on the share."""


#: entries whose last sent properties are remembered (`OpWorker._sent`)
SENT_KEPT = 4096


@dataclass(frozen=True, slots=True)
class Sent:
    """Properties of an entry as sent to the share (None: not part of it), and the share's
    ETag after them: when the namespace knows another version since (another site changed
    the entry), none of it is taken for granted."""

    meta: dict[str, str] | None
    attrs: str | None
    lw: int | None
    etag: str | None = None

    @property
    def empty(self) -> bool:
        return self.meta is None and self.attrs is None and self.lw is None

    def beyond(self, last: Sent) -> Sent:
        """What of this the share does not have yet, given `last` was sent."""
        return Sent(
            None if self.meta == last.meta else self.meta,
            None if self.attrs == last.attrs else self.attrs,
            None if self.lw == last.lw else self.lw,
            last.etag,
        )

    def updated(self, new: Sent, etag: str | None) -> Sent:
        """The share's state after `new` was sent on top of this (its ETag now `etag`)."""
        return Sent(
            new.meta if new.meta is not None else self.meta,
            new.attrs if new.attrs is not None else self.attrs,
            new.lw if new.lw is not None else self.lw,
            etag,
        )


class OpWorker:
    def __init__(
        self,
        *,
        ns: Namespace,
        remote: Remote,
        lock: RWLock,
        pacing: Pacing,
        new_files: NewFiles,
        stuck: Stuck,
        on_applied: Callable[[int], None] = lambda ino: None,
        on_resolved: Callable[[], None] = lambda: None,
        parallel: int = 8,
        max_backoff: float = 30.0,
    ) -> None:
        self.ns = ns
        self.outbox = ns.outbox
        self.remote = remote
        self.lock = lock
        self.pacing = pacing
        self.new_files = new_files
        self.stuck = stuck
        #: called with the subject inode of every operation applied (a stuck upload of it
        #: is retried: its path or name may be fine now)
        self.on_applied = on_applied
        #: called when stuck operations were rewritten and queued again (files waiting for
        #: them are retried)
        self.on_resolved = on_resolved
        self.parallel = parallel
        self.max_backoff = max_backoff
        self._errors: dict[int, str] = {}  # seq -> why that queued operation is failing
        #: applied, not yet recorded: (seq, op, result, bookkeeping to run at the recording)
        self._done: list[tuple[int, dict, dict | None, Callable[[], None] | None]] = []
        self._done_wake = trio.Event()
        #: ino -> (metadata, SMB attributes, last-write time) this mount last sent for it
        #: (None: not sent); a setattr skips what would send the same again (`_setattr`)
        self._sent: collections.OrderedDict[int, Sent] = collections.OrderedDict()

    @property
    def error(self) -> str | None:
        """Why the oldest failing queued operation is not applied yet (None: none fails)."""
        return self._errors[min(self._errors)] if self._errors else None

    async def run(self) -> None:
        """Apply the outbox: operations independent of every earlier pending one run side
        by side, the rest in order; stuck ones (and what depends on them) wait aside."""
        window = Window(self.outbox, self.stuck, parallel=self.parallel)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._record_done)
            while True:
                if not self.pending():
                    with self.stuck.interrupted_by_change():
                        await self.outbox.wait_until(lambda: self.pending() > 0)
                    continue
                await self.pacing.yield_to_burst()
                version = self.outbox.version
                window.parallel = BURST_PARALLEL if self.pacing.in_burst else self.parallel
                for seq, op in window.ready():
                    window.running.add(seq)
                    nursery.start_soon(self._apply_op, window, seq, op)
                if window.fold_due:
                    window.fold_due = False
                    self._fold()
                    continue
                # something changed: an op appended or finished (both bump the version), or
                # one got stuck (which makes room in the window)
                with self.stuck.interrupted_by_change():
                    await self.outbox.wait_until(functools.partial(self._moved_on, version))

    def pending(self) -> int:
        """Queued operations that are not stuck."""
        return len(self.outbox) - len(self.stuck.ops)

    def _moved_on(self, version: int) -> bool:
        return self.outbox.version != version

    async def _apply_op(self, window: Window, seq: int, op: dict) -> None:
        """One queued operation, retried until it is on the share (or can never be)."""
        attempt = 0
        where = op.get("path") or op.get("src")
        # renames and removals change paths uploads may be using: they wait for those
        lock = (
            self.lock.exclusive if op["op"] in ("rename", "unlink", "rmdir") else self.lock.shared
        )
        await self.new_files.until_due(seq, op)
        if not self.outbox.hold(seq, op):
            window.done(seq)  # rewritten while it waited (outbox.py, "Coalescing")
            return
        while True:
            try:
                async with lock():
                    result, after = await self._apply(op)
            except SourceMissing as exc:
                # nothing to rename: another client deleted it (a dirty file is created
                # again by its upload, a listing removes the rest)
                log.error("%s %s: nothing to apply, dropped: %s", op["op"], where, exc)
                result, after = None, None
            except Exception as exc:  # noqa: BLE001 - every other failure is retried
                if permanent(exc):
                    # never accepted, whatever we wait for: set aside (stuck.py), with what
                    # depends on it; the entry stays here and nothing is lost
                    self._errors.pop(seq, None)
                    window.stick(seq, op, str(exc))
                    return
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

    def _fold(self) -> None:
        """A stuck entry was renamed or removed here: rewrite the stuck operations into what
        they amount to (fold.py) and queue the result again at the end of the outbox, in
        one transaction. Stuck operations commute with every later operation that was not
        stuck (it did not depend on them), so moving them behind those keeps the order;
        nothing of them reached the share. They are retried now: the new name may be fine."""
        old = sorted(self.stuck.ops.items())
        new = fold([op for _seq, (op, _item) in old])
        if new is None:
            return
        for _seq, (_op, item) in old:
            if item.root is None:
                log.info("resolving stuck %s %r (renamed or removed here)", item.what, item.path)
        self.stuck.take_ops()
        self.ns.settle()  # a staged create is queued before these (namespace/tables.py)
        with self.ns.env.begin(write=True) as txn:
            for seq, _ in old:
                self.outbox.remove(txn, seq)
            appended = [(self.outbox.append(txn, op), op) for op in new]
        self.outbox.added(appended)
        for seq, (op, _item) in old:
            self.outbox.removed(seq, op)
        log.info(
            "%d stuck operations became %d queued ones: %s",
            len(old),
            len(new),
            "; ".join(f"{op['op']} {op_path(op)}" for op in new[:5]) or "nothing left to do",
        )
        self.on_resolved()

    async def _record_done(self) -> None:
        """Group commit of finished operations (`Namespace.ops_done`): a crash before it
        replays them, which every operation survives (INVARIANTS.md, "Crash")."""
        while True:
            await self._done_wake.wait()
            self._done_wake = trio.Event()
            await trio.sleep(0.002)  # others finishing now join this commit
            done, self._done = self._done, []
            if done:
                for seq, _op, _result, after in done:
                    self.stuck.applied(seq)
                    if after is not None:
                        after()
                self.ns.ops_done([(seq, op, result) for seq, op, result, _ in done])
                for _seq, op, _result, _after in done:
                    if op.get("ino"):
                        self.on_applied(op["ino"])

    async def _apply(self, op: dict) -> Applied:
        kind = op["op"]
        r = self.remote
        if kind == "mkdir":
            ino = op["ino"]
            dirty = self.new_files.dirty
            gen0 = dirty.gen(ino)  # entries added before now: their mtime goes with it
            rec = self.ns.get(ino)
            meta = rec.metadata(self.ns.owner) if rec is not None else op["meta"]
            attrs = rec.share_attributes(self.ns.owner) if rec is not None else None
            born = rec.share_creation() if rec is not None else None
            # the directory's mtime as it is now (entries added since move it on)
            lw = rec.mtime_ns if rec is not None else op.get("mtime")
            try:
                e = await with_parents(
                    r,
                    op["path"],
                    lambda: r.mkdir(
                        op["path"],
                        metadata=meta,
                        attributes=attrs,
                        last_write_ns=lw,
                        creation_ns=born,
                    ),
                )
            except AlreadyExists:
                await r.set_properties(
                    op["path"],
                    metadata=meta,
                    attributes=attrs,
                    last_write_ns=lw,
                    is_dir=True,
                    creation_ns=born,
                )
                e = await r.stat(op["path"], is_dir=True)
            self._remember(ino, Sent(meta, attrs, lw, e.etag))

            def recorded() -> None:
                """The directory went out as it is now: its mtime needs no upload of its
                own unless entries changed since (uploader.py `_upload_dir`)."""
                if dirty.is_dirty(ino) and dirty.gen(ino) == gen0 and rec is not None:
                    dirty.forget(ino)

            return {"file_id": e.file_id, "etag": e.etag, "attrs": e.attributes}, recorded
        if kind in FILE_CREATE_OPS:
            return await self.new_files.create(op)
        if kind == "unlink":
            try:
                await r.delete_file(op["path"])
            except NotFound:
                pass
            except ReadOnlyOnShare:
                # the share keeps a read-only file; the local removal was not refused
                # (dosattrib.py): the attribute is cleared, then it goes
                e = await r.stat(op["path"], is_dir=False)
                await r.set_properties(
                    op["path"], attributes=without_read_only(e.attributes), is_dir=False
                )
                await r.delete_file(op["path"])
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
                await with_parents(
                    r, op["dst"], lambda: r.rename(op["src"], op["dst"], replace=op["replace"])
                )
            except NotFound:
                # applied before (its answer lost, or replayed after a crash): the source is
                # gone and the destination holds the entry
                if not await self._renamed_already(op):
                    raise SourceMissing(
                        f"rename {op['src']} -> {op['dst']}: source missing"
                    ) from None
            except AlreadyExists:
                # the same, told by a share that looks at the destination first
                if op["replace"]:
                    raise
                if not await self._renamed_already(op):
                    return await self._rename_beside(op)
            return await self._etag_after_rename(op), None
        if kind == "setattr":
            return await self._setattr(op)
        log.error("unknown queued operation %r dropped", kind)
        return None, None

    async def _setattr(self, op: dict) -> Applied:
        """chmod/chown/utimens on the share: only what differs from what this mount last sent
        for the entry (tar restores a directory's owner, mode and times one call each, right
        after it was made with them: nothing, or only its time, is left to send)."""
        ino = op["ino"]
        r = self.remote
        try:
            meta, attrs = await share_meta(self.ns, r, ino, op["path"], op.get("meta"))
            want = Sent(meta, attrs, op.get("mtime"))
            rec = self.ns.get(ino)
            last = self._sent.get(ino)
            if last is not None and (rec is None or rec.etag != last.etag):
                last = None  # the share's version is not the one we left there
            send = want if last is None else want.beyond(last)
            if send.empty:
                return None, None  # the share has all of it already
            etag = await r.set_properties(
                op["path"],
                last_write_ns=send.lw,
                metadata=send.meta,
                attributes=send.attrs,
                is_dir=rec.is_dir if rec is not None else None,
                # (Samba keeps a creation time set over SMB in the metadata it changes)
                creation_ns=(
                    rec.share_creation() if rec is not None and send.meta is not None else None
                ),
            )
        except NotFound:
            return None, None
        self._remember(ino, (last or Sent(None, None, None)).updated(send, etag or None))
        return {"etag": etag, "attrs": attrs}, None

    def _remember(self, ino: int, sent: Sent) -> None:
        self._sent[ino] = sent
        self._sent.move_to_end(ino)
        while len(self._sent) > SENT_KEPT:
            self._sent.popitem(last=False)

    async def _rename_beside(self, op: dict) -> Applied:
        """A file renamed here to a name another site took on the share meanwhile (this
        mount had not listed it): both are kept (conflicts.py: the newer keeps the name),
        never replaced and never retried forever."""
        rec = self.ns.get(op["ino"])
        if rec is None or rec.kind != FILE:
            raise AlreadyExists(f"{op['dst']}: taken on the share by another site's entry")
        nf = self.new_files
        entry, where = await nf.conflicts.place(
            rec.ino,
            rec,
            op["src"],
            op["dst"],
            movable=self.outbox.only_op_on(rec.ino),
            ours=nf.ours(rec.ino),
        )
        nf.conflicts.kept_beside(rec.ino, op["dst"], where)
        return {"etag": entry.etag, "lw": entry.last_write_ns}, None

    async def _renamed_already(self, op: dict) -> bool:
        """Does the share show this rename done: its source gone, its destination there and,
        when we know the entry's FileId, the same entry (a file another site put there meanwhile
        while ours vanished is not ours)?"""
        r = self.remote
        try:
            await r.stat(op["src"])
            return False
        except NotFound:
            pass
        try:
            there = await r.stat(op["dst"])
        except NotFound:
            return False
        rec = self.ns.get(op["ino"])
        known = rec.file_id if rec is not None else None
        return known is None or there.file_id is None or there.file_id == known

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
