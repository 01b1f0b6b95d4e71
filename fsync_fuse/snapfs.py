"""The kernel side of the snapshot tree (snaptree.py): the requests fs.py hands over for
inodes and handles from SNAP_BASE up. Everything that would change something answers EROFS;
reads go through the block cache like the live tree's."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import pyfuse3

from fsync_fuse.attrs import DIR, Inode
from fsync_fuse.errmap import answer_errors
from fsync_fuse.kattrs import KernelAttributes
from fsync_fuse.snaptree import SNAP_BASE, SnapshotTree


@dataclass(slots=True)
class _DirHandle:
    ino: int
    entries: list[Inode]


def refuse() -> pyfuse3.FUSEError:
    """What every change inside the snapshot tree gets."""
    return pyfuse3.FUSEError(errno.EROFS)


class SnapFS:
    def __init__(self, *, tree: SnapshotTree, attrs: KernelAttributes) -> None:
        self.tree, self.attrs = tree, attrs
        self.name = os.fsencode(tree.name)
        self._files: dict[int, int] = {}  # fh -> ino
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = SNAP_BASE

    @staticmethod
    def owns(n: int) -> bool:
        """An inode number or handle of the snapshot tree."""
        return n >= SNAP_BASE

    def _fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    @answer_errors
    async def lookup_root(self) -> pyfuse3.EntryAttributes:
        """`.snapshots` in the mount root (not listed there, reachable by name)."""
        self.tree.looked_up(SNAP_BASE)
        return self.attrs(self.tree.must(SNAP_BASE).rec)

    @answer_errors
    async def lookup(self, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        return self.attrs(await self.tree.lookup(parent, os.fsdecode(name)))

    def forget(self, ino: int, n: int) -> None:
        self.tree.forget(ino, n)

    @answer_errors
    async def getattr(self, ino: int) -> pyfuse3.EntryAttributes:
        return self.attrs(self.tree.must(ino).rec)

    @answer_errors
    async def readlink(self, ino: int) -> bytes:
        return os.fsencode(await self.tree.readlink(ino))

    @answer_errors
    async def open(self, ino: int, flags: int) -> pyfuse3.FileInfo:
        node = self.tree.must(ino)
        if node.rec.kind == DIR:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            raise refuse()
        fh = self._fh()
        self._files[fh] = ino
        self.tree.opened(ino)
        # a snapshot never changes: whatever the kernel cached of it stays right
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @answer_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        ino = self._files.get(fh)
        if ino is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self.tree.read(ino, off, size)

    async def release(self, fh: int) -> None:
        ino = self._files.pop(fh, None)
        if ino is not None:
            self.tree.closed(ino)

    @answer_errors
    async def opendir(self, ino: int) -> int:
        entries = await self.tree.entries(ino)
        fh = self._fh()
        self._dirs[fh] = _DirHandle(ino, entries)
        return fh

    @answer_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        h = self._dirs.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for i in range(start_id, len(h.entries)):
            rec = h.entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(rec.name), self.attrs(rec), i + 1):
                return
            self.tree.looked_up(rec.ino)

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
