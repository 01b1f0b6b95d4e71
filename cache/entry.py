"""In-memory state of one cached file: a byte per block, generations, fills in flight."""

from __future__ import annotations

import trio

from .index import CLEAN, DIRTY, FileRecord

MAX_RANGE = 4 << 20  # largest dirty range handed to the uploader (Put Range limit)
MIN_BLOCK = 4096
ABSENT = 0  # no claim; the data file has a hole there
FILLING = 1  # a fetch is in flight; readers wait on its Fill
__all__ = ["ABSENT", "FILLING", "CLEAN", "DIRTY", "MAX_RANGE", "MIN_BLOCK", "Fill", "CachedFile"]


def has_present(st: bytearray | None) -> bool:
    """Whether any block is CLEAN or DIRTY (C-speed scan)."""
    return st is not None and (st.find(CLEAN) >= 0 or st.find(DIRTY) >= 0)


class Fill:
    """One fetch of a run of contiguous missing blocks [first, last); waiters share it.

    After `event` is set: `error` is what the fetch raised, or `data` holds the fetched bytes
    (from the run's first byte). Waiters always take `data`: the blocks may not have been
    stored (no room, `cancelled` by truncate/invalidate/delete) or may be evicted again.
    `data` stays None after a fill copied file to file (a FileSlice) and stored: the blocks
    are CLEAN and waiters pread them (or, evicted meanwhile, copy them again: a local copy)."""

    __slots__ = ("first", "last", "event", "data", "error", "cancelled")

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        self.event = trio.Event()
        self.data: bytes | memoryview | None = None
        self.error: BaseException | None = None
        self.cancelled = False


class CachedFile:
    """One file's cache entry. `states` is None until the block records are loaded."""

    __slots__ = (
        "key",
        "data_id",
        "remote_valid",
        "length",
        "used",
        "dirty",
        "atime",
        "heat",
        "pinned",
        "pin_size",
        "pin_share",
        "states",
        "durable",
        "partial",
        "gens",
        "inflight",
        "pending",
        "fresh",
        "epoch",
        "last_mut",
        "dead",
        "npresent",
        "overhead",
    )

    def __init__(self, key: int, rec: FileRecord, *, fresh: bool) -> None:
        self.key = key
        self.data_id = rec.data_id
        self.remote_valid = rec.remote_valid
        self.length = rec.length
        self.used = rec.used  # bytes allocated by present blocks
        self.dirty = rec.dirty  # bytes allocated by dirty blocks
        self.atime = rec.atime  # last access (heat.py); 0.0 when never accessed
        self.heat = rec.heat  # as of atime
        self.pinned = rec.pinned
        self.pin_size = rec.pin_size  # what the pin reserves (tiering.py)
        self.pin_share = 0  # max(pin_size, used) while pinned: its part of the pin total
        self.states: bytearray | None = None  # memory state per block
        self.durable = bytearray()  # what the durable index claims per block
        self.partial: dict[int, int] = {}  # block -> allocated bytes, when not a whole block
        self.gens: dict[int, int] = {}  # dirty block -> generation of its last change
        self.inflight: dict[int, Fill] = {}
        self.pending: set[int] = set()  # blocks whose record may differ from `states`
        self.fresh = fresh  # data file not created yet: create it empty
        self.epoch = 0  # bumped when content is dropped (truncate, invalidate)
        self.last_mut = 0.0
        self.dead = False
        self.npresent = 0  # blocks CLEAN or DIRTY (valid once states are loaded)
        self.overhead = 0  # metadata_allowance(npresent), included in `used`

    def record(self) -> FileRecord:
        return FileRecord(
            self.data_id,
            self.remote_valid,
            self.length,
            self.used,
            self.dirty,
            self.atime,
            self.pinned,
            self.heat,
            self.pin_size,
        )

    def grow(self, nblocks: int) -> None:
        """Make both state arrays at least `nblocks` long."""
        st = self.states
        assert st is not None
        if len(st) < nblocks:
            st.extend(bytes(nblocks - len(st)))
        if len(self.durable) < nblocks:
            self.durable.extend(bytes(nblocks - len(self.durable)))

    def state(self, block: int) -> int:
        st = self.states
        assert st is not None
        return st[block] if block < len(st) else ABSENT

    def cancel_fills(self, first_block: int = 0) -> None:
        """Fills touching blocks >= first_block must not store: the content changed under them."""
        st = self.states
        assert st is not None
        for fill in {
            fl for b, fl in self.inflight.items() if b >= first_block or fl.last > first_block
        }:
            fill.cancelled = True
            for b in range(fill.first, fill.last):
                if self.inflight.get(b) is fill:
                    del self.inflight[b]
                    if st[b] == FILLING:
                        st[b] = ABSENT
