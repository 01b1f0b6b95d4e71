"""New files on the share: made under a temporary name, filled, then given their name.

A new file is created as `.fsync-new-<cache id>-<ino>` in its directory (listings skip it),
filled when it is small and done being written, then renamed to its name without replacing
anything: a file of that name created elsewhere meanwhile is never overwritten (both are
kept, `Conflicts.place`), and other sites never see it half written. The operation worker
does this for a queued create or symlink; the uploader for a file the share does not have
(it fills it completely under the temporary name before it takes its name).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from cache import BlockCache
from fsync_fuse.attrs import FILE, Inode, with_marker
from fsync_fuse.conflicts import Conflicts
from fsync_fuse.namespace import Namespace
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.shareops import with_parents
from remote.base import AlreadyExists, Remote, RemoteEntry

#: new files up to this size are created with their content (one Put Range)
INLINE_MAX = 4 * 1024 * 1024

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

    async def create(self, op: dict) -> Applied:
        """Apply a queued create/symlink: the file is made under a temporary name as it is
        *now* (size, attributes, mtime; a small quiet file with its content too, so it costs
        three calls and needs no upload), then renamed to its name without replacing
        anything (Conflicts.place: a file created elsewhere meanwhile is kept)."""
        ino, path = op["ino"], op["path"]
        rec = self.ns.get(ino)
        tgen0 = self.dirty.tgen(ino)
        gen0 = self.dirty.gen(ino)
        owner = self.ns.owner
        content: bytes | None
        attrs: str | None
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
                ),
            )
            where = path
        except AlreadyExists:
            if rec is None:
                raise
            entry, where = await self.conflicts.place(
                ino, rec, tmp, path, movable=self.ns.outbox.only_op_on(ino)
            )
        if where != path:  # ours kept beside theirs: a local rename, nothing queued
            moved = self.ns.detach(ino, where.rpartition("/")[2])
            if moved is not None:
                self.conflicts.announce(*moved)

        def recorded() -> None:
            """Run when the operation's removal is committed, in the same synchronous step
            (the worker's group commit): the cache and the dirty set learn that the share has
            the file only together with the outbox, so a crash replays all of it or none."""
            if rec is None or self.dirty.tgen(ino) != tgen0 or self.ns.get(ino) is None:
                return  # removed meanwhile: nothing of it is kept
            if op["op"] == "symlink":
                self.cache.set_remote_valid(ino, size)
                return
            self.dirty.set_low(ino, None)  # a new file holds no stale content
            if inline:
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

    async def create_aside(self, ino: int, rec: Inode, path: str, size: int) -> str:
        """The upload's file is not on the share (first upload after a conflict turned it
        into a new file, or the share lost it): create it, `size` zero bytes, under the
        temporary name; the uploader fills it there and then `place`s it. Returns that name."""
        owner = self.ns.owner
        tmp = self.ns.new_path(path, ino)
        await with_parents(
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
        return tmp

    async def place(self, ino: int, rec: Inode, tmp: str, path: str, size: int) -> RemoteEntry:
        """Give a filled new file of `size` bytes its name without replacing anything (a name
        taken since: both kept, Conflicts.place) and record its share identity."""
        entry, where = await self.conflicts.place(ino, rec, tmp, path, movable=True)
        self.ns.update(
            ino,
            attrs=entry.attributes or rec.attrs,
            file_id=entry.file_id,
            etag=entry.etag,
            remote_size=size,
            base_lw=entry.last_write_ns or rec.mtime_ns,
        )
        if where != path:  # ours kept beside theirs: a local rename, nothing queued
            moved = self.ns.detach(ino, where.rpartition("/")[2])
            if moved is not None:
                self.conflicts.announce(*moved)
        return entry

    def _inline(self, ino: int, size: int) -> bool:
        """Send a new file's content with its create when it is small, dirty and due: quiet
        for the write-back delay, or the mount drains. Content never goes out before the
        delay says (a file closed is often opened again: an editor, `>>`, a build step)."""
        if size > INLINE_MAX or not self.dirty.is_dirty(ino):
            return False
        due = self.dirty.due.get(ino)
        return due is None or due <= trio.current_time()
