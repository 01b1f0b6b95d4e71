"""How much of the LMDB index the process has mapped in, and giving those pages back.

LMDB reads through a shared read-only mapping of its file. A walk over a million-entry share
touches every page of the ~400 MB index, and each page stays mapped into the daemon: they are
clean page cache, but they count in its RSS (and in the OOM killer's view of it) as if the
daemon held them. `trim` drops the mapping of every page with MADV_DONTNEED; the data stays in
the page cache (or on disk), and the next access maps it again with a minor fault. That is
safe for a shared file mapping at any time, even with read transactions open: unlike an
anonymous mapping, nothing is discarded, only unmapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

MADV_DONTNEED = 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.madvise.restype = ctypes.c_int


class MappedFile:
    """The process's mapping of one file (found in /proc/self/smaps by path)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.realpath(path)

    def mapping(self) -> tuple[int, int, int] | None:
        """(start, end, bytes resident) of the file's mapping, read in one pass over smaps;
        None when the file is not mapped."""
        try:
            with open("/proc/self/smaps") as fh:
                region = None
                for line in fh:
                    if region is None:
                        parts = line.split(maxsplit=5)
                        if len(parts) == 6 and parts[5].rstrip("\n") == self.path:
                            lo, _, hi = parts[0].partition("-")
                            region = int(lo, 16), int(hi, 16)
                    elif line.startswith("Rss:"):
                        return region[0], region[1], int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def resident(self) -> int:
        """Bytes of the file mapped into the process right now (0 if not mapped)."""
        found = self.mapping()
        return found[2] if found else 0

    def trim(self, region: tuple[int, int, int] | None = None) -> bool:
        """Unmap every page of the mapping (they stay in the page cache). `region`: what
        `mapping()` returned, when the caller has it already."""
        region = region or self.mapping()
        if region is None:
            return False
        lo, hi, _ = region
        # only the part backed by the file holds pages; the rest of the map is reserved space
        try:
            hi = min(hi, lo + (os.path.getsize(self.path) + 4095) // 4096 * 4096)
        except OSError:
            pass
        if _libc.madvise(lo, hi - lo, MADV_DONTNEED) != 0:
            log.debug("madvise of %s failed: %s", self.path, os.strerror(ctypes.get_errno()))
            return False
        return True
