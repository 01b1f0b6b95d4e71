"""New files on the share: made under a temporary name, filled, then given their name.

A new file is created as `.fsync-new-<cache id>-<ino>` in its directory (listings skip it),
filled when it is small and done being written, then renamed to its name without replacing
anything: a file of that name created elsewhere meanwhile is never overwritten (both are
kept, `Conflicts.place`), and other sites never see it half written. The operation worker
does this for a queued create or symlink; the uploader for a file the share does not have
(it fills it completely under the temporary name before it takes its name).

**Our own earlier attempts.** The rename that gives the file its name is not idempotent: when
its answer is lost, the resent rename (the SDK's, or the whole create retried after a
failure, or replayed after a crash) finds the name taken, by our own file. Every temporary
file made for an inode is remembered with its FileId, last-write time and size (`_ours`, in
memory and in the `newfiles` LMDB database with the namespace's write-behind records) from
the moment the share reports it created until the file has its name and that is recorded.
A name held by one of those, unchanged since (same last-write time and size), is our own
earlier success: this attempt's file replaces it (same intent, newer or equal content), it is
never taken for another site's file nor kept beside ours as a conflict copy. A name held by
one of ours that *was* changed since is another site's change, a real conflict. The
uploader's record is made durable before its rename; a queued create's (made, filled and
renamed in one call) at the next flush (2 s): a crash right after its rename falls back to
comparing content (`Conflicts._same_file`, small files).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio

from cache import BlockCache
from fsync_fuse.attrs import FILE, Inode, with_marker
from fsync_fuse.conflicts import Conflicts
from fsync_fuse.namespace import Namespace
from fsync_fuse.outbox import FIXED_CONTENT_OPS
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.shareops import with_parents
from fsync_fuse.writeback.stuck import permanent
from remote.base import AlreadyExists, NotFound, Remote, RemoteEntry, RemoteError

#: FileId -> (last-write time, size) of a temporary file made for an inode
Ours = dict[str, tuple[int | None, int]]

log = logging.getLogger(__name__)

#: new files up to this size are created with their content (one Put Range)
INLINE_MAX = 4 * 1024 * 1024
#: how long a queued create waits for its file to be done being written (`until_due`)
SETTLE_MAX = 10.0
SETTLE_POLL = 0.1

#: what a queued operation's application returns: the share's answer to record with its
#: removal from the outbox, and bookkeeping to run in that same synchronous step
Applied = tuple[dict | None, Callable[[], None] | None]


class Restart(Exception):
    """A conflict was resolved (conflicts.py): upload the file again from the start."""


class NewFiles:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        conflicts: Conflicts,
    ) -> None:
        self.ns, self.cache, self.remote, self.dirty = ns, cache, remote, dirty
        self.conflicts = conflicts
        self.db = ns.env.open_db(b"newfiles")
        #: ino -> our temporary files not yet recorded under their name (module doc)
        self._ours: dict[int, Ours] = {}
        #: since mount: files and bytes of content sent, failed uploads (the uploader's and
        #: the creates' that carry their content: status, metrics)
        self.upload_stats = {"files": 0, "bytes": 0, "failures": 0}
        with ns.env.begin(db=self.db) as txn:
            for key, raw in txn.cursor():
                ours = {fid: (lw, size) for fid, (lw, size) in json.loads(raw).items()}
                self._ours[int.from_bytes(key, "big")] = ours
        for ino in [i for i in self._ours if ns.get(i) is None and not ns.outbox.is_subject(i)]:
            self.named(ino)  # removed, nothing queued for it: nothing of it will be named

    def ours(self, ino: int) -> Ours:
        """The temporary files made for `ino` whose naming is not recorded yet."""
        return self._ours.get(ino, {})

    def remember(self, ino: int, file_id: str | None, lw: int | None, size: int) -> None:
        """A temporary file was made for `ino` (its FileId, last-write time and size as the
        rename will find it): recognised as ours should it turn up under the name."""
        if not file_id:
            return
        ours = self._ours.setdefault(ino, {})
        if ours.get(file_id) == (lw, size):
            return
        ours[file_id] = (lw, size)
        self.ns.write_behind(self.db, ino.to_bytes(8, "big"), json.dumps(ours).encode())

    def named(self, ino: int) -> None:
        """The file has its name and that is recorded: nothing to recognise any more."""
        if self._ours.pop(ino, None) is not None:
            self.ns.write_behind(self.db, ino.to_bytes(8, "big"), None)

    async def create(self, op: dict) -> Applied:
        """Apply a queued create, symlink or special file: the file is made under a temporary name as it is
        *now* (size, attributes, mtime; a small quiet file with its content too, so it costs
        three calls and needs no upload), then renamed to its name without replacing
        anything (Conflicts.place: a file created elsewhere meanwhile is kept), unless the
        create took the place of a rename over a file (`op["replace"]`: outbox.py,
        "Coalescing"), which replaces it as that rename would have."""
        ino, path = op["ino"], op["path"]
        rec = self.ns.get(ino)
        tgen0 = self.dirty.tgen(ino)
        gen0 = self.dirty.gen(ino)
        owner = self.ns.owner
        content: bytes | None
        attrs: str | None
        if op["op"] in FIXED_CONTENT_OPS:
            content = op.get("target", "").encode()
            size, meta, mtime = len(content), op["meta"], op.get("mtime")
            if rec is not None:  # chown, chmod, utimens since were folded into this
                meta, mtime = rec.metadata(owner), rec.mtime_ns
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
        made: list[RemoteEntry] = []  # the temporary file, once the share made it
        try:
            # create, fill and take the name in one go; a name taken meanwhile: see below
            entry = await with_parents(
                self.remote,
                path,
                lambda: self.remote.create_filled(
                    tmp,
                    path,
                    size,
                    pieces,
                    metadata=meta,
                    last_write_ns=mtime,
                    attributes=attrs,
                    made=made,
                    replace=bool(op.get("replace")),
                    creation_ns=rec.share_creation() if rec is not None else None,
                ),
            )
            where = path
        except AlreadyExists:
            self._remember_made(ino, made, mtime, size)
            if rec is None:
                if not await self._ours_there(ino, path):
                    raise
                entry, where = await self.remote.stat(path), path  # ours: removal follows
            else:
                entry, where = await self.conflicts.place(
                    ino, rec, tmp, path, movable=self.ns.outbox.only_op_on(ino), ours=self.ours(ino)
                )
        except BaseException as exc:
            # failed after the share made the file (an answer lost on the way back): it may
            # have taken its name; the next attempt must recognise it as ours
            self._remember_made(ino, made, mtime, size)
            if made and permanent(exc):
                await self.discard(tmp)  # refused for good: set aside, all of it kept here
            raise
        self.conflicts.kept_beside(ino, path, where)

        def recorded() -> None:
            """Run when the operation's removal is committed, in the same synchronous step
            (the worker's group commit): the cache and the dirty set learn that the share has
            the file only together with the outbox, so a crash replays all of it or none."""
            self.named(ino)
            if rec is None or self.dirty.tgen(ino) != tgen0 or self.ns.get(ino) is None:
                return  # removed meanwhile: nothing of it is kept
            if op["op"] in FIXED_CONTENT_OPS:
                self.cache.set_remote_valid(ino, size)
                return
            self.dirty.set_low(ino, None)  # a new file holds no stale content
            if inline:
                self.upload_stats["files"] += 1
                self.upload_stats["bytes"] += sum(len(d) for _, d in pieces)
                # the share holds [0, size): remote_valid first, then clean (INVARIANTS)
                self.cache.set_remote_valid(ino, size)
                for token in tokens:
                    self.cache.mark_clean(ino, token)
                f = self.dirty.get(ino)
                if f is None:
                    return
                if f.gen == gen0 and not self.dirty.dirty_blocks(ino):
                    self.dirty.forget(ino)  # written by the same transaction
                else:
                    f.uploaded_gen = gen0

        result = {
            "file_id": entry.file_id,
            "etag": entry.etag,
            "size": size,
            "attrs": entry.attributes,
            "lw": entry.last_write_ns or mtime,
        }
        return result, recorded

    async def create_aside(self, ino: int, rec: Inode, path: str, size: int) -> RemoteEntry:
        """The upload's file is not on the share (first upload after a conflict turned it
        into a new file, or the share lost it): create it, `size` zero bytes, under the
        temporary name; the uploader fills it there and then `place`s it. Returns it."""
        owner = self.ns.owner
        tmp = self.ns.new_path(path, ino)
        return await with_parents(
            self.remote,
            tmp,
            lambda: self.remote.create_file(
                tmp,
                size,
                metadata=rec.metadata(owner),
                last_write_ns=rec.mtime_ns,
                attributes=with_marker(None, not rec.posix_default(owner), False),
            ),
        )

    async def place(
        self, ino: int, rec: Inode, made: RemoteEntry, tmp: str, path: str, size: int
    ) -> RemoteEntry:
        """Give a filled new file of `size` bytes (`made` under `tmp`, its last-write time
        now `rec.mtime_ns`) its name without replacing anything (a name taken since: both
        kept, Conflicts.place; by our own earlier attempt: replaced) and record its share
        identity."""
        self.remember(ino, made.file_id, rec.mtime_ns, size)
        self.ns.flush()  # durable before the rename: a crash after it still recognises it
        try:
            entry, where = await self.conflicts.place(
                ino, rec, tmp, path, movable=True, ours=self.ours(ino)
            )
        except RemoteError as exc:
            if permanent(exc):
                await self.discard(tmp)  # its name is refused for good: all of it stays here
            raise
        self.named(ino)  # written with the update below
        self.ns.update(
            ino,
            attrs=entry.attributes or rec.attrs,
            file_id=entry.file_id,
            etag=entry.etag,
            remote_size=size,
            base_lw=entry.last_write_ns or rec.mtime_ns,
        )
        self.conflicts.kept_beside(ino, path, where)
        return entry

    async def discard(self, tmp: str) -> None:
        """Delete a temporary file nobody will rename (best effort: listings skip it)."""
        try:
            await self.remote.delete_file(tmp)
        except RemoteError as exc:
            log.debug("leaving %s on the share: %s", tmp, exc)

    def _remember_made(
        self, ino: int, made: list[RemoteEntry], mtime: int | None, size: int
    ) -> None:
        for e in made:
            self.remember(ino, e.file_id, e.last_write_ns or mtime, size)

    async def _ours_there(self, ino: int, path: str) -> bool:
        """Is the file under `path` one of our temporary files for `ino`, unchanged?"""
        try:
            there = await self.remote.stat(path)
        except NotFound:
            return False
        return self.conflicts.is_ours(there, self.ours(ino))

    async def until_due(self, seq: int, op: dict) -> None:
        """Before a queued create of a small file still being written: wait until it is due
        (quiet for the write-back delay; at once when the mount drains), at most SETTLE_MAX.
        Then it goes out in three calls with its content, mode, owner and times, instead of
        being created empty and uploaded after (eight calls or more, with a lease and a
        conflict check). Creates queued during a `tar -x` thus trail it by the delay and
        overlap it, rather than waiting for it to end. Meanwhile the create may be
        rewritten (renamed, removed: outbox.py, "Coalescing"); the wait then ends."""
        if op["op"] != "create":
            return
        ino = op["ino"]
        give_up = trio.current_time() + SETTLE_MAX
        while self.dirty.is_dirty(ino) and self.ns.outbox.is_pending_create(seq, op):
            rec = self.ns.get(ino)
            due = self.dirty.due.get(ino)
            now = trio.current_time()
            if rec is None or rec.size > INLINE_MAX or due is None or due <= now:
                return
            if now >= give_up:
                return
            # the due time may be brought forward meanwhile (a drain, an fsync that waits
            # for the share): look again at least every SETTLE_POLL
            await trio.sleep(min(due, give_up, now + SETTLE_POLL) - now)

    def _inline(self, ino: int, size: int) -> bool:
        """Send a new file's content with its create when it is small, dirty and due: quiet
        for the write-back delay, or the mount drains. Content never goes out before the
        delay says (a file closed is often opened again: an editor, `>>`, a build step)."""
        if size > INLINE_MAX or not self.dirty.is_dirty(ino):
            return False
        due = self.dirty.due.get(ino)
        return due is None or due <= trio.current_time()
