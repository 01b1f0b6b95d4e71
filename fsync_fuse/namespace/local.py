"""Local changes: the kernel's create, remove, rename and attribute requests.

Each changes the tables and appends its share operation to the outbox in one transaction
(tables.py); writes and truncates only grow write-behind records (`wrote`). The write-back's
operation worker reports what it applied with `ops_done`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from fsync_fuse import names
from fsync_fuse.attrs import DIR, FILE, LINK, SPECIAL, Inode
from fsync_fuse.namespace.orphans import Orphans
from fsync_fuse.namespace.tables import HIDDEN_PREFIX, NEW_PREFIX, ROOT, FsError, _k, _n, _Tx
from fsync_fuse.outbox import CREATE_OPS
from remote import naming

if TYPE_CHECKING:
    from fsync_fuse.namespace.tables import Txn

log = logging.getLogger(__name__)


class LocalChanges(Orphans):
    def _collision(self, parent: int, name: str, existing: str) -> FsError:
        if existing != name:
            log.warning(
                "refusing %r: the share already holds %r in that directory and compares "
                "names ignoring case",
                name,
                existing,
            )
        return FsError(errno.EEXIST)

    def create(
        self,
        parent: int,
        name: str,
        kind: str,
        mode: int,
        uid: int,
        gid: int,
        target: str | None = None,
        rdev: int = 0,
        *,
        staged: bool = False,
    ) -> Inode:
        """create / mkdir / symlink / mknod: a new entry, queued for the share. `staged`
        (a regular file created open, whose close commits): durable with that commit, one
        synced transaction per file instead of two (tables.py `_stage`)."""
        names.check(name)
        now = self.clock()
        with self._stage() if staged and kind == FILE else self._write() as tx:
            pdir = self._parent_dir(tx, parent)
            d = self._dentry(tx.txn, parent, name)
            if d is not None:
                raise self._collision(parent, name, d[2])
            ppath = self.path(parent, tx.txn)
            path = f"{ppath}/{name}" if ppath else name
            ino = self._new_ino()
            self._check_path(path, tmp=None if kind == DIR else self.new_name(ino))
            rec = Inode(
                ino,
                parent,
                name,
                kind,
                mtime_ns=now,
                ctime_ns=now,
                mode=mode & 0o7777,
                uid=uid,
                gid=gid,
            )
            if kind == LINK:
                rec.target = target or ""
                rec.size = len(rec.target.encode())
            if kind in SPECIAL:
                rec.rdev = rdev
            if kind == DIR:
                rec.listed_ns = now  # a new directory is empty: its listing is complete
            self._put(tx, rec)
            self._add_dentry(tx, parent, name, rec.ino, rec.is_dir)
            self._touch_dir(tx, pdir, now)
            op = {
                "op": {FILE: "create", DIR: "mkdir", LINK: "symlink"}.get(kind, "special"),
                "ino": rec.ino,
                "dirs": [parent],
                "path": path,
                "meta": rec.metadata(self.owner),
                "mtime": now,
            }
            if kind == LINK:
                op["target"] = rec.target
            self._enqueue(tx, op)
        return rec

    def _check_path(self, path: str, *, tmp: str | None, below: tuple[int, int] = (0, 0)) -> None:
        """ENAMETOOLONG for a path the share cannot hold (names.path_refusal)."""
        why = names.path_refusal(path.split("/"), tmp=tmp, below=below)
        if why:
            log.warning("refusing %r: %s", path, why)
            raise FsError(errno.ENAMETOOLONG, why)

    def _below(self, txn: Txn, ino: int) -> tuple[int, int]:
        """(path units, levels) the deepest entries below directory `ino` add to its path."""
        worst_units = worst_depth = 0
        stack = [(ino, 0, 0)]
        while stack:
            cur, units, depth = stack.pop()
            prefix = _k(cur)
            c = txn.cursor(db=self.db_order)
            if not c.set_range(prefix):
                continue
            for key, val in c:
                if not key.startswith(prefix):
                    break
                child = self.get(_n(val[:8]), txn)
                if child is None:
                    continue
                tmp = None if child.is_dir else self.new_name(child.ino)
                u = units + names.entry_units(val[8:].decode(), tmp)
                worst_units, worst_depth = max(worst_units, u), max(worst_depth, depth + 1)
                if child.is_dir:
                    stack.append((child.ino, u, depth + 1))
        return worst_units, worst_depth

    def remove(
        self,
        parent: int,
        name: str,
        *,
        is_dir: bool,
        referenced: Callable[[int], bool],
        is_open: Callable[[int], bool] = lambda ino: False,
    ) -> tuple[Inode, bool]:
        """unlink / rmdir. Returns the inode and whether it was deleted for good (the caller
        then drops its cached content); otherwise it lives on as an orphan. An `is_open`
        file keeps its share content under a hidden name until purged (`_remove_op`)."""
        now = self.clock()
        purged: list[int] = []
        with self._write() as tx:
            pdir = self._parent_dir(tx, parent)
            d = self._dentry(tx.txn, parent, name)
            if d is None or d[2] != name:
                raise FsError(errno.ENOENT)
            rec = self.must(d[0], tx.txn)
            if is_dir and not rec.is_dir:
                raise FsError(errno.ENOTDIR)
            if not is_dir and rec.is_dir:
                raise FsError(errno.EISDIR)
            if rec.is_dir and not self._empty_in(tx.txn, rec.ino):
                raise FsError(errno.ENOTEMPTY)
            path = self.path(rec.ino, tx.txn)
            assert path is not None  # linked: found by its name
            self._del_dentry(tx, parent, name, rec.is_dir)
            self._touch_dir(tx, pdir, now)
            hidden = self._remove_op(tx, rec, parent, path, is_open)
            rec.ctime_ns = now
            self._drop(tx, rec, referenced, purged, hidden)
        return rec, bool(purged)

    def _remove_op(
        self, tx: _Tx, rec: Inode, parent: int, path: str, is_open: Callable[[int], bool]
    ) -> str:
        """Queue the share side of removing `rec` from `path`. A file on the share that is
        still open is renamed aside to a hidden name instead, so reads of parts never cached
        still find it; `purge` deletes it. Returns the hidden path ('' when deleted at once)."""
        if rec.kind == FILE and rec.remote_size is not None and is_open(rec.ino):
            hidden = f"{HIDDEN_PREFIX}{rec.ino}"
            self._enqueue(
                tx,
                {
                    "op": "rename",
                    "ino": rec.ino,
                    "dirs": sorted({parent, ROOT}),
                    "src": path,
                    "dst": hidden,
                    "replace": True,
                    "victim": None,
                },
            )
            return hidden
        if (not rec.is_dir or not self.outbox.has_child_ops(rec.ino)) and self._take_create(
            tx, rec.ino
        ):
            return ""  # created and removed before the share saw it: nothing to send
        self._enqueue(
            tx,
            {
                "op": "rmdir" if rec.is_dir else "unlink",
                "ino": rec.ino,
                "dirs": [parent],
                "path": path,
            },
        )
        return ""

    def new_name(self, ino: int) -> str:
        """The name a new file has on the share before it takes its own (NEW_PREFIX)."""
        return f"{NEW_PREFIX}{self.site_id}-{ino}"

    def new_path(self, path: str, ino: int) -> str:
        """Where a new file is created on the share before it takes its name."""
        parent = path.rpartition("/")[0]
        name = self.new_name(ino)
        return f"{parent}/{name}" if parent else name

    def rename(
        self,
        old_parent: int,
        old_name: str,
        new_parent: int,
        new_name: str,
        *,
        noreplace: bool,
        referenced: Callable[[int], bool],
        is_open: Callable[[int], bool] = lambda ino: False,
    ) -> tuple[Inode, Inode | None, bool]:
        """Returns (moved inode, replaced inode or None, replaced one deleted for good)."""
        names.check(new_name)
        now = self.clock()
        purged: list[int] = []
        with self._write() as tx:
            opdir = self._parent_dir(tx, old_parent)
            npdir = opdir if new_parent == old_parent else self._parent_dir(tx, new_parent)
            src = self._dentry(tx.txn, old_parent, old_name)
            if src is None or src[2] != old_name:
                raise FsError(errno.ENOENT)
            rec = self.must(src[0], tx.txn)
            dst = self._dentry(tx.txn, new_parent, new_name)
            victim: Inode | None = None
            if dst is not None and dst[0] == rec.ino:
                if new_name == old_name:
                    return rec, None, False  # rename onto itself: nothing to do
                # a change of case only: the same entry on a case-insensitive share
            elif dst is not None:
                if dst[2] != new_name:
                    raise self._collision(new_parent, new_name, dst[2])
                if noreplace:
                    raise FsError(errno.EEXIST)
                victim = self.must(dst[0], tx.txn)
                if rec.is_dir and not victim.is_dir:
                    raise FsError(errno.ENOTDIR)
                if not rec.is_dir and victim.is_dir:
                    raise FsError(errno.EISDIR)
                if victim.is_dir and not self._empty_in(tx.txn, victim.ino):
                    raise FsError(errno.ENOTEMPTY)
            if rec.is_dir and self._is_ancestor(tx.txn, rec.ino, new_parent):
                raise FsError(errno.EINVAL)
            src_path = self.path(rec.ino, tx.txn)
            assert src_path is not None  # linked: found by its name
            npath = self.path(new_parent, tx.txn)
            new_path = f"{npath}/{new_name}" if npath else new_name
            longer = len(new_path.split("/")) > len(src_path.split("/")) or naming.path_units(
                new_path.split("/")
            ) > naming.path_units(src_path.split("/"))
            if longer:  # a shorter path cannot push anything over the share's limits
                below = self._below(tx.txn, rec.ino) if rec.is_dir else (0, 0)
                tmp = None if rec.is_dir else self.new_name(rec.ino)
                self._check_path(new_path, tmp=tmp, below=below)
            replace = False
            if victim is not None:
                vpath = self.path(victim.ino, tx.txn)
                assert vpath is not None  # linked: found by its name
                self._del_dentry(tx, new_parent, new_name, victim.is_dir)
                hidden = ""
                if victim.is_dir:
                    # The share renames onto files only: remove the empty directory first.
                    self._enqueue(
                        tx, {"op": "rmdir", "ino": victim.ino, "dirs": [new_parent], "path": vpath}
                    )
                elif victim.remote_size is not None and is_open(victim.ino):
                    hidden = self._remove_op(tx, victim, new_parent, vpath, is_open)
                else:
                    replace = True
                victim.ctime_ns = now
                self._drop(tx, victim, referenced, purged, hidden)
            self._del_dentry(tx, old_parent, old_name, rec.is_dir)
            self._add_dentry(tx, new_parent, new_name, rec.ino, rec.is_dir)
            rec.parent, rec.name, rec.ctime_ns = new_parent, new_name, now
            self._put(tx, rec)
            self._touch_dir(tx, opdir, now)
            if npdir is not opdir:
                self._touch_dir(tx, npdir, now)
            dst_path = self.path(rec.ino, tx.txn)
            assert dst_path is not None
            # a file replaced that never reached the share needs nothing sent
            vmade = self._take_create(tx, victim.ino) if replace and victim else None
            made = None if rec.is_dir else self._take_create(tx, rec.ino)
            if made is not None:
                # not on the share yet: it is created where it is now (an editor's save, a
                # temporary file renamed over its file, costs one create). It replaces
                # there what the file it replaces here would have (nothing when that one
                # was new: a name taken meanwhile elsewhere is then kept, never overwritten).
                if vmade is not None:
                    made.update(replace=vmade.get("replace", False), victim=vmade.get("victim"))
                else:
                    made.update(replace=replace, victim=victim.ino if victim else None)
                made.update(dirs=[new_parent], path=dst_path)
                self._enqueue(tx, made)
            else:
                self._enqueue(
                    tx,
                    {
                        "op": "rename",
                        "ino": rec.ino,
                        "dirs": sorted({old_parent, new_parent}),
                        "src": src_path,
                        "dst": dst_path,
                        "replace": replace,
                        "victim": victim.ino if victim else None,
                    },
                )
        return rec, victim, bool(purged)

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        size: int | None = None,
        extra: dict[str, str] | None = None,
        queue: bool = True,
    ) -> Inode:
        """chmod/chown/utimens and extended attributes (`extra`: the metadata keys beside
        the POSIX ones, xattrs.py) are queued for the share (unless `queue` is False: a
        regular file's upload carries them); a size change is content (the write-back
        uploads it) and only recorded here."""
        now = self.clock()
        if not queue:
            # Nothing to queue: keep it with the write-behind records (durable at the next
            # commit point, like the data of the file it describes).
            rec = self.must(ino)
            self._apply_attrs(rec, mode, uid, gid, mtime_ns, atime_ns, size, extra, now)
            self._pending[ino] = rec
            self._dir_changed(rec.parent, subdirs=False)
            self._lru.pop(ino, None)
            return rec.clone()
        with self._write() as tx:
            rec = self.must(ino, tx.txn)
            visible = self._apply_attrs(rec, mode, uid, gid, mtime_ns, atime_ns, size, extra, now)
            if mtime_ns is not None:
                mtime_ns = rec.mtime_ns
            self._put(tx, rec)
            # a create not begun yet sends the entry as it is then: nothing more to queue
            if visible and rec.parent != 0 and self.outbox.foldable_create(ino) is None:
                op = {
                    "op": "setattr",
                    "ino": ino,
                    "dirs": [],
                    "path": self.path(ino, tx.txn),
                    "meta": rec.metadata(self.owner),
                }
                if mtime_ns is not None:
                    op["mtime"] = mtime_ns
                self._enqueue(tx, op)
        return rec

    @staticmethod
    def _apply_attrs(
        rec: Inode,
        mode: int | None,
        uid: int | None,
        gid: int | None,
        mtime_ns: int | None,
        atime_ns: int | None,
        size: int | None,
        extra: dict[str, str] | None,
        now: int,
    ) -> bool:
        """Change the record; True when something the share shows changed."""
        visible = False
        if extra is not None and extra != rec.extra:
            rec.extra, visible = dict(extra), True
        if mode is not None and mode & 0o7777 != rec.mode:
            rec.mode, visible = mode & 0o7777, True
        if uid is not None and uid != rec.uid:
            rec.uid, visible = uid, True
        if gid is not None and gid != rec.gid:
            rec.gid, visible = gid, True
        if mtime_ns is not None:
            mtime_ns = mtime_ns // 100 * 100
            rec.mtime_ns, visible = mtime_ns, True
        if atime_ns is not None:
            rec.atime_ns, visible = atime_ns // 100 * 100, True
        if size is not None and size != rec.size:
            rec.size = size
            if mtime_ns is None:
                rec.mtime_ns = now
        rec.ctime_ns = now
        return visible

    def wrote(self, ino: int, end: int) -> Inode:
        """Record a local write ending at `end`: size grows, mtime moves. Kept in memory
        until the next transaction or `flush` (every LMDB commit is an fdatasync, too much
        for every write); the cache's data is only durable at a commit point anyway."""
        rec = self.must(ino)
        if end > rec.size:
            rec.size = end
        rec.mtime_ns = rec.ctime_ns = self.clock()
        self._pending[ino] = rec
        self._dir_changed(rec.parent, subdirs=False)
        return rec

    def detach(self, ino: int, new_name: str, **fields: object) -> tuple[int, str] | None:
        """Give an inode a new name in its directory without queueing anything (a conflict
        copy the uploader already made on the share). Returns (parent, old name)."""
        with self._write() as tx:
            rec = self.get(ino, tx.txn)
            if rec is None or rec.parent == 0:
                return None
            old = rec.name
            self._del_dentry(tx, rec.parent, old)
            self._add_dentry(tx, rec.parent, new_name, ino)
            rec.name = new_name
            for k, v in fields.items():
                setattr(rec, k, v)
            self._put(tx, rec)
            return rec.parent, old

    # ------------------------------------------------------------------ the write-back worker
    def ops_done(self, done: list[tuple[int, dict, dict | None]]) -> None:
        """The worker applied these operations on the share, in order: drop them from the
        outbox and record what the share answered (new file's id, etag), in one transaction:
        the worker applies independent operations side by side, and all that just ended share
        one synced commit."""
        with self._write() as tx:
            for seq, op, result in done:
                self.outbox.remove(tx.txn, seq)
                ino = op.get("ino")
                rec = self.get(ino, tx.txn) if ino else None
                if rec is not None and op["op"] in CREATE_OPS:
                    # No result: the op was dropped, nothing is on the share; remote_size
                    # stays None so the uploader (or a later listing) never takes it as present.
                    if result is not None:
                        rec.remote_size = result.get("size", 0)
                        rec.file_id = result.get("file_id") or rec.file_id
                        rec.etag = result.get("etag") or rec.etag
                        rec.attrs = result.get("attrs") or rec.attrs
                        rec.base_lw = result.get("lw") or rec.base_lw
                        self._put(tx, rec)
                        self._index_fid(tx, rec)
                elif rec is not None and result and result.get("etag"):
                    rec.etag = result["etag"]
                    rec.attrs = result.get("attrs") or rec.attrs
                    rec.base_lw = result.get("lw") or rec.base_lw
                    self._put(tx, rec)
        for seq, op, _result in done:
            self.outbox.removed(seq, op)
