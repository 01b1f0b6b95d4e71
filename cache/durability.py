"""Making state durable: `commit` (data files synced with system.datasync, then one synced
transaction) and `_persist_now` (withdrawing claims before data is destroyed). Ordering is
argued in INVARIANTS.md."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .datafile import PAGE
from .entry import ABSENT, CLEAN, DIRTY, CachedFile
from .footprint import index_headroom
from .index import block_key, block_val, key_bytes
from .state import CacheState
from .system import datasync

#: another module's records written into a commit's transaction; returns what to run once
#: the transaction is durable, or None when it had nothing to write (BlockCache.commit `also`)
Also = Callable[[Any], Callable[[], None] | None]


def _datasync_and_close(fds: list[int]) -> None:
    """Worker-thread half of commit_async: sync and close duplicated fds."""
    for fd in fds:
        try:
            datasync(fd)
        finally:
            os.close(fd)


class Durability(CacheState):
    """Part of BlockCache: commits, and the synced transactions that must precede damage."""

    def _persist_now(
        self,
        *,
        deletes: Sequence[tuple[CachedFile, int]] = (),
        dirties: Sequence[tuple[CachedFile, int]] = (),
        volatile: Sequence[CachedFile] = (),
        files: Sequence[CachedFile] = (),
        force: bool = False,
    ) -> None:
        """A short synced transaction that withdraws claims *before* data is destroyed or
        clean data overwritten (see INVARIANTS.md). Skipped when nothing durable changes,
        unless `force` (a lowered remote_valid must be durable before new data relies on it)."""
        deletes = [(f, b) for f, b in deletes if b < len(f.durable) and f.durable[b]]
        dirties = [(f, b) for f, b in dirties if b < len(f.durable) and f.durable[b] == CLEAN]
        volatile = [f for f in volatile if f.data_id not in self._volatile]
        if not (deletes or dirties or volatile or force):
            return
        idx = self._index
        with self.env.begin(write=True) as txn:
            for f, b in deletes:
                txn.delete(block_key(f.data_id, b), db=idx.blocks)
                f.durable[b] = ABSENT
            for f, b in dirties:
                txn.put(block_key(f.data_id, b), block_val(DIRTY, self._alloc(f, b)), db=idx.blocks)
                f.durable[b] = DIRTY
            for f in volatile:
                txn.put(key_bytes(f.data_id), b"", db=idx.volatile)
            for f in {*files, *(f for f, _ in deletes)}:
                if not f.dead:
                    txn.put(key_bytes(f.key), f.record().pack(), db=idx.files)
        self.env.sync(True)
        self._footprint.refresh_index()
        for f in volatile:
            self._volatile.add(f.data_id)

    def _has_pending(self) -> bool:
        return bool(
            self._unsynced
            or self._pending_files
            or self._meta_dirty
            or self._deleted_keys
            or self._dropped_ids
            or self._volatile
        )

    def commit(self, *, also: Also | None = None, _linger: float | None = None) -> None:
        """Sync the data files written since the last commit, then write the index changes in
        one transaction and sync it: what was written before is now durable. `also` writes
        another module's records into that transaction (the namespace's, which share this
        LMDB environment) and returns what to run once it is durable."""
        linger = self.volatile_linger if _linger is None else _linger
        self._room_for_commit()
        # (files a commit_async is syncing in its worker thread too: that sync may not be
        # over, and the claims below must not reach the disk before their data)
        for data_id in self._unsynced | self._syncing:
            self._data.datasync(data_id)
        self._unsynced.clear()
        now = time.monotonic()
        leaving = [
            data_id
            for data_id in self._volatile
            if (owner := self._by_id.get(data_id)) is None or now - owner.last_mut >= linger
        ]
        txn = self.env.begin(write=True)
        try:
            wrote = self._write_changes(txn, leaving)
            after = also(txn) if also is not None else None
        except BaseException:
            txn.abort()
            raise
        changed = wrote or after is not None
        if changed:
            txn.commit()
        else:
            # nothing changed since the last commit (an fsync of a directory, a second fsync):
            # no transaction, but the sync below still makes durable the meta page of any
            # transaction committed meanwhile without one (the namespace's, metasync=False)
            txn.abort()
        self.env.sync(True)
        if after is not None:
            after()
        if changed:
            self._footprint.refresh_index()
        self._deleted_keys.clear()
        self._dropped_ids.clear()
        self._pending_files.clear()
        self._meta_dirty.clear()

    def _write_changes(self, txn: Any, leaving: list[int]) -> bool:
        """The claims and records changed since the last commit into `txn` (commit);
        `leaving`: the data ids that leave the volatile set. Whether it wrote anything."""
        idx = self._index
        wrote = bool(leaving or self._deleted_keys or self._dropped_ids or self._meta_dirty)
        for key in self._deleted_keys:
            if key not in self._files:
                txn.delete(key_bytes(key), db=idx.files)
        for data_id in self._dropped_ids:
            idx.delete_blocks_of(txn, data_id)
            txn.delete(key_bytes(data_id), db=idx.volatile)
            self._volatile.discard(data_id)
        for f in self._pending_files:
            st = f.states
            assert st is not None
            durable = f.durable
            f.grow(len(st))
            for b in f.pending:
                s = st[b] if b < len(st) else ABSENT
                if s >= CLEAN:
                    txn.put(block_key(f.data_id, b), block_val(s, self._alloc(f, b)), db=idx.blocks)
                    durable[b] = s
                    wrote = True
                elif durable[b] != ABSENT:
                    txn.delete(block_key(f.data_id, b), db=idx.blocks)
                    durable[b] = ABSENT
                    wrote = True
            f.pending.clear()
        for f in self._meta_dirty:
            txn.put(key_bytes(f.key), f.record().pack(), db=idx.files)
        for data_id in leaving:
            txn.delete(key_bytes(data_id), db=idx.volatile)
            self._volatile.discard(data_id)
        return wrote

    def _room_for_commit(self) -> None:
        """A commit writing many records may grow the index by more than the headroom kept
        for it (footprint.py): make room for that first (~128 bytes a record, more than a
        B-tree leaf entry with its share of page splits)."""
        if self.bound == "data":
            return
        records = (
            sum(len(f.pending) for f in self._pending_files)
            + len(self._meta_dirty)
            + len(self._deleted_keys)
            + len(self._volatile)
        )
        grow = 128 * records + PAGE * len(self._dropped_ids)
        if grow > index_headroom(self.max_bytes) // 2:
            self._make_room(grow)

    async def commit_async(self, *, also: Also | None = None) -> None:
        """`commit` with the data-file syncing done in a worker thread first. A file synced
        there and not written since needs no second sync in `commit`: only files written
        while the thread ran (they are back in `_unsynced`) are synced again. Until the
        thread is done its files are `_syncing`, which a `commit` meanwhile syncs itself."""
        fds = self._data.dup_for_sync(list(self._unsynced))
        if fds:
            ids = {data_id for data_id, _fd in fds}
            self._unsynced -= ids
            self._syncing |= ids
            try:
                await trio.to_thread.run_sync(_datasync_and_close, [fd for _, fd in fds])
            except BaseException:
                self._unsynced |= ids  # not known to be synced: the commit syncs them
                raise
            finally:
                self._syncing -= ids
        self.commit(also=also)
