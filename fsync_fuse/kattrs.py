"""The attributes the kernel gets for an inode (lookup, getattr, readdirplus)."""

from __future__ import annotations

from collections.abc import Callable

import pyfuse3

from fsync_fuse.attrs import DIR, Inode
from fsync_fuse.namespace import ROOT


class KernelAttributes:
    def __init__(
        self,
        *,
        timeout: float,
        block_size: int,
        subdirs: Callable[[int], int],
        generation: int = 0,
    ) -> None:
        #: the kernel's entry and attribute timeouts (the listing TTL: changes the mount
        #: learns of are pushed to the kernel at once, notify.py)
        self.timeout = timeout
        self.block_size = block_size
        #: a directory's subdirectories (its link count is 2 + that)
        self.subdirs = subdirs
        #: the inode generation, in every file handle the kernel gives out (NFS): the same
        #: for the life of the cache directory, whose inode numbers are never reused, and
        #: another one for a new cache, whose numbers name other entries (its handles are
        #: then stale, not wrong). The root keeps the kernel's own 0.
        self.generation = generation & 0xFFFFFFFF

    def __call__(self, rec: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(rec.ino)
        a.generation = self.generation if rec.ino != ROOT else 0
        a.entry_timeout = self.timeout
        a.attr_timeout = self.timeout
        a.st_mode = pyfuse3.ModeT(rec.st_mode)
        if rec.kind == DIR:
            a.st_nlink = 2 + self.subdirs(rec.ino)
        else:  # a file unlinked while still open has no name left
            a.st_nlink = 0 if rec.parent == 0 else 1
        a.st_uid = rec.uid
        a.st_gid = rec.gid
        a.st_rdev = rec.rdev
        a.st_size = rec.size
        a.st_blksize = self.block_size
        a.st_blocks = (rec.size + 511) // 512
        a.st_atime_ns = rec.atime_ns or rec.mtime_ns
        a.st_mtime_ns = rec.mtime_ns
        a.st_ctime_ns = rec.ctime_ns or rec.mtime_ns
        return a
