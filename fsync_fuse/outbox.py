"""The ordered, persisted queue of namespace operations still to apply on the share.

Each operation is a JSON object carrying the share paths computed when it was issued; applied
strictly in order, they move the share through the same states the local namespace went
through, so a path computed at issue time is the right share path at apply time. Operations are
appended in the same LMDB transaction as the local change they describe (see namespace/tables.py), so a
crash never leaves one without the other.

In memory we count, per inode, the pending operations it is the subject of (created, renamed,
removed, attributes) and those that change its children (it is a parent directory). From those
counts `path_settled` tells whether an inode's local path is its share path right now, which is
what uploads, fetches and listings need.

**Coalescing.** An entry's queued create that the worker has not begun (it is *held* from
the moment it starts on the share, or is set aside as stuck) is the only record of the
entry on the share side: when the entry is then renamed or removed, or its attributes
change, the namespace rewrites the create instead of queueing more (`foldable_create`,
`withdraw`; namespace/local.py). The rewritten create is appended at the end of the queue,
in the same transaction as the local change, so everything queued before keeps its order
and a crash finds either the old state or the new one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lmdb
import trio

from fsync_fuse import records

if TYPE_CHECKING:
    Txn = lmdb.Transaction[bytes]


#: operations that create an entry on the share
CREATE_OPS = ("create", "mkdir", "symlink", "special")
#: creates of files whose content is fixed when queued: a symlink (its target) and a special
#: file (fifo, socket, device node: empty, its type in the metadata; attrs.py)
FIXED_CONTENT_OPS = ("symlink", "special")
#: creates of files (made under a temporary name, then given theirs)
FILE_CREATE_OPS = ("create", *FIXED_CONTENT_OPS)
#: operations that remove an entry from the share
DELETE_OPS = ("unlink", "rmdir")


def _seq_key(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


class Outbox:
    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.db = env.open_db(b"outbox")
        self._subject: Counter[int] = Counter()
        self._parent: Counter[int] = Counter()
        self._victim: Counter[int] = Counter()  # inodes a pending rename replaces
        self._count = 0
        self._next_seq = 1
        self._creates: dict[int, int] = {}  # ino -> seq of its pending create
        self._held: set[int] = set()  # creates begun on the share (or stuck): never rewritten
        self._withdrawn: list[int] = []  # seqs rewritten away, for the worker's window
        #: bumped on every append: a listing taken at version v is stale if this moved
        self.version = 0
        self._changed = trio.Event()
        self._touched: dict[int, int] = {}  # ino -> version of the last op/upload touching it
        self._watchers: Counter[int] = Counter()  # listings in flight, by start version
        with env.begin(db=self.db) as txn:
            for key, raw in txn.cursor():
                seq = int.from_bytes(key, "big")
                self._count_op(seq, records.loads(raw), +1)
                self._next_seq = seq + 1

    # --- counters
    def _count_op(self, seq: int, op: dict, delta: int) -> None:
        self._count += delta
        if op["op"] in CREATE_OPS and op.get("ino"):
            if delta > 0:
                self._creates[op["ino"]] = seq
            elif self._creates.get(op["ino"]) == seq:
                del self._creates[op["ino"]]
        if delta < 0:
            self._held.discard(seq)
        if op.get("ino"):
            self._subject[op["ino"]] += delta
            if self._subject[op["ino"]] <= 0:
                del self._subject[op["ino"]]
        for d in op.get("dirs", ()):
            self._parent[d] += delta
            if self._parent[d] <= 0:
                del self._parent[d]
        if op.get("victim"):
            self._victim[op["victim"]] += delta
            if self._victim[op["victim"]] <= 0:
                del self._victim[op["victim"]]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def __len__(self) -> int:
        return self._count

    def is_subject(self, ino: int) -> bool:
        """An operation on this very inode (create, rename, removal, attributes) is pending."""
        return ino in self._subject

    def only_op_on(self, ino: int) -> bool:
        """Exactly one pending operation mentions this inode (as subject or as the file a
        rename replaces): the head being applied, when the worker asks."""
        return self._subject.get(ino, 0) == 1 and not self._victim.get(ino)

    def foldable_create(self, ino: int) -> int | None:
        """The sequence number of `ino`'s queued create when that create is the only
        operation on `ino`, nothing of it reached the share (not held) and nothing queued
        names `ino` as a rename's victim: the create may still be rewritten."""
        seq = self._creates.get(ino)
        if seq is None or seq in self._held or self._subject.get(ino) != 1:
            return None
        return None if self._victim.get(ino) else seq

    def hold(self, seq: int, op: dict) -> bool:
        """The worker begins `op` on the share (or sets it aside): from now on it is never
        rewritten. False when it was rewritten away meanwhile (there is nothing to do)."""
        if op["op"] in CREATE_OPS and op.get("ino"):
            if self._creates.get(op["ino"]) != seq:
                return False
        self._held.add(seq)
        return True

    def is_pending_create(self, seq: int, op: dict) -> bool:
        """`op`, queued as `seq`, is a create that was not rewritten away."""
        return self._creates.get(op.get("ino") or 0) == seq

    def withdraw(self, txn: Txn, seq: int) -> dict:
        """Delete a foldable create (`foldable_create`) from the queue in the caller's
        transaction; returns it. `withdrawn` follows the commit."""
        raw = txn.get(_seq_key(seq), db=self.db)
        assert raw is not None and seq not in self._held
        txn.delete(_seq_key(seq), db=self.db)
        return records.loads(raw)

    def take_withdrawn(self) -> list[int]:
        """Sequence numbers rewritten away since the last call (the window drops them)."""
        out, self._withdrawn = self._withdrawn, []
        return out

    def has_child_ops(self, ino: int) -> bool:
        """A pending operation adds, removes or renames an entry of this directory."""
        return ino in self._parent

    def path_settled(self, chain: Iterable[int]) -> bool:
        """True when no inode on the chain (an inode and its ancestors) has a pending op,
        so the local path equals the share path and the entry exists there."""
        return not any(i in self._subject for i in chain)

    # --- persistence (callers pass their own write transaction)
    def append(
        self, txn: Txn, op: dict, *, keep: dict[tuple[Any, bytes], bytes] | None = None
    ) -> int:
        """Queue `op` in `txn`; its sequence number. `keep`: also gets ((table, key), value),
        what a staged create writes later (namespace/tables.py `_stage`)."""
        seq = self._next_seq
        self._next_seq += 1
        key, raw = _seq_key(seq), records.dumps(op)
        txn.put(key, raw, db=self.db)
        if keep is not None:
            keep[(self.db, key)] = raw
        return seq

    def published(self) -> None:
        """Operations counted when staged (`added`) are now in LMDB, where the worker reads
        the queue: a new version, so that it looks again."""
        self.version += 1
        self._notify()

    def added(
        self,
        ops: list[tuple[int, dict]],
        withdrawn: list[tuple[int, dict]] | None = None,
        *,
        staged: bool = False,
    ) -> None:
        """Called after the transaction that appended `ops` (and withdrew `withdrawn`)
        committed, each with its sequence number; or, `staged`, when they are counted before
        they are written (`published` wakes the worker then: there is nothing to read yet)."""
        if not ops and not withdrawn:
            return
        self.version += 1
        for seq, op in withdrawn or ():
            self._count_op(seq, op, -1)
            self._withdrawn.append(seq)
        for seq, op in ops:
            self._count_op(seq, op, +1)
            for i in (op.get("ino"), *op.get("dirs", ())):
                if i:
                    self._touched[i] = self.version
        if not staged:
            self._notify()

    def touch(self, ino: int) -> None:
        """Something other than an op changed this inode on the share (an upload)."""
        self.version += 1
        self._touched[ino] = self.version

    def touched_since(self, ino: int, version: int) -> bool:
        """An op or upload touched this inode after `version` was read: a listing taken
        since then may predate it."""
        return self._touched.get(ino, 0) > version

    def peek(self, after: int, limit: int) -> list[tuple[int, dict]]:
        """Up to `limit` pending operations with a sequence number above `after`, in order."""
        out: list[tuple[int, dict]] = []
        with self.env.begin(db=self.db) as txn:
            cur = txn.cursor()
            if not cur.set_range(_seq_key(after + 1)):
                return out
            for key, raw in cur:
                out.append((int.from_bytes(key, "big"), records.loads(raw)))
                if len(out) >= limit:
                    break
        return out

    def remove(self, txn: Txn, seq: int) -> None:
        txn.delete(_seq_key(seq), db=self.db)

    def removed(self, seq: int, op: dict) -> None:
        """Called after the transaction that removed `op` committed."""
        self._count_op(seq, op, -1)
        self.version += 1
        for i in (op.get("ino"), *op.get("dirs", ())):
            if i:
                self._touched[i] = self.version
        self._prune()
        self._notify()

    @contextmanager
    def watch(self) -> Iterator[int]:
        """Bracket a share listing: yields the version to pass to `touched_since` later."""
        v0 = self.version
        self._watchers[v0] += 1
        try:
            yield v0
        finally:
            self._watchers[v0] -= 1
            if self._watchers[v0] <= 0:
                del self._watchers[v0]
            self._prune()

    def _prune(self) -> None:
        # Touch versions only matter to listings in flight; forget them when none is.
        if not self._watchers and len(self._touched) > 10000:
            self._touched.clear()

    # --- waiting
    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is re-checked after every change of the queue."""
        while not predicate():
            await self._changed.wait()
