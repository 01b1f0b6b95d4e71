"""The inode and directory-entry tables, kept in the cache's LMDB environment.

A million-entry share must fit in a small daemon, so nothing here holds all entries in memory:
every lookup is an LMDB read. Tables (named databases):

- `inodes`:   ino → Inode record (attrs.py), JSON.
- `dentries`: parent ino + folded name → child ino, entry id, exact name. Folding makes a
              case-only collision a key collision, as on the share.
- `dirorder`: parent ino + entry id → child ino, exact name. readdir walks this in id order;
              ids are never reused, so `id + 3` is a stable readdir offset.
- `nsmeta`:   counters (next inode number, next entry id).
- `orphans`:  inodes unlinked while the kernel or an open handle still refers to them; purged
              when released, or at the next start.

Every mutating operation changes the tables *and* appends its share operation to the outbox in
one write transaction, so after a crash the two always agree. Transactions never span an await.
"""

from __future__ import annotations

import errno
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import lmdb

from fsync_fuse import names
from fsync_fuse.attrs import DIR, FILE, LINK, Inode, has_marker
from fsync_fuse.outbox import Outbox

log = logging.getLogger(__name__)

ROOT = 1  # pyfuse3.ROOT_INODE
# A file removed while still open is renamed aside on the share under this prefix (at the
# share root) so its readers can finish it; deleted when the inode is purged (S2-1).
HIDDEN_PREFIX = ".fsync-unlinked-"
# A new file is created on the share under this prefix (plus this cache's id and the inode),
# filled, then renamed to its name without replacing anything: a file of that name created
# elsewhere meanwhile is never overwritten, and other sites never see it half written.
NEW_PREFIX = ".fsync-new-"


def is_hidden(name: str) -> bool:
    """Names of our own bookkeeping on the share, never shown in listings."""
    return name.startswith(HIDDEN_PREFIX) or name.startswith(NEW_PREFIX)


class FsError(OSError):
    """A local operation that cannot be done: carries the errno to answer the kernel."""

    def __init__(self, err: int, msg: str = "") -> None:
        super().__init__(err, msg or errno.errorcode.get(err, str(err)))


def _k(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _n(b: bytes) -> int:
    return int.from_bytes(b[:8], "big")


@dataclass
class _Tx:
    """One write transaction plus the outbox operations it appended."""

    txn: lmdb.Transaction
    ops: list[dict] = field(default_factory=list)
    records: dict[int, Inode | None] = field(default_factory=dict)  # for the LRU, at commit
    changed: bool = False  # something was written (set by the helpers below)
    discard_unchanged: bool = False  # abort instead of committing when nothing changed


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


class Namespace:
    #: decoded records kept in memory (a few MB at most; the table itself stays in LMDB)
    LRU_SIZE = 16384

    def __init__(
        self,
        env: lmdb.Environment,
        *,
        uid: int = 0,
        gid: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.env = env
        self.uid, self.gid = uid, gid
        #: who owns entries without POSIX metadata (attrs.py): the mounting user
        self.owner = (uid, gid)
        # The share keeps times in 100 ns ticks: keep ours on the same grid so a time
        # read back from the share equals the one we set.
        self.clock = lambda: clock() // 100 * 100
        self.db_inodes = env.open_db(b"inodes")
        self.db_dentries = env.open_db(b"dentries")
        self.db_order = env.open_db(b"dirorder")
        self.db_meta = env.open_db(b"nsmeta")
        self.db_orphans = env.open_db(b"orphans")
        self.db_fileids = env.open_db(b"fileids")
        self.outbox = Outbox(env)
        self._pending: dict[int, Inode] = {}  # write-behind records (see `wrote`)
        #: write-behind records of other modules in this env: (db, key) -> value or None
        #: (delete); written by the next transaction or `flush`, like `_pending`
        self.deferred: dict[tuple[object, bytes], bytes | None] = {}
        self._lru: OrderedDict[int, Inode] = OrderedDict()  # recently read records
        #: called with a directory's inode whenever one of its entries or a child's record
        #: changes (before the change is visible): readdir answers built earlier are stale
        self.on_dir_change: Callable[[int], None] = lambda ino: None
        with env.begin(write=True) as txn:
            self._next_ino = _n(txn.get(b"next_ino", db=self.db_meta) or _k(ROOT + 1))
            self._next_dent = _n(txn.get(b"next_dent", db=self.db_meta) or _k(1))
            sid = txn.get(b"site_id", db=self.db_meta)
            if sid is None:
                sid = secrets.token_hex(6).encode()
                txn.put(b"site_id", sid, db=self.db_meta)
            #: this cache's random id: names of our temporary files on the share
            self.site_id = sid.decode()
            if txn.get(_k(ROOT), db=self.db_inodes) is None:
                now = self.clock()
                root = Inode(
                    ROOT,
                    ROOT,
                    "",
                    DIR,
                    mtime_ns=now,
                    ctime_ns=now,
                    mode=0o755,
                    uid=uid,
                    gid=gid,
                    remote_size=0,
                    meta_known=False,
                )
                txn.put(_k(ROOT), root.encode(), db=self.db_inodes)

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _write(self, *, discard_unchanged: bool = False) -> Iterator[_Tx]:
        tx = _Tx(self.env.begin(write=True), discard_unchanged=discard_unchanged)
        try:
            yield tx
        except BaseException:
            tx.txn.abort()
            raise
        if tx.discard_unchanged and not tx.changed:
            # a listing that changed nothing: no synced commit for it (write-behind records
            # it left in `_pending` go with the next transaction)
            tx.txn.abort()
            return
        for rec in self._pending.values():
            tx.txn.put(_k(rec.ino), rec.encode(), db=self.db_inodes)
            tx.records[rec.ino] = rec
        self._pending.clear()
        for (db, key), value in self.deferred.items():
            if value is None:
                tx.txn.delete(key, db=db)
            else:
                tx.txn.put(key, value, db=db)
        self.deferred.clear()
        tx.txn.put(b"next_ino", _k(self._next_ino), db=self.db_meta)
        tx.txn.put(b"next_dent", _k(self._next_dent), db=self.db_meta)
        tx.txn.commit()
        for ino, rec in tx.records.items():
            if rec is None:
                self._lru.pop(ino, None)
            else:
                self._remember(ino, rec)
        self.outbox.added(tx.ops)

    def _enqueue(self, tx: _Tx, op: dict) -> None:
        self.outbox.append(tx.txn, op)
        tx.ops.append(op)

    # ------------------------------------------------------------------ reading
    def get(self, ino: int, txn: lmdb.Transaction | None = None) -> Inode | None:
        pending = self._pending.get(ino)
        if pending is not None:
            return pending.clone()
        if txn is None:
            hit = self._lru.get(ino)
            if hit is not None:
                self._lru.move_to_end(ino)
                return hit.clone()
            with self.env.begin() as t:
                raw = t.get(_k(ino), db=self.db_inodes)
            if raw is None:
                return None
            rec = Inode.decode(ino, raw)
            self._remember(ino, rec.clone())
            return rec
        # inside a transaction LMDB is the truth: it sees this transaction's own writes
        raw = txn.get(_k(ino), db=self.db_inodes)
        return Inode.decode(ino, raw) if raw is not None else None

    def _remember(self, ino: int, rec: Inode) -> None:
        self._lru[ino] = rec
        self._lru.move_to_end(ino)
        if len(self._lru) > self.LRU_SIZE:
            self._lru.popitem(last=False)

    def must(self, ino: int, txn: lmdb.Transaction | None = None) -> Inode:
        rec = self.get(ino, txn)
        if rec is None:
            raise FsError(errno.ENOENT)
        return rec

    def _dentry(self, txn: lmdb.Transaction, parent: int, name: str) -> tuple[int, int, str] | None:
        raw = txn.get(names.dentry_key(parent, name), db=self.db_dentries)
        if raw is None:
            return None
        return _n(raw[:8]), _n(raw[8:16]), raw[16:].decode()

    def find(self, parent: int, name: str) -> tuple[int, str] | None:
        """The entry whose name equals `name` ignoring case: (ino, exact name)."""
        with self.env.begin() as txn:
            d = self._dentry(txn, parent, name)
        return (d[0], d[2]) if d else None

    def entry_id(self, parent: int, name: str) -> int | None:
        """The entry id (readdir order) of a directory entry."""
        with self.env.begin() as txn:
            d = self._dentry(txn, parent, name)
        return d[1] if d else None

    def lookup(self, parent: int, name: str) -> Inode | None:
        """The entry named exactly `name` (lookups are case-sensitive; creates are not)."""
        with self.env.begin() as txn:
            d = self._dentry(txn, parent, name)
            if d is None or d[2] != name:
                return None
            return self.get(d[0], txn)

    def children(
        self, parent: int, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, Inode]]:
        """Entries of a directory in entry-id order, starting after `after_id`."""
        out: list[tuple[int, str, Inode]] = []
        prefix = _k(parent)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db_order)
            if not cur.set_range(prefix + _k(after_id + 1)):
                return out
            for key, val in cur:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                rec = self.get(_n(val[:8]), txn)
                if rec is not None:
                    out.append((_n(key[8:16]), val[8:].decode(), rec))
        return out

    def count_children(self, parent: int, limit: int) -> int:
        """How many entries a directory has, counting at most `limit`."""
        prefix = _k(parent)
        n = 0
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db_order)
            if not cur.set_range(prefix):
                return 0
            for key in cur.iternext(values=False):
                if not key.startswith(prefix) or n >= limit:
                    break
                n += 1
        return n

    def is_empty(self, parent: int) -> bool:
        prefix = _k(parent)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db_order)
            return not (cur.set_range(prefix) and cur.key().startswith(prefix))

    def chain(self, ino: int, txn: lmdb.Transaction | None = None) -> list[int] | None:
        """The inode and its ancestors up to the root; None if it is unlinked."""
        out = []
        cur = ino
        for _ in range(4096):
            out.append(cur)
            if cur == ROOT:
                return out
            rec = self.get(cur, txn)
            if rec is None or rec.parent == 0:
                return None
            cur = rec.parent
        raise FsError(errno.ELOOP, "directory chain too deep")

    def path(self, ino: int, txn: lmdb.Transaction | None = None) -> str | None:
        """The share-relative path of an inode ('' for the root); None if it is unlinked."""
        parts: list[str] = []
        cur = ino
        for _ in range(4096):
            if cur == ROOT:
                return "/".join(reversed(parts))
            rec = self.get(cur, txn)
            if rec is None or rec.parent == 0:
                return None
            parts.append(rec.name)
            cur = rec.parent
        raise FsError(errno.ELOOP, "directory chain too deep")

    def all_inodes(self) -> Iterator[Inode]:
        """Every record (tests and consistency checks only: this reads the whole table)."""
        with self.env.begin() as txn:
            for key, raw in txn.cursor(db=self.db_inodes):
                yield Inode.decode(_n(key), raw)

    # ------------------------------------------------------------------ low-level writes
    def _put(self, tx: _Tx, rec: Inode) -> None:
        tx.changed = True
        self.on_dir_change(rec.parent)
        self._pending.pop(rec.ino, None)
        tx.records[rec.ino] = rec.clone()
        tx.txn.put(_k(rec.ino), rec.encode(), db=self.db_inodes)

    def _add_dentry(self, tx: _Tx, parent: int, name: str, ino: int) -> None:
        tx.changed = True
        self.on_dir_change(parent)
        dent = self._next_dent
        self._next_dent += 1
        tx.txn.put(
            names.dentry_key(parent, name), _k(ino) + _k(dent) + name.encode(), db=self.db_dentries
        )
        tx.txn.put(_k(parent) + _k(dent), _k(ino) + name.encode(), db=self.db_order)

    def _del_dentry(self, tx: _Tx, parent: int, name: str) -> None:
        key = names.dentry_key(parent, name)
        raw = tx.txn.get(key, db=self.db_dentries)
        if raw is None:
            return
        tx.changed = True
        self.on_dir_change(parent)
        tx.txn.delete(key, db=self.db_dentries)
        tx.txn.delete(_k(parent) + raw[8:16], db=self.db_order)

    def _new_ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _parent_dir(self, tx: _Tx, parent: int) -> Inode:
        rec = self.get(parent, tx.txn)
        if rec is None or (rec.parent == 0 and parent != ROOT):
            raise FsError(errno.ENOENT)
        if not rec.is_dir:
            raise FsError(errno.ENOTDIR)
        return rec

    def _touch_dir(self, tx: _Tx, rec: Inode, now: int) -> None:
        rec.mtime_ns = rec.ctime_ns = now
        self._put(tx, rec)

    def _drop(
        self,
        tx: _Tx,
        rec: Inode,
        referenced: Callable[[int], bool],
        purged: list[int],
        hidden: str = "",
    ) -> None:
        """An inode lost its entry: keep it as an orphan while referenced, else delete it.
        `hidden`: the share path its content was renamed aside to (see `_remove_op`)."""
        tx.changed = True
        if referenced(rec.ino):
            rec.parent = 0
            self._put(tx, rec)
            tx.txn.put(_k(rec.ino), hidden.encode(), db=self.db_orphans)
        else:
            self._pending.pop(rec.ino, None)
            tx.records[rec.ino] = None
            tx.txn.delete(_k(rec.ino), db=self.db_inodes)
            purged.append(rec.ino)

    def _collision(self, parent: int, name: str, existing: str) -> FsError:
        if existing != name:
            log.warning(
                "refusing %r: the share already holds %r in that directory and compares "
                "names ignoring case",
                name,
                existing,
            )
        return FsError(errno.EEXIST)

    # ------------------------------------------------------------------ operations
    def create(
        self,
        parent: int,
        name: str,
        kind: str,
        mode: int,
        uid: int,
        gid: int,
        target: str | None = None,
    ) -> Inode:
        """create / mkdir / symlink: a new entry, queued for the share."""
        names.check(name)
        now = self.clock()
        with self._write() as tx:
            pdir = self._parent_dir(tx, parent)
            d = self._dentry(tx.txn, parent, name)
            if d is not None:
                raise self._collision(parent, name, d[2])
            ppath = self.path(parent, tx.txn)
            path = f"{ppath}/{name}" if ppath else name
            rec = Inode(
                self._new_ino(),
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
            if kind == DIR:
                rec.listed_ns = now  # a new directory is empty: its listing is complete
            self._put(tx, rec)
            self._add_dentry(tx, parent, name, rec.ino)
            self._touch_dir(tx, pdir, now)
            op = {
                "op": {FILE: "create", DIR: "mkdir", LINK: "symlink"}[kind],
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
            self._del_dentry(tx, parent, name)
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

    def new_path(self, path: str, ino: int) -> str:
        """Where a new file is created on the share before it takes its name (NEW_PREFIX)."""
        parent = path.rpartition("/")[0]
        name = f"{NEW_PREFIX}{self.site_id}-{ino}"
        return f"{parent}/{name}" if parent else name

    def hidden_path(self, ino: int) -> str | None:
        """The share path an orphan's content was renamed aside to, if any."""
        with self.env.begin() as txn:
            raw = txn.get(_k(ino), db=self.db_orphans)
        return raw.decode() if raw else None

    def _empty_in(self, txn: lmdb.Transaction, ino: int) -> bool:
        prefix = _k(ino)
        cur = txn.cursor(db=self.db_order)
        return not (cur.set_range(prefix) and cur.key().startswith(prefix))

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
            replace = False
            if victim is not None:
                vpath = self.path(victim.ino, tx.txn)
                self._del_dentry(tx, new_parent, new_name)
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
            self._del_dentry(tx, old_parent, old_name)
            self._add_dentry(tx, new_parent, new_name, rec.ino)
            rec.parent, rec.name, rec.ctime_ns = new_parent, new_name, now
            self._put(tx, rec)
            self._touch_dir(tx, opdir, now)
            if npdir is not opdir:
                self._touch_dir(tx, npdir, now)
            dst_path = self.path(rec.ino, tx.txn)
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

    def _is_ancestor(self, txn: lmdb.Transaction, anc: int, ino: int) -> bool:
        chain = self.chain(ino, txn) or []
        return anc in chain

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        size: int | None = None,
        queue: bool = True,
    ) -> Inode:
        """chmod/chown/utimens are queued for the share (unless `queue` is False: a regular
        file's upload carries them); a size change is content (the write-back uploads it)
        and only recorded here."""
        now = self.clock()
        if not queue:
            # Nothing to queue: keep it with the write-behind records (durable at the next
            # commit point, like the data of the file it describes).
            rec = self.must(ino)
            self._apply_attrs(rec, mode, uid, gid, mtime_ns, size, now)
            self._pending[ino] = rec
            self.on_dir_change(rec.parent)
            self._lru.pop(ino, None)
            return rec.clone()
        with self._write() as tx:
            rec = self.must(ino, tx.txn)
            visible = self._apply_attrs(rec, mode, uid, gid, mtime_ns, size, now)
            if mtime_ns is not None:
                mtime_ns = rec.mtime_ns
            self._put(tx, rec)
            if visible and rec.parent != 0:
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
    def _apply_attrs(rec: Inode, mode, uid, gid, mtime_ns, size, now: int) -> bool:
        """Change the record; True when something the share shows changed."""
        visible = False
        if mode is not None and mode & 0o7777 != rec.mode:
            rec.mode, visible = mode & 0o7777, True
        if uid is not None and uid != rec.uid:
            rec.uid, visible = uid, True
        if gid is not None and gid != rec.gid:
            rec.gid, visible = gid, True
        if mtime_ns is not None:
            mtime_ns = mtime_ns // 100 * 100
            rec.mtime_ns, visible = mtime_ns, True
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
        self.on_dir_change(rec.parent)
        return rec

    def flush(self) -> None:
        """Persist what `wrote` kept in memory (before every cache commit)."""
        if self._pending or self.deferred:
            with self._write():
                pass

    def update(self, ino: int, **fields) -> Inode | None:
        """Local bookkeeping only (remote etag after an upload, a symlink target read...)."""
        with self._write() as tx:
            rec = self.get(ino, tx.txn)
            if rec is None:
                return None
            for k, v in fields.items():
                setattr(rec, k, v)
            self._put(tx, rec)
            if fields.get("file_id"):
                self._index_fid(tx, rec)
        return rec

    # ------------------------------------------------------------------ the write-back worker
    def op_done(self, seq: int, op: dict, result: dict | None = None) -> None:
        """The worker applied `op` on the share: drop it from the outbox and record what the
        share answered (new file's id, etag) in the same transaction."""
        self.ops_done([(seq, op, result)])

    def ops_done(self, done: list[tuple[int, dict, dict | None]]) -> None:
        """`op_done` for several operations, in order, in one transaction (the worker applies
        independent operations side by side: one synced commit for all that just ended)."""
        with self._write() as tx:
            for seq, op, result in done:
                self.outbox.remove(tx.txn, seq)
                ino = op.get("ino")
                rec = self.get(ino, tx.txn) if ino else None
                if rec is not None and op["op"] in ("create", "mkdir", "symlink"):
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
        for _seq, op, _result in done:
            self.outbox.removed(op)

    # ------------------------------------------------------------------ orphans
    def purge(self, ino: int) -> list[int]:
        """Delete an orphaned inode (and, for a directory, anything still below it)."""
        with self._write() as tx:
            rec = self.get(ino, tx.txn)
            if rec is None or rec.parent != 0 or ino == ROOT:
                return []
            hidden = tx.txn.get(_k(ino), db=self.db_orphans)
            if hidden:
                self._enqueue(
                    tx, {"op": "unlink", "ino": ino, "dirs": [ROOT], "path": hidden.decode()}
                )
            tx.txn.delete(_k(ino), db=self.db_orphans)
            return self._delete_tree(tx, ino)

    def _delete_tree(self, tx: _Tx, ino: int) -> list[int]:
        tx.changed = True
        gone: list[int] = []
        stack = [ino]
        while stack:
            cur = stack.pop()
            prefix = _k(cur)
            c = tx.txn.cursor(db=self.db_order)
            entries = []
            if c.set_range(prefix):
                for key, val in c:
                    if not key.startswith(prefix):
                        break
                    entries.append((_n(val[:8]), val[8:].decode()))
            for child, name in entries:
                self._del_dentry(tx, cur, name)
                stack.append(child)
            self._pending.pop(cur, None)
            tx.records[cur] = None
            tx.txn.delete(_k(cur), db=self.db_inodes)
            gone.append(cur)
        return gone

    def purge_orphans(self) -> list[int]:
        """At start nothing refers to orphans any more: delete them all."""
        with self.env.begin() as txn:
            orphans = [_n(k) for k, _ in txn.cursor(db=self.db_orphans)]
        gone: list[int] = []
        for ino in orphans:
            gone += self.purge(ino)
            with self._write() as tx:
                tx.txn.delete(_k(ino), db=self.db_orphans)
        return gone

    # ------------------------------------------------------------------ share listings
    def merge_listing(
        self,
        dir_ino: int,
        entries: list,
        metas: dict[str, object],
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
                    rec = self.must(ino, tx.txn)
                    if rec.is_dir == e.is_dir:
                        self._del_dentry(tx, dir_ino, old_name)
                        self._add_dentry(tx, dir_ino, e.name, ino)
                        rec.name = e.name
                        self._followed(rec, e, busy)
                        local.pop(old_folded, None)
                        local[folded] = (ino, e.name)
                        have = (ino, e.name)
                        res.renamed.append((old_name, ino))
                        self._put(tx, rec)
                elif have is None and e.file_id:
                    came = self._moved_here(tx, dir_ino, e, queued, busy)
                    if came is not None:
                        old_parent, old_name, ino = came
                        local[folded] = have = (ino, e.name)
                        res.moved_in.append((old_parent, old_name, ino))
                rec = self.get(have[0], tx.txn) if have else None
                if rec is not None and (rec.is_dir != e.is_dir):
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
                rec = self.get(ino, tx.txn)
                if rec is None:
                    self._del_dentry(tx, dir_ino, nm)
                    continue
                if rec.remote_size is None:
                    continue  # created here, not on the share yet
                if busy(ino) or self._busy_below(tx.txn, rec, busy):
                    continue
                self._del_dentry(tx, dir_ino, nm)
                res.removed.append((nm, ino))
                res.purged += self._orphan_tree(tx, rec, referenced)
            drec.listed_ns = now
            if tx.changed:
                self._put(tx, drec)
            else:  # nothing else changed: the time of the listing is write-behind
                self._pending[dir_ino] = drec
                self._lru.pop(dir_ino, None)
        return res

    def refresh_entry(self, ino: int, entry, busy: Callable[[int], bool]) -> Inode | None:
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

    def detach(self, ino: int, new_name: str, **fields) -> tuple[int, str] | None:
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

    def _fill(self, rec: Inode, e, meta) -> None:
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

    def _followed(self, rec: Inode, e, busy: Callable[[int], bool]) -> None:
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
        e,
        queued: Callable[[int], bool],
        busy: Callable[[int], bool],
    ) -> tuple[int, str, int] | None:
        """An entry new here whose FileId a live inode of another directory has: it was
        moved on the share. Moves the inode here; returns (old parent, old name, ino)."""
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

    def _index_fid(self, tx: _Tx, rec: Inode) -> None:
        """FileId -> inode, to recognise moves across directories (entries are checked
        against the inode's record when read: a stale one is ignored)."""
        if rec.file_id:
            tx.changed = True
            tx.txn.put(rec.file_id.encode(), _k(rec.ino), db=self.db_fileids)

    def _busy_below(self, txn: lmdb.Transaction, rec: Inode, busy: Callable[[int], bool]) -> bool:
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

    def _orphan_tree(self, tx: _Tx, rec: Inode, referenced: Callable[[int], bool]) -> list[int]:
        """An entry vanished from the share: delete it (and its subtree) unless referenced."""
        if referenced(rec.ino):
            rec.parent = 0
            self._put(tx, rec)  # marks the transaction changed
            tx.txn.put(_k(rec.ino), b"", db=self.db_orphans)
            return []
        return self._delete_tree(tx, rec.ino)
