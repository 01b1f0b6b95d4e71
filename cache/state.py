"""CacheState: what every part of BlockCache shares, so each mixin can be type-checked alone.

BlockCache is split by concern (reading.py, writing.py, dirtyblocks.py, eviction.py,
durability.py); each of those subclasses CacheState. It holds the shared attributes, the
primitives that keep their counters right (`_set_block` is the only place that changes a
block's state and the byte counters together, see INVARIANTS.md), and abstract declarations
of the few methods one mixin calls on another, so that mypy checks those calls and the
runtime refuses a BlockCache that lacks one.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import lmdb
import trio

from .datafile import DataFiles, metadata_allowance, overhead_after, page_up
from .entry import CLEAN, DIRTY, CachedFile, Fill
from .footprint import Footprint
from .heat import Order, access, last_access_key, order_key
from .index import FileRecord, Index
from .results import REASONS, Bound, Fetch

#: upper bounds (seconds) of the fetch-latency buckets in CacheStats.fetch_buckets
FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def evictable(f: CachedFile) -> bool:
    """Unpinned with a clean block (from the record's counters until its blocks are loaded)."""
    return not f.pinned and not f.dead and f.used - f.overhead > f.dirty


class CacheState(ABC):
    """The shared state of BlockCache (see blockcache.py for the whole)."""

    #: a data file stays in the volatile set at least this long after its last write, so a file
    #: written continuously pays the volatile-set transaction once, not once per commit
    volatile_linger = 30.0
    #: seconds between free-space checks (system.disk_space) when min_free_pct is set
    free_space_interval = 1.0
    #: seconds between two measurements of the index and other files (`run`; footprint.py)
    footprint_interval = 0.1
    #: the most files one check of tier_after tiers (the rest wait for the next second)
    date_batch = 1000

    def __init__(
        self,
        directory: Path,
        index: Index,
        *,
        max_bytes: int,
        block_size: int,
        min_free_pct: float,
        full_timeout: float,
        bound: Bound = "directory",
        other_reserve: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._index = index
        self.env: lmdb.Environment = index.env
        self.block_size = block_size
        self._shift = block_size.bit_length() - 1
        self.max_bytes = max_bytes
        self.min_free_pct = min_free_pct
        self.full_timeout = full_timeout
        self._data = DataFiles(directory / "data")
        #: "directory": max_bytes bounds the whole directory; "data": the data files only
        self.bound: Bound = bound
        self._footprint = Footprint(directory, self._data, other_reserve=other_reserve)
        self._files: dict[int, CachedFile] = {}
        self._by_id: dict[int, CachedFile] = {}
        #: the clock of last accesses, heat and tier_after (seconds; time.time by default)
        self._clock = clock
        #: every live unpinned file with a clean block is in both (INVARIANTS.md 8)
        self._heat_order: Order[CachedFile] = Order(order_key)  # coldest first
        self._date_order: Order[CachedFile] = Order(last_access_key)  # least recent first
        #: tier clean unpinned data of files not accessed for this long (seconds), if set
        self.tier_after: float | None = None
        #: called after every fetch with (seconds, bytes, ok); may be set at run time
        self.on_fetch: Callable[[float, int, bool], None] | None = None
        self._used = 0
        self._dirty = 0
        self._gen = 0
        self._volatile: set[int] = set()  # data ids (INVARIANTS.md, "Words")
        self._pending_files: set[CachedFile] = set()  # files with blocks for the next commit
        self._meta_dirty: set[CachedFile] = set()  # files whose record the next commit writes
        self._deleted_keys: set[int] = set()
        self._dropped_ids: set[int] = set()
        self._unsynced: set[int] = set()  # data ids written since the last commit
        self._syncing: set[int] = set()  # data ids commit_async is syncing in a thread
        #: not closed cleanly last time (set by BlockCache.open): the owner may hold records
        #: of keys it no longer knows (it purged them; the cache's commit was lost)
        self.recovered = False
        self._space_event = trio.Event()
        self._limit_cache: tuple[float, int] = (-1e9, max_bytes)  # (when, free-space limit)
        self._hits = 0
        self._misses = 0
        self._fetched = 0
        self._evictions = 0
        self._evicted_bytes = 0
        self._evicted_by = {r: [0, 0] for r in REASONS}  # reason -> [blocks, bytes]
        self._hit_bytes = 0
        self._fetches = 0
        self._fetch_failures = 0
        self._fetch_seconds = 0.0
        self._fetch_buckets = [0] * (len(FETCH_BUCKETS) + 1)  # the last one: beyond them all
        # pinned files: sum of pin_share (what pins reserve), of used and of dirty
        self._pin_total = 0
        self._pin_used = 0
        self._pin_dirty = 0

    # --- entries and their block states

    def _new_data_id(self) -> int:
        while True:
            data_id = secrets.randbits(63)
            if data_id and data_id not in self._by_id:
                return data_id

    def _get(self, key: int) -> CachedFile:
        """The entry of `key` with its block states loaded; a new empty one if unknown."""
        f = self._files.get(key)
        if f is None:
            rec = FileRecord(self._new_data_id(), 0, 0, 0, 0, 0.0, False)
            f = CachedFile(key, rec, fresh=True)
            f.states = bytearray()
            self._files[key] = f
            self._by_id[f.data_id] = f
        elif f.states is None:
            self._load_blocks(f)
        return f

    def _load_blocks(self, f: CachedFile) -> None:
        if f.pinned:
            self._pin_out(f)
        recs = self._index.load_blocks(f.data_id)
        n = recs[-1][0] + 1 if recs else 0
        st = bytearray(n)
        used = dirty = 0
        for b, state, alloc in recs:
            st[b] = state
            if alloc != self.block_size:
                f.partial[b] = alloc
            used += alloc
            if state == DIRTY:
                dirty += alloc
                self._gen += 1
                f.gens[b] = self._gen
        f.states = st
        f.durable = bytearray(st)
        f.npresent = len(recs)
        # What the data file occupies beyond its blocks' allocations is the extent tree, which
        # may be larger than the allowance for today's blocks (it keeps the leaves of an
        # earlier, bigger state): measured once here, then kept (overhead_after).
        extra = self._data.allocated(f.data_id) - used if recs else 0
        f.overhead = max(metadata_allowance(len(recs)), page_up(max(0, extra)))
        used += f.overhead
        # The counters in the file record are only hints after a crash; trust the blocks.
        self._used += used - f.used
        self._dirty += dirty - f.dirty
        f.used, f.dirty = used, dirty
        if f.pinned:
            self._pin_in(f)

    def _alloc(self, f: CachedFile, b: int) -> int:
        return f.partial.get(b, self.block_size)

    def _set_block(self, f: CachedFile, b: int, state: int, alloc: int = 0) -> None:
        """Change one block's memory state, keeping every byte counter right (and the pin
        totals, and the orders: a file that gains a clean block joins them)."""
        st = f.states
        assert st is not None
        pinned = f.pinned
        if pinned:
            self._pin_out(f)
        old = st[b]
        if old >= CLEAN:
            old_alloc = f.partial.pop(b, self.block_size)
            f.used -= old_alloc
            self._used -= old_alloc
            if old == DIRTY:
                f.dirty -= old_alloc
                self._dirty -= old_alloc
                f.gens.pop(b, None)
        if state >= CLEAN:
            if alloc != self.block_size:
                f.partial[b] = alloc
            f.used += alloc
            self._used += alloc
            if state == DIRTY:
                f.dirty += alloc
                self._dirty += alloc
        st[b] = state
        if (old >= CLEAN) != (state >= CLEAN):
            f.npresent += 1 if state >= CLEAN else -1
            over = overhead_after(f.overhead, f.npresent)
            if over != f.overhead:
                f.used += over - f.overhead
                self._used += over - f.overhead
                f.overhead = over
        f.pending.add(b)
        self._pending_files.add(f)
        self._meta_dirty.add(f)
        if pinned:
            self._pin_in(f)
        elif state == CLEAN:
            self._heat_order.add(f)
            self._date_order.add(f)

    def _pin_out(self, f: CachedFile) -> None:
        """Take a pinned file out of the pin totals (before its counters change)."""
        self._pin_total -= f.pin_share
        self._pin_used -= f.used
        self._pin_dirty -= f.dirty

    def _pin_in(self, f: CachedFile) -> None:
        f.pin_share = max(f.pin_size, f.used)
        self._pin_total += f.pin_share
        self._pin_used += f.used
        self._pin_dirty += f.dirty

    def _fd(self, f: CachedFile) -> int:
        if f.fresh:
            fd = self._data.fd(f.data_id, create=True)
            f.fresh = False
            return fd
        try:
            return self._data.fd(f.data_id)
        except FileNotFoundError:
            return self._data.fd(f.data_id, create=True)

    def _touch(self, f: CachedFile) -> None:
        """An access: heat and last access (heat.py), written by the next commit."""
        access(f, self._clock())
        self._meta_dirty.add(f)

    def _count_evicted(self, reason: str, blocks: int, nbytes: int) -> None:
        self._evictions += blocks
        self._evicted_bytes += nbytes
        counts = self._evicted_by[reason]
        counts[0] += blocks
        counts[1] += nbytes

    def _space_freed(self) -> None:
        self._space_event.set()
        self._space_event = trio.Event()

    # --- what one mixin calls on another

    @abstractmethod
    async def _join_fill(self, fill: Fill, got: dict[int, memoryview]) -> None:
        """Wait for another task's fill and keep its bytes (reading.py)."""

    @abstractmethod
    async def _fetch_run(
        self, f: CachedFile, first: int, last: int, fetch: Fetch, got: dict[int, memoryview]
    ) -> None:
        """Fetch blocks [first, last) with one call, store them if there is room (reading.py)."""

    @abstractmethod
    def _make_room(self, need: int, protect: tuple[CachedFile, int, int] | None = None) -> bool:
        """Evict until `need` more bytes fit under the bound (eviction.py)."""

    @abstractmethod
    def _reserved(self) -> int:
        """Bytes of max_bytes the data may not use (eviction.py)."""

    @abstractmethod
    def _drop_clean(self, f: CachedFile, blocks: list[int], *, persist: bool = True) -> int:
        """Punch clean blocks out, their claims first; bytes freed (eviction.py)."""

    @abstractmethod
    def _persist_now(
        self,
        *,
        deletes: Sequence[tuple[CachedFile, int]] = (),
        dirties: Sequence[tuple[CachedFile, int]] = (),
        volatile: Sequence[CachedFile] = (),
        files: Sequence[CachedFile] = (),
        force: bool = False,
    ) -> None:
        """Withdraw claims in a synced transaction before data is destroyed (durability.py)."""
