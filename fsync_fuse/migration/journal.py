"""The migration journal: what of the source has reached the share, so that a rerun copies
only what is new or changed and a killed run loses and repeats nothing finished.

One LMDB environment per (share, target directory) in the state directory. Records, keyed
by a hash of the entry's path relative to the source (bytes, as the source names it; a path
may be longer than an LMDB key), the path itself inside:
- `done`: the entry as the source had it when it reached the share (kind, size, mtime,
  inode, mode, owner, symlink target) and the share's answer (its path there, ETag,
  FileId). A source entry equal to its record is unchanged and costs nothing.
- `partial`: a large file being filled under its temporary name: the temporary file's
  FileId and which 4 MiB ranges are on the share, so a rerun resumes where it stopped.

Each record is its own LMDB transaction, committed without an fsync (`sync=False`): a
committed transaction is in the kernel's page cache, so a killed run loses none of them
(a power loss may lose the last SYNC_EVERY seconds; LMDB stays consistent either way), and
the environment is synced every SYNC_EVERY seconds and at the end. A file is marked
`partial` before its upload starts, so a rerun after a kill between the upload's end and its
record knows to look at the share first (copier.py) instead of sending it again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import lmdb

SYNC_EVERY = 1.0


class JournalMismatch(Exception):
    """The state directory belongs to another share or target."""


class Journal:
    def __init__(self, path: Path, target: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), max_dbs=4, map_size=1 << 34, subdir=True, sync=False)
        self.done = self.env.open_db(b"done")
        self.partial = self.env.open_db(b"partial")
        meta = self.env.open_db(b"meta")
        with self.env.begin(write=True, db=meta) as txn:
            have = txn.get(b"target")
            if have is None:
                txn.put(b"target", target.encode())
            elif have.decode() != target:
                self.env.close()
                raise JournalMismatch(
                    f"{path} is the journal of a migration to {have.decode()}, not {target}"
                )
        self._synced = time.monotonic()

    def get(self, rel: bytes) -> dict[str, Any] | None:
        return self._read(self.done, rel)

    def get_partial(self, rel: bytes) -> dict[str, Any] | None:
        return self._read(self.partial, rel)

    def _read(self, db: Any, rel: bytes) -> dict[str, Any] | None:
        with self.env.begin(db=db) as txn:
            raw = txn.get(_key(rel))
        return json.loads(raw) if raw is not None else None

    def record(self, rel: bytes, rec: dict[str, Any]) -> None:
        """The entry reached the share (its partial record, if any, goes with it)."""
        self._write(rel, _value(rel, rec), None)

    def record_partial(self, rel: bytes, rec: dict[str, Any]) -> None:
        """An upload of the entry is under way (`rec`: its temporary file, ranges done)."""
        self._write(rel, False, _value(rel, rec))

    def forget(self, rel: bytes) -> None:
        """The entry was removed from the share (--delete)."""
        self._write(rel, None, None)

    def _write(self, rel: bytes, done: bytes | bool | None, partial: bytes | None) -> None:
        """One transaction: `done` and `partial` values (None: delete; False: leave)."""
        key = _key(rel)
        with self.env.begin(write=True) as txn:
            for db, raw in ((self.done, done), (self.partial, partial)):
                if raw is None:
                    txn.delete(key, db=db)
                elif isinstance(raw, bytes):
                    txn.put(key, raw, db=db)
        if time.monotonic() - self._synced >= SYNC_EVERY:
            self.commit()

    def records(self) -> list[tuple[bytes, dict[str, Any]]]:
        """Every `done` record with its path."""
        with self.env.begin(db=self.done) as txn:
            recs = [json.loads(raw) for raw in txn.cursor().iternext(keys=False, values=True)]
        return [(rec.pop("rel").encode("utf-8", "surrogateescape"), rec) for rec in recs]

    def commit(self) -> None:
        """Make every record so far survive a power loss too."""
        self._synced = time.monotonic()
        self.env.sync(True)

    def close(self) -> None:
        self.commit()
        self.env.close()


def _key(rel: bytes) -> bytes:
    return hashlib.blake2b(rel, digest_size=20).digest()


def _value(rel: bytes, rec: dict[str, Any]) -> bytes:
    body = {"rel": rel.decode("utf-8", "surrogateescape"), **rec}
    return json.dumps(body, separators=(",", ":")).encode()
