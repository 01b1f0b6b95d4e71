"""BlockCache: the LMDB-indexed local block cache (see API.md for the contract and
INVARIANTS.md for what is guarded how and what a crash leaves behind).

Everything runs on the trio thread; nothing here is thread-safe. Data I/O (pread/pwrite on the
local data files) is synchronous on purpose: it hits the page cache and costs less than a hop
to a worker thread. The only awaits are fetches from the remote, waiting for a fill another
task started, and waiting for room when dirty+pinned data fill the cache.

This module holds the lifecycle, the background upkeep and the numbers. The shared state and
its primitives are in state.py (CacheState); the behaviour is split by concern into mixins
that subclass it: reading.py, writing.py (writes and shape changes), dirtyblocks.py (dirty
tracking for the uploader), eviction.py (the bound and the policies), tiering.py (pins, heat,
what goes next), durability.py. Heat and the eviction orders: heat.py. On-disk formats:
index.py (LMDB), datafile.py (sparse files), recovery.py. Every platform-specific call is in
system.py.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from . import recovery, system
from .dirtyblocks import DirtyBlocks
from .durability import Durability
from .entry import MAX_RANGE, MIN_BLOCK, CachedFile
from .errors import CacheTooSmall
from .eviction import Eviction
from .footprint import MIN_BLOCKS, human_size
from .index import Index
from .mapped import MappedFile
from .reading import Reading
from .results import REASONS, Bound, CacheStats, EvictionCount
from .state import FETCH_BUCKETS, evictable
from .tiering import Tiering
from .writing import Writing

log = logging.getLogger(__name__)


class BlockCache(Reading, Writing, DirtyBlocks, Eviction, Tiering, Durability):
    """Blocks of files keyed by an integer (the filesystem's inode number)."""

    #: pages of the LMDB index mapped into the process beyond this are unmapped (mapped.py)
    index_rss_limit = 32 << 20

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
        super().__init__(
            directory,
            index,
            max_bytes=max_bytes,
            block_size=block_size,
            min_free_pct=min_free_pct,
            full_timeout=full_timeout,
            bound=bound,
            other_reserve=other_reserve,
            clock=clock,
        )
        self._closed = False
        self._mapped = MappedFile(directory / "index.lmdb" / "data.mdb")
        self.index_trims = 0

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        share_id: str,
        block_size: int = 1 << 20,
        min_free_pct: float = 0.0,
        full_timeout: float = 30.0,
        bound: Bound = "directory",
        other_reserve: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> BlockCache:
        """Create or open <directory>/index.lmdb and <directory>/data/.

        max_bytes bounds everything in the directory (bound="directory", footprint.py), or
        the data files alone (bound="data"). Raises CacheMismatch for a cache made for another
        share, block size or schema, and CacheTooSmall when max_bytes cannot hold what the
        directory holds besides data plus MIN_BLOCKS blocks. After a crash (the index was not
        closed cleanly) it reconciles index and data files first. `clock`: the time of last
        accesses, heat and tier_after (tests inject one)."""
        if block_size < MIN_BLOCK or block_size > MAX_RANGE or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two in [4 KiB, 4 MiB]: {block_size}")
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not system.HOLES:
            log.warning(
                "this system cannot punch holes: dropped blocks are zeroed but stay allocated "
                "until their data file is deleted, so the cache may outgrow max_bytes"
            )
        index = Index(path / "index.lmdb", share_id=share_id, block_size=block_size)
        try:
            self = cls(
                path,
                index,
                max_bytes=max_bytes,
                block_size=block_size,
                min_free_pct=min_free_pct,
                full_timeout=full_timeout,
                bound=bound,
                other_reserve=other_reserve,
                clock=clock,
            )
            if bound == "directory":
                try:
                    self._check_size()
                except CacheTooSmall:
                    if index.was_clean:
                        index.mark_clean_shutdown()  # nothing changed: no recovery next time
                    raise
            self.recovered = not index.was_clean
            if not index.was_clean:
                log.warning("cache %s was not closed cleanly: reconciling", path)
                recovery.reconcile(index, self._data, block_size)
            self._load()
            if self._used > self._limit():
                self._make_room(0)  # a smaller bound than last time, or a grown index
        except BaseException:
            index.close()
            raise
        return self

    def _check_size(self) -> None:
        fp = self._footprint
        need = fp.minimum(self.block_size)
        if self.max_bytes < need:
            raise CacheTooSmall(
                f"a cache size of {human_size(self.max_bytes)} is too small: it must be at least "
                f"{human_size(need)} ({MIN_BLOCKS} blocks of {human_size(self.block_size)}, and "
                f"{human_size(need - MIN_BLOCKS * self.block_size)} for the index, directories "
                "and other files of the cache directory)",
                need,
            )

    @property
    def other_reserve(self) -> int:
        """What the caller's own files in the cache directory (a rotated log) may take at
        most; reserved out of max_bytes like the index (footprint.py). May be changed at run
        time."""
        return self._footprint.other_reserve

    @other_reserve.setter
    def other_reserve(self, nbytes: int) -> None:
        self._footprint.other_reserve = nbytes

    def _load(self) -> None:
        recs = self._index.load_files()
        for key, rec in recs.items():
            f = CachedFile(key, rec, fresh=False)
            self._files[key] = f
            self._by_id[f.data_id] = f
            self._used += f.used
            self._dirty += f.dirty
            if f.pinned:
                self._pin_in(f)
        candidates = [f for f in self._files.values() if evictable(f)]
        self._heat_order.rebuild(candidates)
        self._date_order.rebuild(candidates)
        self._volatile = self._index.load_volatile()

    def close(self) -> None:
        """Commit and close; the environment is closed too, so close other users first."""
        if self._closed:
            return
        self.commit(_linger=0.0)
        self._index.mark_clean_shutdown()
        self._closed = True
        self._data.close_all()
        self._index.close()

    async def run(
        self,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        commit_interval: float = 5.0,
    ) -> None:
        """Background upkeep: the index and other files measured every `footprint_interval`
        (0.1 s: a few stat calls) and data evicted when they grew into its room (footprint.py),
        the free-space floor and tier_after checked every second, heat flush and commit every
        `commit_interval` seconds, index pages unmapped when too many are mapped (checked
        every second: 0.3 ms). Start with `await nursery.start(cache.run)`; cancel to stop."""
        task_status.started()
        last_commit = last_second = trio.current_time()
        stuck = (-1, -1)  # (used, limit) when eviction last could not get under the limit
        last_limit = self._limit()
        while True:
            await trio.sleep(self.footprint_interval)
            self._footprint.refresh()
            now = trio.current_time()
            second = now - last_second >= 1.0
            if second:
                last_second = now
                if self.min_free_pct > 0:
                    self._limit_cache = (-1e9, 0)
            limit = self._limit()
            if limit > last_limit:
                self._space_freed()  # a writer waiting for room may find it now
            last_limit = limit
            if self._used > limit and (self._used, limit) != stuck:
                # dirty and pinned data cannot go: do not walk every file again until
                # something changed
                stuck = (-1, -1) if self._make_room(0) else (self._used, self._limit())
            if not second:
                continue
            self._tier_aged()
            if now - last_commit >= commit_interval:
                last_commit = now
                if self._has_pending():
                    await self.commit_async()
            self.trim_index()

    def trim_index(self) -> None:
        """Unmap the index's pages when more than `index_rss_limit` of them are mapped (a big
        listing walked them): the daemon's RSS stays its own memory."""
        found = self._mapped.mapping()
        if found and found.resident > self.index_rss_limit and self._mapped.trim(found):
            self.index_trims += 1

    def keys(self) -> list[int]:
        """Every key the cache holds a record of (content, a pin or a known remote size)."""
        return list(self._files)

    def data_path(self, key: int) -> Path | None:
        f = self._files.get(key)
        return self._data.path(f.data_id) if f is not None else None

    def stats(self) -> CacheStats:
        """Counters and sizes (results.CacheStats); a walk over the files (files_cached):
        about 8 ms with 100,000."""
        cumulative = []
        total = 0
        for bound, count in zip((*FETCH_BUCKETS, float("inf")), self._fetch_buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        return CacheStats(
            used=self._used,
            dirty=self._dirty,
            pinned=self._pin_used,
            hits=self._hits,
            misses=self._misses,
            fetched=self._fetched,
            evictions=self._evictions,
            evicted_bytes=self._evicted_bytes,
            max_bytes=self.max_bytes,
            files=len(self._files),
            reserved=self._reserved(),
            hit_bytes=self._hit_bytes,
            fetches=self._fetches,
            fetch_failures=self._fetch_failures,
            fetch_seconds=self._fetch_seconds,
            fetch_buckets=tuple(cumulative),
            evicted_by={r: EvictionCount(*self._evicted_by[r]) for r in REASONS},
            index_bytes=self._footprint.index,
            files_cached=sum(1 for f in self._files.values() if f.used),
            pin_bytes=self._pin_total,
        )
