"""BlockCache: the LMDB-indexed local block cache (see API.md for the contract and
INVARIANTS.md for what is guarded how and what a crash leaves behind).

Everything runs on the trio thread; nothing here is thread-safe. Data I/O (pread/pwrite on the
local data files) is synchronous on purpose: it hits the page cache and costs less than a hop
to a worker thread. The only awaits are fetches from the remote, waiting for a fill another
task started, and waiting for room when dirty+pinned data fill the cache.

This module holds the entries, lifecycle and tiering state; the behaviour is split by concern
into mixins: reading.py, writing.py (writes and shape changes), writeback.py, eviction.py,
durability.py. On-disk formats: index.py (LMDB), datafile.py (sparse files), recovery.py.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

import lmdb
import trio

from . import recovery
from .datafile import DataFiles, metadata_allowance
from .durability import Durability
from .entry import CLEAN, DIRTY, MAX_RANGE, MIN_BLOCK, CachedFile
from .eviction import Eviction
from .index import (
    FileRecord,
    Index,
)
from .mapped import MappedFile
from .reading import Reading
from .results import CacheStats, FileState
from .writeback import WriteBack
from .writing import Writing

log = logging.getLogger(__name__)


class BlockCache(Reading, Writing, WriteBack, Eviction, Durability):
    """Blocks of files keyed by an integer (the filesystem's inode number)."""

    #: a data file stays in the volatile set at least this long after its last write, so a file
    #: written continuously pays the volatile-set transaction once, not once per commit
    volatile_linger = 30.0
    #: seconds between statvfs calls when min_free_pct is set
    statvfs_interval = 1.0
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
        self._files: dict[int, CachedFile] = {}
        self._by_id: dict[int, CachedFile] = {}
        self._lru: OrderedDict[CachedFile, None] = OrderedDict()  # oldest first
        self._used = 0
        self._dirty = 0
        self._gen = 0
        self._volatile: set[int] = set()
        self._pending_files: set[CachedFile] = set()
        self._meta_dirty: set[CachedFile] = set()
        self._deleted_keys: set[int] = set()
        self._dropped_ids: set[int] = set()
        self._unsynced: set[int] = set()
        self._space_event = trio.Event()
        self._limit_cache: tuple[float, int] = (-1e9, max_bytes)
        self._hits = self._misses = self._fetched = self._evictions = self._evicted_bytes = 0
        self._closed = False
        self._mapped = MappedFile(directory / "index.lmdb" / "data.mdb")
        self.index_trims = 0

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        *,
        max_bytes: int,
        share_id: str,
        block_size: int = 1 << 20,
        min_free_pct: float = 0.0,
        full_timeout: float = 30.0,
    ) -> BlockCache:
        """Create or open <directory>/index.lmdb and <directory>/data/.

        Raises CacheMismatch for a cache made for another share, block size or schema. After
        a crash (the index was not closed cleanly) it reconciles index and data files first."""
        if block_size < MIN_BLOCK or block_size > MAX_RANGE or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two in [4 KiB, 4 MiB]: {block_size}")
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        index = Index(directory / "index.lmdb", share_id=share_id, block_size=block_size)
        try:
            self = cls(
                directory,
                index,
                max_bytes=max_bytes,
                block_size=block_size,
                min_free_pct=min_free_pct,
                full_timeout=full_timeout,
            )
            if not index.was_clean:
                log.warning("cache %s was not closed cleanly: reconciling", directory)
                recovery.reconcile(index, self._data, block_size)
            self._load()
        except BaseException:
            index.close()
            raise
        return self

    def _load(self) -> None:
        recs = self._index.load_files()
        for key, rec in sorted(recs.items(), key=lambda kv: kv[1].atime):
            f = CachedFile(key, rec, fresh=False)
            self._files[key] = f
            self._by_id[f.data_id] = f
            self._lru[f] = None
            self._used += f.used
            self._dirty += f.dirty
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

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED, commit_interval: float = 5.0):
        """Background upkeep: free-space eviction every second, heat flush and commit every
        `commit_interval` seconds, index pages unmapped when too many are mapped (checked every
        second: 0.3 ms). Start with `await nursery.start(cache.run)`; cancel to stop."""
        task_status.started()
        last_commit = trio.current_time()
        while True:
            await trio.sleep(1.0)
            if self.min_free_pct > 0:
                self._limit_cache = (-1e9, self.max_bytes)
                self._make_room(0)
            if trio.current_time() - last_commit >= commit_interval:
                last_commit = trio.current_time()
                if self._has_pending():
                    await self.commit_async()
            self.trim_index()

    def trim_index(self) -> None:
        """Unmap the index's pages when more than `index_rss_limit` of them are mapped (a big
        listing walked them): the daemon's RSS stays its own memory."""
        found = self._mapped.mapping()
        if found and found[2] > self.index_rss_limit and self._mapped.trim(found):
            self.index_trims += 1

    def _new_data_id(self) -> int:
        while True:
            data_id = secrets.randbits(63)
            if data_id and data_id not in self._by_id:
                return data_id

    def _get(self, key: int) -> CachedFile:
        """The entry of `key` with its block states loaded; a new empty one if unknown."""
        f = self._files.get(key)
        if f is None:
            rec = FileRecord(self._new_data_id(), 0, 0, 0, 0, time.time(), False)
            f = CachedFile(key, rec, fresh=True)
            f.states = bytearray()
            self._files[key] = f
            self._by_id[f.data_id] = f
            self._lru[f] = None
        elif f.states is None:
            self._load_blocks(f)
        return f

    def _load_blocks(self, f: CachedFile) -> None:
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
        f.overhead = metadata_allowance(len(recs))
        used += f.overhead
        # The counters in the file record are only hints after a crash; trust the blocks.
        self._used += used - f.used
        self._dirty += dirty - f.dirty
        f.used, f.dirty = used, dirty

    def _alloc(self, f: CachedFile, b: int) -> int:
        return f.partial.get(b, self.block_size)

    def _set_block(self, f: CachedFile, b: int, state: int, alloc: int = 0) -> None:
        """Change one block's memory state, keeping every byte counter right."""
        st = f.states
        assert st is not None
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
            over = metadata_allowance(f.npresent)
            if over != f.overhead:
                f.used += over - f.overhead
                self._used += over - f.overhead
                f.overhead = over
        f.pending.add(b)
        self._pending_files.add(f)
        self._meta_dirty.add(f)

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
        f.atime = time.time()
        self._lru.move_to_end(f)
        self._meta_dirty.add(f)

    def _space_freed(self) -> None:
        self._space_event.set()
        self._space_event = trio.Event()

    def pin(self, key: int) -> None:
        f = self._get(key)
        if not f.pinned:
            f.pinned = True
            self._meta_dirty.add(f)

    def unpin(self, key: int) -> None:
        f = self._files.get(key)
        if f is not None and f.pinned:
            f.pinned = False
            self._meta_dirty.add(f)
            self._space_freed()

    def state(self, key: int, size: int) -> FileState:
        f = self._files.get(key)
        nblocks = (size + self.block_size - 1) >> self._shift
        if f is None:
            local = nblocks == 0
            return FileState(not local, False, local, False, False, 0)
        f = self._get(key)
        st = f.states
        assert st is not None
        sh = self._shift
        present = sum(1 for b in range(min(nblocks, len(st))) if st[b] >= CLEAN)
        local = sum(
            1
            for b in range(nblocks)
            if (b < len(st) and st[b] >= CLEAN) or (b << sh) >= f.remote_valid
        )
        full = local == nblocks
        tiered = not full and present == 0
        return FileState(tiered, not full and not tiered, full, DIRTY in st, f.pinned, f.used)

    def cached_bytes(self, key: int) -> int:
        f = self._files.get(key)
        return f.used if f is not None else 0

    def blocks(self, key: int) -> dict[int, str]:
        """block -> "clean"/"dirty" for every present block (status output, tests)."""
        f = self._files.get(key)
        if f is None:
            return {}
        st = self._get(key).states
        assert st is not None
        return {b: "dirty" if s == DIRTY else "clean" for b, s in enumerate(st) if s >= CLEAN}

    def data_path(self, key: int) -> Path | None:
        f = self._files.get(key)
        return self._data.path(f.data_id) if f is not None else None

    def stats(self) -> CacheStats:
        pinned = sum(f.used for f in self._files.values() if f.pinned)
        return CacheStats(
            used=self._used,
            dirty=self._dirty,
            pinned=pinned,
            hits=self._hits,
            misses=self._misses,
            fetched=self._fetched,
            evictions=self._evictions,
            evicted_bytes=self._evicted_bytes,
            max_bytes=self.max_bytes,
            files=len(self._files),
        )
