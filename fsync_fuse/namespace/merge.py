"""Merging a listing from the share into the tables, and the poller's directory sweep.

A listing never overrides local state the share has not caught up with (entries that are
`busy`); entries renamed or moved on the share (same FileId) keep their inode, cached content
and dirty data; entries gone from the share are dropped, or orphaned while referenced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fsync_fuse import dosattrib, names
from fsync_fuse.attrs import DIR, FILE, LINK, Inode, has_marker
from fsync_fuse.namespace.orphans import Orphans
from fsync_fuse.namespace.tables import _k, _n, _Tx
from remote.base import RemoteEntry

if TYPE_CHECKING:
    from fsync_fuse.namespace.tables import Txn


@dataclass
class MergeResult:
    """What a listing merge changed, for the caller to tell the cache and the kernel."""

    added: list[int] = field(default_factory=list)
    changed: list[Inode] = field(default_factory=list)  # content changed on the share
    removed: list[tuple[str, int]] = field(default_factory=list)  # (name, ino)
    purged: list[int] = field(default_factory=list)  # inodes gone for good (drop their cache)
    renamed: list[tuple[str, int]] = field(default_factory=list)  # (old name, ino) moved here
    #: (old parent, old name, ino): moved here from another directory on the share
    moved_in: list[tuple[int, str, int]] = field(default_factory=list)
    first: bool = False  # the directory's first listing (the kernel cannot know any name yet)


class ListingMerge(Orphans):
    def merge_listing(
        self,
        dir_ino: int,
        entries: Sequence[RemoteEntry],
        metas: Mapping[str, RemoteEntry],
        busy: Callable[[int], bool],
        referenced: Callable[[int], bool],
        in_use: Callable[[int], bool] = lambda ino: False,
        queued: Callable[[int], bool] | None = None,
    ) -> MergeResult:
        """Make a directory's children match a fresh share listing.

        `entries` are RemoteEntry objects; `metas` maps a name to its RemoteEntry from `stat`
        (with metadata) for entries that are new or whose ETag changed. Entries that are
        `busy` (dirty content or pending operations) keep their local state: the queue will
        bring the share in line with them. Files `in_use` (open) whose content changed keep
        the version their readers see; a listing after the last close takes the new one.

        An entry whose FileId a local inode has, under another name here or in another
        directory, was renamed or moved on the share: the inode follows (cached content and
        dirty data too), unless it or something below it is `queued` (a pending operation
        carries its old path). A dirty file that followed keeps its base version if the
        rename is all that changed (same size and last-write time as its base).
        """
        queued = queued or busy
        res = MergeResult()
        now = self.clock()
        with self._write(discard_unchanged=True) as tx:
            drec = self.get(dir_ino, tx.txn)
            if drec is None or not drec.is_dir:
                return res
            res.first = not drec.listed_ns
            local: dict[str, tuple[int, str]] = {}
            prefix = _k(dir_ino)
            cur = tx.txn.cursor(db=self.db_order)
            if cur.set_range(prefix):
                for key, val in cur:
                    if not key.startswith(prefix):
                        break
                    nm = val[8:].decode()
                    local[names.fold(nm)] = (_n(val[:8]), nm)
            listed = {names.fold(e.name) for e in entries}
            # Renamed on the share within this directory: same FileId, new name. The inode
            # (and its cached content) moves instead of being deleted and listed anew.
            gone_ids: dict[str, tuple[str, int, str]] = {}
            for folded, (ino, nm) in local.items():
                if folded not in listed:
                    r = self.get(ino, tx.txn)
                    if r is not None and r.file_id and r.remote_size is not None:
                        gone_ids[r.file_id] = (folded, ino, nm)
            seen: set[str] = set()
            for e in entries:
                folded = names.fold(e.name)
                if folded in seen:
                    continue
                seen.add(folded)
                meta = metas.get(e.name)
                have = local.get(folded)
                moved = gone_ids.pop(e.file_id, None) if have is None and e.file_id else None
                if moved is not None and busy(moved[1]):
                    if names.looks_like_conflict_copy(e.name, moved[2]):
                        # another site moved this version aside in a conflict: the edits
                        # here stay under the name (their upload resolves it there)
                        moved = None
                if moved is not None and not (
                    queued(moved[1])
                    or self._busy_below(tx.txn, self.must(moved[1], tx.txn), queued)
                ):
                    old_folded, ino, old_name = moved
                    mrec = self.must(ino, tx.txn)
                    if mrec.is_dir == e.is_dir:
                        self._del_dentry(tx, dir_ino, old_name)
                        self._add_dentry(tx, dir_ino, e.name, ino)
                        mrec.name = e.name
                        self._followed(mrec, e, busy)
                        local.pop(old_folded, None)
                        local[folded] = (ino, e.name)
                        have = (ino, e.name)
                        res.renamed.append((old_name, ino))
                        self._put(tx, mrec)
                elif have is None and e.file_id:
                    came = self._moved_here(tx, dir_ino, e, queued, busy)
                    if came is not None:
                        old_parent, old_name, ino = came
                        local[folded] = have = (ino, e.name)
                        res.moved_in.append((old_parent, old_name, ino))
                rec = self.get(have[0], tx.txn) if have else None
                if rec is not None and (rec.is_dir != e.is_dir):
                    assert have is not None
                    if busy(rec.ino) or self._busy_below(tx.txn, rec, busy):
                        continue
                    self._del_dentry(tx, dir_ino, have[1])
                    res.removed.append((have[1], rec.ino))
                    res.purged += self._orphan_tree(tx, rec, referenced)
                    rec = None
                if rec is None:
                    rec = Inode(
                        self._new_ino(),
                        dir_ino,
                        e.name,
                        DIR if e.is_dir else FILE,
                        mode=0o755 if e.is_dir else 0o644,
                        uid=self.uid,
                        gid=self.gid,
                        meta_known=False,
                    )
                    self._fill(rec, e, meta)
                    self._put(tx, rec)
                    self._index_fid(tx, rec)
                    self._add_dentry(tx, dir_ino, e.name, rec.ino)
                    res.added.append(rec.ino)
                    continue
                if busy(rec.ino):
                    continue
                content_changed = not rec.is_dir and (
                    e.etag != rec.etag
                    and (
                        e.size != rec.remote_size
                        or e.last_write_ns != rec.mtime_ns
                        or (e.file_id and e.file_id != rec.file_id)
                    )
                )
                if content_changed and in_use(rec.ino):
                    continue
                if e.etag != rec.etag or not rec.meta_known or meta is not None:
                    fid = rec.file_id
                    self._fill(rec, e, meta)
                    if content_changed:
                        rec.cver += 1
                        res.changed.append(rec)
                    self._put(tx, rec)
                    if rec.file_id != fid:
                        self._index_fid(tx, rec)
            for folded, (ino, nm) in local.items():
                if folded in seen:
                    continue
                gone = self.get(ino, tx.txn)
                if gone is None:
                    self._del_dentry(tx, dir_ino, nm)
                    continue
                if gone.remote_size is None:
                    continue  # created here, not on the share yet
                if busy(ino) or self._busy_below(tx.txn, gone, busy):
                    continue
                self._del_dentry(tx, dir_ino, nm)
                res.removed.append((nm, ino))
                res.purged += self._orphan_tree(tx, gone, referenced)
            drec.listed_ns = now
            if tx.changed:
                self._put(tx, drec)
            else:  # nothing else changed: the time of the listing is write-behind
                self._pending[dir_ino] = drec
                self._lru.pop(dir_ino, None)
        return res

    def refresh_entry(
        self, ino: int, entry: RemoteEntry, busy: Callable[[int], bool]
    ) -> Inode | None:
        """Take a fresh `stat` of one entry (close-to-open). Returns the record when the
        share's content changed under us (its cver is bumped), else None. Busy entries keep
        their local state."""
        with self._write() as tx:
            rec = self.get(ino, tx.txn)
            if rec is None or rec.is_dir or busy(ino) or entry.is_dir:
                return None
            changed = entry.etag != rec.etag and (
                entry.size != rec.remote_size
                or entry.last_write_ns != rec.mtime_ns
                or (entry.file_id and entry.file_id != rec.file_id)
            )
            if entry.etag == rec.etag:
                return None
            self._fill(rec, entry, entry if entry.metadata is not None else None)
            if changed:
                rec.cver += 1
            self._put(tx, rec)
        return rec if changed else None

    def dirs_after(self, after: int, scan: int) -> tuple[list[int], int]:
        """Listed directories with inode numbers above `after`, reading at most `scan`
        records: (directories, where to go on; 0 when the table ended). The poller's sweep."""
        out: list[int] = []
        last = 0
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db_inodes)
            if not cur.set_range(_k(after + 1)):
                return out, 0
            for n, (key, raw) in enumerate(cur):
                if n >= scan:
                    return out, last
                last = _n(key)
                if b'"k":"d"' in raw:
                    rec = Inode.decode(last, raw)
                    if rec.listed_ns and rec.parent != 0:
                        out.append(last)
        return out, 0

    def _fill(self, rec: Inode, e: RemoteEntry, meta: RemoteEntry | None) -> None:
        """Take size, times, identity and attributes from the share: from `meta` (a `stat`,
        metadata included) when given; else an entry without the POSIX marker has the
        default attributes, and a marked one keeps what it had until it is `stat`ed."""
        src = meta or e
        old_etag = rec.etag
        rec.attrs = src.attributes or rec.attrs
        if meta is not None and meta.metadata is not None:
            rec.apply_metadata(meta.metadata, self.owner)
        elif has_marker(src.attributes) is False:
            rec.apply_defaults(self.owner)
            rec.extra_known = False
        elif old_etag != src.etag:
            rec.meta_known = False  # marked (or unknown) and changed: the next listing stats it
        rec.extra = dosattrib.follow(rec.extra, rec.attrs)  # a Windows client's change shows
        rec.size = 0 if rec.is_dir else src.size
        rec.remote_size = rec.size
        rec.file_id = src.file_id or rec.file_id
        rec.etag = src.etag
        rec.base_lw = src.last_write_ns
        if src.last_write_ns:
            rec.mtime_ns = src.last_write_ns
        rec.ctime_ns = src.change_ns or rec.mtime_ns
        if rec.kind == LINK and rec.etag != old_etag:
            rec.target = None  # read again on readlink

    def _followed(self, rec: Inode, e: RemoteEntry, busy: Callable[[int], bool]) -> None:
        """`rec` was renamed on the share to entry `e`. A dirty file's base version is the
        renamed file if nothing but the name changed (the service gives it a new ETag)."""
        if (
            busy(rec.ino)
            and not rec.is_dir
            and rec.base_lw
            and e.size == rec.remote_size
            and e.last_write_ns == rec.base_lw
        ):
            rec.etag = e.etag

    def _moved_here(
        self,
        tx: _Tx,
        dir_ino: int,
        e: RemoteEntry,
        queued: Callable[[int], bool],
        busy: Callable[[int], bool],
    ) -> tuple[int, str, int] | None:
        """An entry new here whose FileId a live inode of another directory has: it was
        moved on the share. Moves the inode here; returns (old parent, old name, ino)."""
        if not e.file_id:
            return None
        raw = tx.txn.get(e.file_id.encode(), db=self.db_fileids)
        if raw is None:
            return None
        ino = _n(raw)
        rec = self.get(ino, tx.txn)
        if (
            rec is None
            or rec.file_id != e.file_id  # a stale index entry
            or rec.parent in (0, dir_ino)
            or rec.is_dir != e.is_dir
            or rec.remote_size is None
            or queued(ino)
            or self._busy_below(tx.txn, rec, queued)
            or (rec.is_dir and self._is_ancestor(tx.txn, ino, dir_ino))
        ):
            return None
        old_parent, old_name = rec.parent, rec.name
        self._del_dentry(tx, old_parent, old_name)
        self._add_dentry(tx, dir_ino, e.name, ino)
        rec.parent, rec.name = dir_ino, e.name
        self._followed(rec, e, busy)
        self._put(tx, rec)
        return old_parent, old_name, ino

    def _busy_below(self, txn: Txn, rec: Inode, busy: Callable[[int], bool]) -> bool:
        if not rec.is_dir:
            return False
        stack = [rec.ino]
        while stack:
            cur = stack.pop()
            prefix = _k(cur)
            c = txn.cursor(db=self.db_order)
            if not c.set_range(prefix):
                continue
            for key, val in c:
                if not key.startswith(prefix):
                    break
                child = _n(val[:8])
                if busy(child):
                    return True
                stack.append(child)
        return False
