"""Everything in the cache directory besides data blocks, and what `max_bytes` keeps for it.

`max_bytes` bounds what the whole cache directory occupies on disk, as `du` counts it
(allocated blocks of every file and directory in it). The data blocks are counted by the cache
itself (`used`, INVARIANTS.md 5); the rest is measured here and *reserved*: the data may use
`max_bytes - reserved()`, and eviction keeps them there. What the rest is:

- **the index** (`index.lmdb/`: data.mdb, lock.mdb and the directory). LMDB's file only
  grows: freed pages are reused, never returned. Other modules write to the same environment
  (the filesystem keeps its namespace there), so it grows without the cache knowing: it is
  measured after every transaction of the cache's own and every `interval` seconds (`run`),
  and `index_headroom(max_bytes)` more is reserved for its growth between two measurements.
- **directories**: the cache directory, `data/` and the `data/xx/` directories, tracked as
  they are created and grow (datafile.py). A directory never shrinks; one new entry grows one
  by at most `DIR_HEADROOM` (ext4: a new htree leaf and index block), which stays reserved.
- **other files** the caller keeps in the directory (the lock file, the daemon's log):
  measured like the index, `max(measured, other_reserve) + OTHER_SLACK` is reserved, where
  `other_reserve` is what the caller says its files may take at most (a rotated log).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from .datafile import PAGE, DataFiles, allocated

KiB = 1 << 10
MiB = 1 << 20

#: the most one new entry can add to a directory (ext4: a leaf split plus an index block)
DIR_HEADROOM = 16 * KiB
#: growth of other files between two measurements, beyond what the caller reserved
OTHER_SLACK = 64 * KiB
#: the index's growth between two measurements: max_bytes / 16, within these bounds
INDEX_HEADROOM_MIN = 256 * KiB
INDEX_HEADROOM_MAX = 256 * MiB
#: the data area must hold at least this many blocks (one write may straddle two)
MIN_BLOCKS = 2
#: what a new cache directory's index takes before anything is cached (measured: 44 KiB of
#: data.mdb with the filesystem's tables, a lock file, the directory), with room to spare
FRESH_INDEX = 128 * KiB
#: the directories a new cache directory has: itself and data/ (the index's own is in
#: FRESH_INDEX); a data/xx/ directory exists while it holds a file (datafile.py)
FRESH_DIRS = 2 * PAGE

INDEX_DIR = "index.lmdb"
DATA_DIR = "data"


def human_size(n: int) -> str:
    """Bytes the way --cache-size takes them, rounded up: 512K, 6.1M, 1.5G."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{-(-n * 10 // size) / 10:g}{unit}"
    return str(n)


def index_headroom(max_bytes: int) -> int:
    return max(INDEX_HEADROOM_MIN, min(max_bytes // 16, INDEX_HEADROOM_MAX))


def tree_bytes(path: str) -> int:
    """Allocated bytes of a file, or of a directory and everything below it (vanishing
    entries count nothing)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    total = allocated(st)
    if os.path.isdir(path) and not os.path.islink(path):
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return total
        for e in entries:
            total += tree_bytes(e.path)
    return total


def measure_index(path: str) -> int:
    """The index directory and its files. A file counts at least its length rounded up to
    pages: LMDB's lock file is sparse and may fill in."""
    total = 0
    try:
        total += allocated(os.lstat(path))
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return total
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        total += max(allocated(st), (st.st_size + PAGE - 1) // PAGE * PAGE)
    return total


def measure_other(path: str, ignore: Collection[str] = ()) -> tuple[int, int]:
    """(the directory itself, everything in it but the index, the data files and the names
    in `ignore`)."""
    try:
        top = allocated(os.lstat(path))
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0, 0
    other = 0
    for e in entries:
        if e.name not in (INDEX_DIR, DATA_DIR) and e.name not in ignore:
            other += tree_bytes(e.path)
    return top, other


def minimum_bytes(
    block_size: int,
    *,
    index: int = FRESH_INDEX,
    dirs: int = 0,
    other: int = 0,
    data: int = 0,
) -> int:
    """The smallest max_bytes that leaves the data at least `data` bytes and MIN_BLOCKS
    blocks (each in a file of its own, in a data/xx/ directory of its own), given what the
    index, the cache directory and data/ (`dirs`) and other files take now. The data/xx/
    directories of files cached now do not count: they go with their files."""
    need = (
        max(data, MIN_BLOCKS * block_size)
        + MIN_BLOCKS * PAGE
        + index
        + max(dirs, FRESH_DIRS)
        + DIR_HEADROOM
        + other
        + OTHER_SLACK
    )
    m = need + INDEX_HEADROOM_MIN
    while m - index_headroom(m) < need:
        m = need + index_headroom(m) + PAGE
    return m


def minimum_size(
    directory: str | os.PathLike[str],
    block_size: int,
    *,
    other_reserve: int = 0,
    data: int = 0,
    ignore: Collection[str] = (),
) -> int:
    """The smallest max_bytes with which `BlockCache.open(directory, ...)` holds `data` bytes
    and MIN_BLOCKS blocks of data: measured for a cache directory that exists already (its
    index may be large), estimated for a new one. Creates nothing. `ignore`: names of files
    in the directory that other_reserve stands for (a log the caller will cut to size)."""
    path = str(directory)
    if not os.path.isdir(os.path.join(path, INDEX_DIR)):
        return minimum_bytes(block_size, other=other_reserve, data=data)
    top, other = measure_other(path, ignore)
    try:
        data_root = allocated(os.lstat(os.path.join(path, DATA_DIR)))
    except FileNotFoundError:
        data_root = PAGE
    return minimum_bytes(
        block_size,
        index=max(FRESH_INDEX, measure_index(os.path.join(path, INDEX_DIR))),
        dirs=top + data_root,
        other=max(other, other_reserve),
        data=data,
    )


class Footprint:
    """The measured non-data part of one cache directory and the reserve kept for it."""

    def __init__(self, directory: Path, data: DataFiles, *, other_reserve: int = 0) -> None:
        self._dir = str(directory)
        self._index_path = str(directory / INDEX_DIR)
        self._data = data
        #: what the caller's own files in the directory may take at most (e.g. a rotated log)
        self.other_reserve = other_reserve
        self.index = 0
        self.top = 0
        self.other = 0
        self.refresh()

    def refresh_index(self) -> None:
        self.index = measure_index(self._index_path)

    def refresh(self) -> None:
        self.refresh_index()
        self.top, self.other = measure_other(self._dir)

    @property
    def dirs(self) -> int:
        """The cache directory and the data directories (the index's is in `index`)."""
        return self.top + self._data.dir_bytes

    def others(self) -> int:
        return max(self.other, self.other_reserve) + OTHER_SLACK

    def reserved(self, max_bytes: int) -> int:
        """What the data may not use of `max_bytes`."""
        return self.index + index_headroom(max_bytes) + self.dirs + DIR_HEADROOM + self.others()

    def minimum(self, block_size: int, *, data: int = 0) -> int:
        """minimum_bytes for this directory as it is now."""
        return minimum_bytes(
            block_size,
            index=max(FRESH_INDEX, self.index),
            dirs=self.top + self._data.root_bytes,
            other=max(self.other, self.other_reserve),
            data=data,
        )
