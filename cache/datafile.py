"""Sparse data files: where a data id lives on disk and an LRU of open fds. Holes are punched
and found through system.py."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from .system import datasync

PAGE = 4096


def allocated(st: os.stat_result) -> int:
    """Bytes a file or directory occupies on disk, as du counts them."""
    return st.st_blocks * 512


def page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def metadata_allowance(nblocks: int) -> int:
    """Bytes of filesystem metadata a sparse file of `nblocks` separately allocated blocks may
    add to st_blocks. ext4 keeps 4 extents in the inode, then needs 4 KiB leaves of 340 extents
    (and an index block above them). Holes *inside* a block need not be counted here: a
    block's allocation is estimated from its start, so each such hole is already counted as a
    whole page, more than its share of a leaf."""
    if nblocks <= 4:
        return 0
    return PAGE * ((nblocks + 339) // 340 + 1)


def overhead_after(current: int, nblocks: int) -> int:
    """The extent-tree allowance of a file that will hold `nblocks` blocks, given what it
    carries now. It never shrinks while blocks remain: ext4 keeps a leaf it allocated until
    the last extent of the file is gone, so a file evicted from 40 blocks down to 3 still
    occupies that leaf."""
    return max(metadata_allowance(nblocks), current) if nblocks else 0


def pwrite_all(fd: int, data: bytes | memoryview, off: int) -> None:
    """pwrite every byte (a short write continues where it stopped)."""
    n = os.pwrite(fd, data, off)
    if n < len(data):
        view = memoryview(data)
        while n < len(view):
            n += os.pwrite(fd, view[n:], off + n)


class DataFiles:
    """Maps data ids to paths under data/ and keeps at most `max_open` fds open (LRU).

    Files are spread over 256 subdirectories by the low byte of the id; a subdirectory exists
    only while it holds a file (it is removed with its last file, and at start when empty), so
    a small cache does not keep 256 directories. `dir_bytes` is what data/ and those
    subdirectories occupy on disk: measured at start, and again for the directories a new file
    went into (a directory never shrinks while it exists; footprint.py reserves what one new
    entry may add)."""

    def __init__(self, root: Path, max_open: int = 128) -> None:
        self.root = root
        self.max_open = max_open
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._root = str(root)
        self._fds: OrderedDict[int, int] = OrderedDict()  # data_id -> fd
        self._dirs: dict[str, int] = {}  # directory -> allocated bytes
        self.dir_bytes = 0
        self._measure_dir(self._root)
        for e in os.scandir(self._root):
            if e.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(e.path)
                except OSError:  # not empty
                    self._measure_dir(e.path)

    @property
    def root_bytes(self) -> int:
        """What data/ itself occupies (without its subdirectories)."""
        return self._dirs.get(self._root, 0)

    def _measure_dir(self, path: str) -> None:
        try:
            n = allocated(os.stat(path))
        except OSError:
            return
        self.dir_bytes += n - self._dirs.get(path, 0)
        self._dirs[path] = n

    def path(self, data_id: int) -> Path:
        return Path(self._path(data_id))

    def _path(self, data_id: int) -> str:
        # plain strings: this runs once per file a reader or writer touches
        return f"{self._root}/{data_id & 0xFF:02x}/{data_id:016x}"

    def fd(self, data_id: int, *, create: bool = False) -> int:
        """An open O_RDWR fd; `create` also creates (and empties) a file for a new data id."""
        fds = self._fds
        fd = fds.get(data_id)
        if fd is not None:
            fds.move_to_end(data_id)
            return fd
        path = self._path(data_id)
        flags = os.O_RDWR | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(path.rpartition("/")[0], mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o600)
            self._measure_dir(self._root)
        if create:
            self._measure_dir(path.rpartition("/")[0])
        fds[data_id] = fd
        while len(fds) > self.max_open:
            _, old = fds.popitem(last=False)
            os.close(old)
        return fd

    def allocated(self, data_id: int) -> int:
        """Bytes the data file occupies on disk (st_blocks), 0 when it does not exist."""
        try:
            return os.stat(self._path(data_id)).st_blocks * 512
        except FileNotFoundError:
            return 0

    def close(self, data_id: int) -> None:
        fd = self._fds.pop(data_id, None)
        if fd is not None:
            os.close(fd)

    def unlink(self, data_id: int) -> None:
        """Delete the file, and its subdirectory when that was its last file."""
        self.close(data_id)
        path = self._path(data_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sub = path.rpartition("/")[0]
        try:
            os.rmdir(sub)
        except OSError:  # other files are there (or it is gone already)
            return
        self.dir_bytes -= self._dirs.pop(sub, 0)

    def datasync(self, data_id: int) -> None:
        """Make the file's data durable (system.datasync); a file that is gone needs nothing."""
        fd = self._fds.get(data_id)
        if fd is not None:
            datasync(fd)
            return
        try:
            fd = os.open(self._path(data_id), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            datasync(fd)
        finally:
            os.close(fd)

    def dup_for_sync(self, data_ids: list[int]) -> list[tuple[int, int]]:
        """(data id, duplicated fd) of the open files among `data_ids`, for a datasync in a
        worker thread (the originals may be closed by the LRU meanwhile; a dup keeps the
        file description alive)."""
        return [(d, os.dup(self._fds[d])) for d in data_ids if d in self._fds]

    def all_ids(self) -> dict[int, Path]:
        """Every data file on disk by id (recovery: files no record knows are orphans)."""
        out: dict[int, Path] = {}
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                try:
                    out[int(p.name, 16)] = p
                except ValueError:
                    continue
        return out

    def close_all(self) -> None:
        while self._fds:
            _, fd = self._fds.popitem()
            os.close(fd)
