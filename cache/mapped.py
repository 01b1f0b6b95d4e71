"""How much of the LMDB index the process has mapped in, and giving those pages back.

LMDB reads through a shared read-only mapping of its file. A walk over a million-entry share
touches every page of the ~400 MB index, and each page stays mapped into the daemon: they are
clean page cache, but they count in its RSS (and in the OOM killer's view of it) as if the
daemon held them. `trim` drops the mapping of every page (`system.unmap`); the data stays in
the page cache (or on disk), and the next access maps it again with a minor fault. That is
safe for a shared file mapping at any time, even with read transactions open: unlike an
anonymous mapping, nothing is discarded, only unmapped. Where the system cannot tell or
unmap (see system.py), nothing is found and nothing is trimmed.
"""

from __future__ import annotations

import os

from . import system


class MappedFile:
    """The process's mapping of one file, found by its real path."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.realpath(path)

    def mapping(self) -> system.Mapping | None:
        """(start, end, bytes resident) of the file's mapping; None when it is not mapped."""
        return system.mapping(self.path)

    def resident(self) -> int:
        """Bytes of the file mapped into the process right now (0 if not mapped)."""
        return system.mapped_bytes(self.path)

    def trim(self, region: system.Mapping | None = None) -> bool:
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
        return system.unmap(lo, hi - lo)
