"""Reconciling index and data files after a crash (the index was not closed cleanly).

What a crash can leave (INVARIANTS.md explains why nothing worse is possible):
- data written into blocks the index does not claim (fills and new writes whose records were
  not committed yet): punched out here;
- clean claims of data files in the volatile set, whose data may have been overwritten or
  punched before the index caught up: dropped here;
- data files of ids no record knows (created after the last commit): unlinked;
- counters in file records that disagree with the block records: recomputed.
"""

from __future__ import annotations

import logging
import os

import lmdb

from .datafile import DataFiles, metadata_allowance, page_up
from .index import (
    CLEAN,
    DIRTY,
    FileRecord,
    Index,
    block_key,
    block_key_unpack,
    block_val,
    block_val_unpack,
    key_bytes,
)
from .system import datasync, extents, punch_hole

log = logging.getLogger(__name__)


def reconcile(index: Index, data: DataFiles, block_size: int) -> None:
    """Make index and data files agree again, in one transaction (see the module doc)."""
    shift = block_size.bit_length() - 1
    volatile = index.load_volatile()
    files = index.load_files()
    by_id: dict[int, tuple[int, FileRecord]] = {rec.data_id: (k, rec) for k, rec in files.items()}
    claims: dict[int, dict[int, tuple[int, int]]] = {d: {} for d in by_id}
    env = index.env
    with env.begin(write=True) as txn:
        cur = txn.cursor(db=index.blocks)
        stale: list[bytes] = []
        for k, v in cur:
            data_id, b = block_key_unpack(k)
            if data_id in claims:
                claims[data_id][b] = block_val_unpack(v)
            else:
                stale.append(k)
        for k in stale:
            txn.delete(k, db=index.blocks)
        on_disk = data.all_ids()
        for data_id, path in on_disk.items():
            if data_id not in by_id:
                os.unlink(path)
        for data_id, (key, rec) in by_id.items():
            mine = claims[data_id]
            if data_id in volatile:
                for b in [b for b, (s, _) in mine.items() if s == CLEAN]:
                    del mine[b]
                    txn.delete(block_key(data_id, b), db=index.blocks)
            if data_id not in on_disk:
                if any(s == DIRTY for s, _ in mine.values()):
                    log.error("cache: data file of key %d is missing; its dirty data is lost", key)
                for b in mine:
                    txn.delete(block_key(data_id, b), db=index.blocks)
                mine.clear()
                occupied = 0
            else:
                occupied = _reconcile_file(txn, index, data, data_id, mine, shift)
            # The extent tree may hold more than today's blocks need (datafile.overhead_after).
            rec.used = sum(a for _, a in mine.values()) + metadata_allowance(len(mine))
            rec.used = max(rec.used, occupied) if mine else 0
            rec.dirty = sum(a for s, a in mine.values() if s == DIRTY)
            txn.put(key_bytes(key), rec.pack(), db=index.files)
        for data_id in volatile:
            txn.delete(key_bytes(data_id), db=index.volatile)
    env.sync(True)


def _reconcile_file(
    txn: lmdb.Transaction,
    index: Index,
    data: DataFiles,
    data_id: int,
    mine: dict[int, tuple[int, int]],
    shift: int,
) -> int:
    """Punch allocated ranges no claim covers; set each claim's alloc to what is on disk.
    Returns what the file then occupies (st_blocks, in bytes)."""
    bs = 1 << shift
    fd = os.open(data.path(data_id), os.O_RDWR | os.O_CLOEXEC)
    try:
        ext = extents(fd)
        top: dict[int, int] = {}  # claimed block -> end of its allocated bytes (from block start)
        punched = False
        for start, end in ext:
            pos = start
            while pos < end:
                b = pos >> shift
                bend = min(end, (b + 1) << shift)
                if b in mine:
                    top[b] = max(top.get(b, 0), bend - (b << shift))
                else:
                    # Whole block: a punch that stops at a mid-page EOF frees nothing there.
                    punch_hole(fd, pos, ((b + 1) << shift) - pos)
                    punched = True
                pos = bend
        for b, (state, alloc) in mine.items():
            real = min(bs, page_up(top.get(b, 0)))
            if real != alloc:
                mine[b] = (state, real)
                txn.put(block_key(data_id, b), block_val(state, real), db=index.blocks)
        if punched:
            datasync(fd)
        return os.fstat(fd).st_blocks * 512
    finally:
        os.close(fd)
