"""Orphans: inodes that lost their name while the kernel or an open handle still uses them.

POSIX lets a process read a file it has open after the name is gone; the inode stays (with
parent 0, listed in `orphans`) until the last reference drops, then it is purged. A file on
the share that was open when unlinked had its content renamed aside to a hidden name
(local.py `_remove_op`); purging queues the delete of that name.
"""

from __future__ import annotations

from collections.abc import Callable

from fsync_fuse.attrs import Inode
from fsync_fuse.namespace.tables import ROOT, Tables, _k, _n, _Tx


class Orphans(Tables):
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

    def hidden_path(self, ino: int) -> str | None:
        """The share path an orphan's content was renamed aside to, if any."""
        with self.env.begin() as txn:
            raw = txn.get(_k(ino), db=self.db_orphans)
        return raw.decode() if raw else None

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

    def _orphan_tree(self, tx: _Tx, rec: Inode, referenced: Callable[[int], bool]) -> list[int]:
        """An entry vanished from the share: delete it (and its subtree) unless referenced."""
        if referenced(rec.ino):
            rec.parent = 0
            self._put(tx, rec)  # marks the transaction changed
            tx.txn.put(_k(rec.ino), b"", db=self.db_orphans)
            return []
        return self._delete_tree(tx, rec.ino)
