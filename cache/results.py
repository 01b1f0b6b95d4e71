"""Small value types the cache hands out: per-file state, statistics, upload tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

#: fetch(offset, length) -> remote bytes of [offset, offset+length); shorter at the remote's end.
Fetch = Callable[[int, int], Awaitable[bytes]]

#: what max_bytes bounds: the whole cache directory (the default), or the data files only
Bound = Literal["directory", "data"]


@dataclass(frozen=True, slots=True)
class Token:
    """What `snapshot_range` saw: the file's data id and (block, generation) of its dirty blocks.

    `mark_clean` cleans a block only if its generation is still the one recorded here, so a
    write that lands while the upload runs keeps the block dirty."""

    data_id: int
    gens: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class FileState:
    """Tiering state of one file for `status` and the tiering loop.

    tiered: nothing of it is local; partial: some of it is; full: every block of [0, size) can be
    served without the remote (present, or beyond what the remote holds)."""

    tiered: bool
    partial: bool
    full: bool
    dirty: bool
    pinned: bool
    cached_bytes: int

    def __str__(self) -> str:
        parts = ["full" if self.full else "partial" if self.partial else "tiered"]
        if self.dirty:
            parts.append("dirty")
        if self.pinned:
            parts.append("pinned")
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since open (hits, misses, fetched, evictions) and current sizes in bytes."""

    used: int  # bytes allocated on disk by present blocks
    dirty: int
    pinned: int
    hits: int  # reads served entirely from the cache
    misses: int  # reads that needed the remote
    fetched: int  # bytes fetched from the remote
    evictions: int  # blocks evicted
    evicted_bytes: int
    max_bytes: int
    files: int  # files with a cache record
    #: of max_bytes, what the index, directories and other files take or may take before
    #: the next measurement (footprint.py); the data may use the rest. 0 with bound="data".
    reserved: int = 0
