"""Small value types the cache hands out: per-file state, statistics, upload tokens."""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple


class FileSlice(NamedTuple):
    """What a fetch may answer instead of bytes: the remote's bytes of the range are in a local
    file, [offset, offset+length) of `path` (length already clipped at the remote's end). The
    cache copies them into its data file with system.copy_range, file to file: a reflink where
    the filesystem shares extents, never through Python's memory (`migrate --cutover`)."""

    path: bytes
    offset: int
    length: int


def as_bytes(answer: bytes | FileSlice) -> bytes:
    """A fetch's answer as bytes, for the callers that need the bytes themselves. A file
    shorter than the slice says no longer holds what the remote does: EIO, never zeros."""
    if isinstance(answer, bytes):
        return answer
    fd = os.open(answer.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, answer.length, answer.offset)
    finally:
        os.close(fd)
    if len(data) < answer.length:
        raise OSError(errno.EIO, f"{answer.path!r} is shorter than the range it stands for")
    return data


#: fetch(offset, length) -> remote bytes of [offset, offset+length), shorter at the remote's
#: end; or a FileSlice saying where those bytes are on local disk.
Fetch = Callable[[int, int], Awaitable["bytes | FileSlice"]]

#: what max_bytes bounds: the whole cache directory (the default), or the data files only
Bound = Literal["directory", "data"]

#: why clean data was evicted: room for new data under max_bytes ("size"), the free-space
#: floor min_free_pct ("free_space"), tier_after ("date"), a tier() or evict() call ("command")
REASONS = ("size", "free_space", "date", "command")


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
    """Counters since open (hits, misses, fetched, fetches, evictions) and current sizes in
    bytes. Hits and misses count read() calls (read-ahead, `prefetch`, is neither)."""

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
    hit_bytes: int = 0  # bytes of the reads served entirely from the cache (`hits`)
    #: fetches from the remote that ended (failed ones included), those that raised, and
    #: the seconds they took (trio's clock), also as cumulative buckets: (upper bound in
    #: seconds, fetches that took at most that), the last bound math.inf (Prometheus' `le`)
    fetches: int = 0
    fetch_failures: int = 0
    fetch_seconds: float = 0.0
    fetch_buckets: tuple[tuple[float, int], ...] = ()
    #: reason (REASONS) -> blocks and bytes evicted for it since open
    evicted_by: dict[str, EvictionCount] = field(default_factory=dict)
    index_bytes: int = 0  # the index as measured (index.lmdb/, the filesystem's tables too)
    files_cached: int = 0  # files with data on disk
    pin_bytes: int = 0  # what pins reserve (`pinned_bytes()`); `pinned` is what they hold


class EvictionCount(NamedTuple):
    blocks: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TierCandidate:
    """A file eviction would take next (`next_to_tier`): "date" when it was not accessed
    for tier_after (the next check takes it whatever the free space), else "heat"."""

    key: int
    reason: Literal["date", "heat"]
    heat: float  # now
    last_access: float | None  # the cache's clock (time.time() seconds)
    cached_bytes: int


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the cache holds of one file (`file_info`)."""

    cached_bytes: int  # on disk, dirty included
    dirty_bytes: int
    pinned: bool
    pin_bytes: int  # what its pin reserves (0 when not pinned)
    last_access: float | None  # None: never accessed since it has a record
    heat: float  # now
