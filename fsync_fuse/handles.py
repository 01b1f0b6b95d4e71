"""What the kernel and open files refer to: lookup counts and open handles.

Lookup counting follows pyfuse3: lookup, create, mkdir, symlink and each readdir_reply that
returns True add one; forget subtracts. An inode unlinked while counted or open stays as an
orphan in the namespace until both drop to zero. The listing merge asks `referenced` and
`is_open` before deleting or replacing an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fsync_fuse.lookups import LookupCounts
from fsync_fuse.reader import ReadState


@dataclass
class Handle:
    """One open file: its inode, whether it wrote since its last commit, and its reader's
    read-ahead state."""

    ino: int
    wrote: bool = False
    ra: ReadState = field(default_factory=ReadState)


class References:
    def __init__(self) -> None:
        self.lookups = LookupCounts()
        self._opened: dict[int, int] = {}  # ino -> open handles
        self._files: dict[int, Handle] = {}  # fh -> handle
        self._dirs: dict[int, int] = {}  # fh -> directory inode
        self._next_fh = 1

    def referenced(self, ino: int) -> bool:
        return ino in self.lookups or ino in self._opened

    def is_open(self, ino: int) -> bool:
        return ino in self._opened

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def open_file(self, ino: int) -> int:
        fh = self._fh()
        self._files[fh] = Handle(ino)
        self._opened[ino] = self._opened.get(ino, 0) + 1
        return fh

    def file(self, fh: int) -> Handle:
        return self._files[fh]

    def close_file(self, fh: int) -> tuple[Handle, bool]:
        """Returns the handle and whether it was the inode's last one."""
        h = self._files.pop(fh)
        return h, _drop_one(self._opened, h.ino)

    def open_dir(self, ino: int) -> int:
        fh = self._fh()
        self._dirs[fh] = ino
        return fh

    def directory(self, fh: int) -> int:
        return self._dirs[fh]

    def close_dir(self, fh: int) -> None:
        self._dirs.pop(fh, None)


def _drop_one(counts: dict[int, int], ino: int) -> bool:
    """Count one less for `ino`; True when none is left."""
    n = counts.get(ino, 0) - 1
    if n > 0:
        counts[ino] = n
        return False
    counts.pop(ino, None)
    return True
