"""The LMDB index: environment, schema check and the record formats of the cache's own DBs.

Named DBs (the filesystem opens its own beside these in the same environment):

- ``cache.meta``: schema version, block size, share id, and the ``clean`` flag (b"1" only
  between a clean `close` and the next open; b"0" while open, so an open that finds b"0"
  knows the previous run crashed and reconciles).
- ``cache.files``: key (``>Q`` inode number) -> FileRecord. Schema 1 had no heat and no pin
  size; opening such a cache rewrites its records once (`_migrate`), with heat 1 at the last
  access, so eviction keeps the old least-recently-used order until files are used again.
- ``cache.blocks``: ``>QQ`` (data id, block index) -> state byte + allocated bytes. A record
  is a *claim*: the data file holds this block (clean: equal to the remote; dirty: to upload).
  No record means the block is absent (a hole in the data file).
- ``cache.volatile``: ``>Q`` data id -> b"". A data file whose clean blocks may have been
  overwritten or punched before the index caught up (see INVARIANTS.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import lmdb

from .errors import CacheMismatch

SCHEMA_VERSION = 2
MAP_SIZE = 64 << 30  # sparse: LMDB only grows the file as pages are used
MAX_DBS = 64

CLEAN = 2
DIRTY = 3

#: data_id, remote_valid, length, used, dirty, atime, flags, heat (as of atime), pin_size
_FILE = struct.Struct("<QQQQQdBdQ")
_FILE_V1 = struct.Struct("<QQQQQdB")  # schema 1: without heat and pin_size
_KEY = struct.Struct(">Q")
_BLOCK_KEY = struct.Struct(">QQ")
_BLOCK_VAL = struct.Struct("<BI")
FLAG_PINNED = 1
#: older schema versions `Index` migrates at open (and what else it refuses)
MIGRATES = (1,)


@dataclass(slots=True)
class FileRecord:
    data_id: int
    remote_valid: int
    length: int
    used: int
    dirty: int
    atime: float  # last access (the cache's clock), 0.0 when never accessed
    pinned: bool
    heat: float = 0.0  # as of atime (heat.py)
    pin_size: int = 0  # what the pin reserved (tiering.py)

    def pack(self) -> bytes:
        flags = FLAG_PINNED if self.pinned else 0
        return _FILE.pack(
            self.data_id,
            self.remote_valid,
            self.length,
            self.used,
            self.dirty,
            self.atime,
            flags,
            self.heat,
            self.pin_size,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> FileRecord:
        data_id, rv, length, used, dirty, atime, flags, heat, pin_size = _FILE.unpack(raw)
        return cls(
            data_id, rv, length, used, dirty, atime, bool(flags & FLAG_PINNED), heat, pin_size
        )

    @classmethod
    def unpack_v1(cls, raw: bytes) -> FileRecord:
        """A schema-1 record: its last access counts as one use."""
        data_id, rv, length, used, dirty, atime, flags = _FILE_V1.unpack(raw)
        heat = 1.0 if atime > 0 else 0.0
        return cls(data_id, rv, length, used, dirty, atime, bool(flags & FLAG_PINNED), heat)


def key_bytes(key: int) -> bytes:
    return _KEY.pack(key)


def key_int(raw: bytes) -> int:
    return _KEY.unpack(raw)[0]


def block_key(data_id: int, block: int) -> bytes:
    return _BLOCK_KEY.pack(data_id, block)


def block_key_unpack(raw: bytes) -> tuple[int, int]:
    return _BLOCK_KEY.unpack(raw)


def block_val(state: int, alloc: int) -> bytes:
    return _BLOCK_VAL.pack(state, alloc)


def block_val_unpack(raw: bytes) -> tuple[int, int]:
    return _BLOCK_VAL.unpack(raw)


class Index:
    """Owns the environment and the cache's DB handles; checks the meta record on open."""

    def __init__(self, path: Path, *, share_id: str, block_size: int) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # sync=True, metasync=False: every commit syncs the data pages before the meta page
        # is written, so a crash (process or OS) can lose the last transaction but never corrupt
        # the tree; commit() then env.sync(True)s to make the newest meta page durable too.
        self.env = lmdb.open(
            str(path),
            map_size=MAP_SIZE,
            max_dbs=MAX_DBS,
            sync=True,
            metasync=False,
            readahead=False,
            subdir=True,
        )
        try:
            self.meta = self.env.open_db(b"cache.meta")
            self.files = self.env.open_db(b"cache.files")
            self.blocks = self.env.open_db(b"cache.blocks")
            self.volatile = self.env.open_db(b"cache.volatile")
            self.was_clean = self._check_meta(share_id, block_size)
        except BaseException:
            self.env.close()
            raise

    def _check_meta(self, share_id: str, block_size: int) -> bool:
        """Create or verify the meta record; mark the cache open. Returns the clean flag."""
        with self.env.begin(write=True, db=self.meta) as txn:
            version = txn.get(b"schema")
            if version is None:
                txn.put(b"schema", str(SCHEMA_VERSION).encode())
                txn.put(b"block_size", str(block_size).encode())
                txn.put(b"share_id", share_id.encode())
                was_clean = True
            else:
                if int(version) not in MIGRATES and int(version) != SCHEMA_VERSION:
                    raise CacheMismatch(
                        f"cache index has schema version {int(version)}, this program knows "
                        f"only {SCHEMA_VERSION}; delete the cache directory to start afresh"
                    )
                have_share = bytes(txn.get(b"share_id", b"")).decode()
                if have_share != share_id:
                    raise CacheMismatch(
                        f"cache directory belongs to share {have_share!r}, not {share_id!r}; "
                        "use another cache directory"
                    )
                have_bs = int(txn.get(b"block_size", b"0"))
                if have_bs != block_size:
                    raise CacheMismatch(
                        f"cache directory uses block size {have_bs}, not {block_size}; "
                        "open it with that block size or use another cache directory"
                    )
                was_clean = txn.get(b"clean", b"1") == b"1"
                if int(version) != SCHEMA_VERSION:
                    self._migrate(txn)
                    txn.put(b"schema", str(SCHEMA_VERSION).encode())
            txn.put(b"clean", b"0")
        self.env.sync(True)
        return was_clean

    def _migrate(self, txn: lmdb.Transaction) -> None:
        """Schema 1 -> 2, in the transaction that checks the meta record: every file record
        gains heat and a pin size (a crash before its commit leaves schema 1, migrated
        again at the next open)."""
        records = [(k, FileRecord.unpack_v1(bytes(v))) for k, v in txn.cursor(db=self.files)]
        for k, rec in records:
            txn.put(k, rec.pack(), db=self.files)

    def mark_clean_shutdown(self) -> None:
        with self.env.begin(write=True, db=self.meta) as txn:
            txn.put(b"clean", b"1")
        self.env.sync(True)

    def load_files(self) -> dict[int, FileRecord]:
        with self.env.begin(db=self.files) as txn:
            return {key_int(k): FileRecord.unpack(v) for k, v in txn.cursor()}

    def load_blocks(self, data_id: int) -> list[tuple[int, int, int]]:
        """(block, state, alloc) of every claim of one data file, in block order."""
        out = []
        prefix = _KEY.pack(data_id)
        with self.env.begin(db=self.blocks) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if k[:8] != prefix:
                        break
                    state, alloc = _BLOCK_VAL.unpack(v)
                    out.append((_BLOCK_KEY.unpack(k)[1], state, alloc))
        return out

    def load_volatile(self) -> set[int]:
        with self.env.begin(db=self.volatile) as txn:
            return {key_int(k) for k, _ in txn.cursor()}

    def delete_blocks_of(self, txn: lmdb.Transaction, data_id: int) -> None:
        prefix = _KEY.pack(data_id)
        cur = txn.cursor(db=self.blocks)
        if cur.set_range(prefix):
            while cur.key()[:8] == prefix:
                if not cur.delete():
                    break

    def close(self) -> None:
        self.env.close()
