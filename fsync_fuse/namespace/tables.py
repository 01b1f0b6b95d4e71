"""The inode and directory-entry tables, kept in the cache's LMDB environment.

A million-entry share must fit in a small daemon, so nothing here holds all entries in memory:
every lookup is an LMDB read. Tables (named databases):

- `inodes`:   ino → Inode record (attrs.py), JSON.
- `dentries`: parent ino + folded name → child ino, entry id, exact name. Folding makes a
              case-only collision a key collision, as on the share.
- `dirorder`: parent ino + entry id → child ino, exact name. readdir walks this in id order;
              ids are never reused, so `id + 3` is a stable readdir offset.
- `nsmeta`:   counters (next inode number, next entry id), this cache's id, the conflict count.
- `orphans`:  inodes unlinked while the kernel or an open handle still refers to them; purged
              when released, or at the next start.
- `fileids`:  the share's FileId → inode, to recognise moves made on the share.

This module holds the tables, transactions and reads; what changes them is split by cause:
local.py (the kernel's requests), merge.py (a listing from the share), orphans.py (entries
that lost their name). Every mutating operation changes the tables *and* appends its share
operation to the outbox in one write transaction, so after a crash the two always agree.
Transactions never span an await.
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
from typing import TYPE_CHECKING

import lmdb

from fsync_fuse import names
from fsync_fuse.attrs import DIR, Inode
from fsync_fuse.outbox import Outbox

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lmdb import _Database as Database

    #: a transaction of the namespace's environment (no buffers: values are bytes)
    Txn = lmdb.Transaction[bytes]

ROOT = 1  # pyfuse3.ROOT_INODE
# A file removed while still open is renamed aside on the share under this prefix (at the
# share root) so its readers can finish it; deleted when the inode is purged (orphans.py).
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


class Gone(Exception):
    """The inode was unlinked: it has no share path any more (nothing to upload or list)."""


@dataclass
class _Tx:
    """One write transaction plus the outbox operations it appended."""

    txn: Txn
    ops: list[tuple[int, dict]] = field(default_factory=list)  # (seq, op) appended
    withdrawn: list[tuple[int, dict]] = field(default_factory=list)  # (seq, op) rewritten
    records: dict[int, Inode | None] = field(default_factory=dict)  # for the LRU, at commit
    changed: bool = False  # something was written (set by the helpers below)
    discard_unchanged: bool = False  # abort instead of committing when nothing changed
    #: a staged transaction (`_stage`): never committed; what it wrote besides inode records
    #: is kept here and joins the write-behind records
    staged: dict[tuple[Database, bytes], bytes] | None = None


class Tables:
    #: decoded records kept in memory (a few MB at most; the table itself stays in LMDB)
    LRU_SIZE = 16384

    def __init__(
        self,
        env: lmdb.Environment,
        *,
        uid: int = 0,
        gid: int = 0,
        clock: Callable[[], int] = time.time_ns,
        on_dir_change: Callable[[int], None] = lambda ino: None,
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
        self._deferred: dict[tuple[Database, bytes], bytes | None] = {}
        #: `_deferred` holds a staged create's entries (dentries, readdir order, its queued
        #: operation): reads of those tables `settle` first (see `_stage`)
        self._staged = False
        self._lru: OrderedDict[int, Inode] = OrderedDict()  # recently read records
        #: the write transaction `_write` has open, and what it wrote so far (`get` answers
        #: from these and the LRU instead of decoding what LMDB holds: see `get`)
        self._open: _Tx | None = None
        #: called with a directory's inode whenever one of its entries or a child's record
        #: changes (before the change is visible): readdir answers built earlier are stale
        self.on_dir_change = on_dir_change
        self._subdirs: dict[int, int] = {}  # dir ino -> subdirectories, until it changes
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

    @contextmanager
    def _write(self, *, discard_unchanged: bool = False) -> Iterator[_Tx]:
        tx = _Tx(self.env.begin(write=True), discard_unchanged=discard_unchanged)
        outer, self._open = self._open, tx
        # the write-behind entries go in first, so that the body reads a staged create's
        # entries (and may withdraw its queued operation); back to `_deferred` if aborted
        moved, staged = self._deferred, self._staged
        self._deferred, self._staged = {}, False
        try:
            self._put_deferred(tx.txn, moved)
            tx.changed = bool(moved)
            yield tx
        except BaseException:
            tx.txn.abort()
            self._restore(moved, staged)
            raise
        finally:
            self._open = outer
        if tx.discard_unchanged and not tx.changed:
            # a listing that changed nothing: no synced commit for it (write-behind records
            # it left in `_pending` go with the next transaction)
            tx.txn.abort()
            return
        try:
            self._put_pending(tx.txn, tx.records)
            tx.txn.commit()
        except BaseException:
            self._restore(moved, staged)
            raise
        self._pending.clear()
        self._deferred.clear()
        self._remember_written(tx.records)
        self.outbox.added(tx.ops, tx.withdrawn)
        if staged:
            self.outbox.published()

    def _restore(self, moved: dict[tuple[Database, bytes], bytes | None], staged: bool) -> None:
        """A failed transaction's moved write-behind entries back, under newer ones."""
        for key, value in moved.items():
            self._deferred.setdefault(key, value)
        self._staged = self._staged or staged

    @contextmanager
    def _stage(self) -> Iterator[_Tx]:
        """Like `_write`, but nothing is committed: the body runs in a write transaction
        that is then aborted, and what it wrote becomes write-behind records (inode records
        into `_pending`, the rest into `_deferred`), durable with the next transaction: the
        cache's commit at the file's close, or any namespace change before it. Saves the
        synced transaction of a new file's create (notes/perf-session10.md). Until then
        LMDB does not have the entries: reads of the directory tables `settle` (commit them)
        first, and every transaction that appends to the outbox writes them first, so the
        queue in LMDB never has a later operation without the staged one before it."""
        tx = _Tx(self.env.begin(write=True), staged={})
        outer, self._open = self._open, tx
        try:
            if self._staged:  # (the body reads earlier staged entries: a name taken)
                self._put_deferred(tx.txn, self._deferred)
            yield tx
        finally:
            self._open = outer
            tx.txn.abort()
        assert tx.staged is not None and not tx.withdrawn
        for ino, rec in tx.records.items():
            assert rec is not None
            self._pending[ino] = rec
        self._deferred.update(tx.staged)
        self._staged = True
        self.outbox.added(tx.ops, staged=True)

    def settle(self) -> None:
        """Commit a staged create's entries (before reading the directory tables from LMDB
        outside a transaction of ours, or writing the outbox in another module's)."""
        if self._staged and self._open is None:
            self.flush()

    def _put_deferred(self, txn: Txn, entries: dict[tuple[Database, bytes], bytes | None]) -> None:
        for (db, key), value in entries.items():
            if value is None:
                txn.delete(key, db=db)
            else:
                txn.put(key, value, db=db)

    def _put_pending(self, txn: Txn, records: dict[int, Inode | None]) -> None:
        """The write-behind records and counters into `txn` (`records`: what it wrote)."""
        for rec in self._pending.values():
            txn.put(_k(rec.ino), rec.encode(), db=self.db_inodes)
            records[rec.ino] = rec
        self._put_deferred(txn, self._deferred)
        txn.put(b"next_ino", _k(self._next_ino), db=self.db_meta)
        txn.put(b"next_dent", _k(self._next_dent), db=self.db_meta)

    def _remember_written(self, records: dict[int, Inode | None]) -> None:
        for ino, written in records.items():
            if written is None:
                self._lru.pop(ino, None)
            else:
                self._remember(ino, written)

    def write_pending(self, txn: Txn) -> Callable[[], None] | None:
        """Put the write-behind records into another module's transaction in this
        environment: the cache's commit (fs.py `_commit`), so that one synced transaction
        makes the records and the cache index durable together, instead of two. Returns
        what to run once that committed; until then the records stay pending (a failed
        commit leaves them for the next one); None when there is nothing to write.
        Synchronous from here to the commit."""
        if not (self._pending or self._deferred):
            return None
        records: dict[int, Inode | None] = {}
        self._put_pending(txn, records)
        staged = self._staged

        def committed() -> None:
            self._pending.clear()
            self._deferred.clear()
            self._remember_written(records)
            if staged:
                self._staged = False
                self.outbox.published()

        return committed

    def _enqueue(self, tx: _Tx, op: dict) -> None:
        tx.ops.append((self.outbox.append(tx.txn, op, keep=tx.staged), op))

    def _take_create(self, tx: _Tx, ino: int) -> dict | None:
        """`ino`'s queued create, taken out of the queue in `tx` when it may still be
        rewritten (Outbox.foldable_create): the caller queues what it becomes."""
        seq = self.outbox.foldable_create(ino)
        if seq is None or any(s == seq for s, _ in tx.withdrawn):
            return None
        op = self.outbox.withdraw(tx.txn, seq)
        tx.withdrawn.append((seq, op))
        tx.changed = True
        return op

    def write_behind(self, db: Database, key: bytes, value: bytes | None) -> None:
        """Record another module's entry in this environment (`value` None: delete it) with
        the namespace's write-behind records: durable at the next transaction or `flush`,
        together with the local state it belongs to."""
        self._deferred[(db, key)] = value

    def flush(self) -> None:
        """Persist the write-behind records (before every cache commit)."""
        if self._pending or self._deferred:
            with self._write():
                pass

    # ------------------------------------------------------------------ reading
    def get(self, ino: int, txn: Txn | None = None) -> Inode | None:
        if txn is None:
            return self._committed(ino)
        pending = self._pending.get(ino)
        if pending is not None:
            return pending.clone()
        # Inside a transaction LMDB is the truth: it sees this transaction's own writes. In
        # the one `_write` has open, the same answer comes cheaper: a record it wrote or
        # deleted is in its `records`, and any other is as last committed, which the LRU
        # holds exactly when it holds the inode (every write of the inode table goes through
        # `records`, and the LRU learns them only once committed: `_remember_written`).
        tx = self._open
        if tx is not None and tx.txn is txn:
            if ino in tx.records:
                mine = tx.records[ino]
                return mine.clone() if mine is not None else None
            hit = self._lru.get(ino)
            if hit is not None:
                return hit.clone()
        raw = txn.get(_k(ino), db=self.db_inodes)
        return Inode.decode(ino, raw) if raw is not None else None

    def _committed(self, ino: int, txn: Txn | None = None) -> Inode | None:
        """The record as last committed, with its write-behind changes: the LRU's, else
        LMDB's, read in `txn` (a read transaction begun since the last commit: it sees the
        same) or in one of its own. The LRU holds what was last committed when it holds the
        inode (namespace transactions commit only in this thread, between awaits, and the
        LRU learns what they wrote then), so a directory listed and merged a moment ago is
        read back without decoding each record (`children`)."""
        pending = self._pending.get(ino)
        if pending is not None:
            return pending.clone()
        hit = self._lru.get(ino)
        if hit is not None:
            self._lru.move_to_end(ino)
            return hit.clone()
        if txn is None:
            with self.env.begin() as t:
                raw = t.get(_k(ino), db=self.db_inodes)
        else:
            raw = txn.get(_k(ino), db=self.db_inodes)
        if raw is None:
            return None
        rec = Inode.decode(ino, raw)
        self._remember(ino, rec.clone())
        return rec

    def _remember(self, ino: int, rec: Inode) -> None:
        self._lru[ino] = rec
        self._lru.move_to_end(ino)
        if len(self._lru) > self.LRU_SIZE:
            self._lru.popitem(last=False)

    def must(self, ino: int, txn: Txn | None = None) -> Inode:
        rec = self.get(ino, txn)
        if rec is None:
            raise FsError(errno.ENOENT)
        return rec

    def _dentry(self, txn: Txn, parent: int, name: str) -> tuple[int, int, str] | None:
        raw = txn.get(names.dentry_key(parent, name), db=self.db_dentries)
        if raw is None:
            return None
        return _n(raw[:8]), _n(raw[8:16]), raw[16:].decode()

    def find(self, parent: int, name: str) -> tuple[int, str] | None:
        """The entry whose name equals `name` ignoring case: (ino, exact name)."""
        self.settle()
        with self.env.begin() as txn:
            d = self._dentry(txn, parent, name)
        return (d[0], d[2]) if d else None

    def entry_id(self, parent: int, name: str) -> int | None:
        """The entry id (readdir order) of a directory entry."""
        self.settle()
        with self.env.begin() as txn:
            d = self._dentry(txn, parent, name)
        return d[1] if d else None

    def lookup(self, parent: int, name: str) -> Inode | None:
        """The entry named exactly `name` (lookups are case-sensitive; creates are not)."""
        self.settle()
        with self.env.begin() as txn:
            d = self._dentry(txn, parent, name)
            if d is None or d[2] != name:
                return None
            return self.get(d[0], txn)

    def children(
        self, parent: int, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, Inode]]:
        """Entries of a directory in entry-id order, starting after `after_id`."""
        self.settle()
        out: list[tuple[int, str, Inode]] = []
        prefix = _k(parent)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db_order)
            if not cur.set_range(prefix + _k(after_id + 1)):
                return out
            for key, val in cur:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                rec = self._committed(_n(val[:8]), txn)
                if rec is not None:
                    out.append((_n(key[8:16]), val[8:].decode(), rec))
        return out

    def iter_children(self, parent: int, batch: int = 1000) -> Iterator[Inode]:
        """Every entry of a directory, read `batch` at a time (one short read transaction
        each, so a caller may await between them)."""
        after = 0
        while entries := self.children(parent, after, batch):
            for dent, _name, rec in entries:
                after = dent
                yield rec

    def count_children(self, parent: int, limit: int) -> int:
        """How many entries a directory has, counting at most `limit`."""
        self.settle()
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

    def chain(self, ino: int, txn: Txn | None = None) -> list[int] | None:
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

    def path(self, ino: int, txn: Txn | None = None) -> str | None:
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

    def settled_path(self, ino: int) -> str | None:
        """The inode's share path if no pending operation affects it (its local path is its
        share path and it exists there), else None. Raises Gone for an unlinked inode."""
        chain = self.chain(ino)
        if chain is None:
            raise Gone(ino)
        if not self.outbox.path_settled(chain):
            return None
        path = self.path(ino)
        if path is None:
            raise Gone(ino)
        return path

    def _empty_in(self, txn: Txn, ino: int) -> bool:
        prefix = _k(ino)
        cur = txn.cursor(db=self.db_order)
        return not (cur.set_range(prefix) and cur.key().startswith(prefix))

    def _is_ancestor(self, txn: Txn, anc: int, ino: int) -> bool:
        chain = self.chain(ino, txn) or []
        return anc in chain

    def subdirs(self, ino: int) -> int:
        """How many subdirectories directory `ino` has (known ones: a directory never listed
        has none yet). Counted from the raw records, kept until something there changes."""
        n = self._subdirs.get(ino)
        if n is None:
            n = 0
            prefix = _k(ino)
            with self.env.begin() as txn:
                cur = txn.cursor(db=self.db_order)
                if cur.set_range(prefix):
                    for key, val in cur:
                        if not key.startswith(prefix):
                            break
                        raw = txn.get(val[:8], db=self.db_inodes)
                        if raw is not None and b'"k":"d"' in raw:  # Inode.encode of a DIR
                            n += 1
            if len(self._subdirs) > 65536:
                self._subdirs.clear()
            self._subdirs[ino] = n
        return n

    # ------------------------------------------------------------------ low-level writes
    def _dir_changed(self, ino: int, subdirs: bool = True) -> None:
        """An entry of directory `ino` or a child's record changes: what was derived from
        it (readdir answers; the subdirectory count unless `subdirs` is False: a file's
        change, which the kernel asks the directory's attributes again after, so a count
        of hundreds of entries redone at every write of a file in it was quadratic) is
        stale."""
        if subdirs:
            self._subdirs.pop(ino, None)
        self.on_dir_change(ino)

    def _put(self, tx: _Tx, rec: Inode) -> None:
        tx.changed = True
        # (a record's own change never changes its parent's subdirectory count: entries come
        # and go through _add_dentry and _del_dentry, which say so; a directory's mtime, set
        # by every create in it, would otherwise have its parent recounted each time)
        self._dir_changed(rec.parent, subdirs=False)
        self._pending.pop(rec.ino, None)
        tx.records[rec.ino] = rec.clone()
        tx.txn.put(_k(rec.ino), rec.encode(), db=self.db_inodes)

    def _add_dentry(
        self, tx: _Tx, parent: int, name: str, ino: int, is_dir: bool | None = None
    ) -> None:
        """(`is_dir`: of the entry, when the caller knows; a file leaves the count be)"""
        tx.changed = True
        self._dir_changed(parent, subdirs=is_dir is not False)
        dent = self._next_dent
        self._next_dent += 1
        puts = (
            (self.db_dentries, names.dentry_key(parent, name), _k(ino) + _k(dent) + name.encode()),
            (self.db_order, _k(parent) + _k(dent), _k(ino) + name.encode()),
        )
        for db, key, value in puts:
            tx.txn.put(key, value, db=db)
            if tx.staged is not None:
                tx.staged[(db, key)] = value

    def _del_dentry(self, tx: _Tx, parent: int, name: str, is_dir: bool | None = None) -> None:
        key = names.dentry_key(parent, name)
        raw = tx.txn.get(key, db=self.db_dentries)
        if raw is None:
            return
        tx.changed = True
        self._dir_changed(parent, subdirs=is_dir is not False)
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

    def _index_fid(self, tx: _Tx, rec: Inode) -> None:
        """FileId -> inode, to recognise moves across directories (entries are checked
        against the inode's record when read: a stale one is ignored)."""
        if rec.file_id:
            tx.changed = True
            tx.txn.put(rec.file_id.encode(), _k(rec.ino), db=self.db_fileids)

    def update(self, ino: int, **fields: object) -> Inode | None:
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
