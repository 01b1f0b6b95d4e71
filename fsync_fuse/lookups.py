"""The kernel's lookup count of every inode it knows, at about one byte per inode.

After a `find` over a million-entry share the kernel knows a million inodes, and a dict of a
million int counts was 70 MiB of the daemon's memory (a third of the 200 MB budget). Inode
numbers are handed out in sequence, so the inodes the kernel holds are dense: counts live in
byte arrays of `CHUNK` inodes, allocated when an inode of their range is first counted and
freed when the range's last count drops to zero; the rare count of 255 or more spills into a
dict. Memory is at most one byte per inode number in the ranges in use.
"""

from __future__ import annotations

CHUNK_BITS = 12
CHUNK = 1 << CHUNK_BITS
_MASK = CHUNK - 1
_SPILL = 255


class LookupCounts:
    def __init__(self) -> None:
        self._chunks: dict[int, bytearray] = {}
        self._live: dict[int, int] = {}  # chunk -> inodes with a non-zero count in it
        self._big: dict[int, int] = {}  # counts >= _SPILL (the byte then holds _SPILL)
        self._n = 0

    def __len__(self) -> int:
        """Inodes with a non-zero count."""
        return self._n

    def __contains__(self, ino: int) -> bool:
        chunk = self._chunks.get(ino >> CHUNK_BITS)
        return chunk is not None and chunk[ino & _MASK] != 0

    def get(self, ino: int) -> int:
        chunk = self._chunks.get(ino >> CHUNK_BITS)
        if chunk is None:
            return 0
        v = chunk[ino & _MASK]
        return self._big[ino] if v == _SPILL else v

    def add(self, ino: int, n: int = 1) -> None:
        """The kernel took `n` more references (a lookup, create, or readdirplus entry)."""
        hi = ino >> CHUNK_BITS
        chunk = self._chunks.get(hi)
        if chunk is None:
            chunk = self._chunks[hi] = bytearray(CHUNK)
            self._live[hi] = 0
        i = ino & _MASK
        v = chunk[i]
        if v == _SPILL:
            self._big[ino] += n
            return
        if v == 0:
            self._live[hi] += 1
            self._n += 1
        v += n
        if v >= _SPILL:
            self._big[ino] = v
            v = _SPILL
        chunk[i] = v

    def forget(self, ino: int, n: int) -> int:
        """The kernel dropped `n` references; returns how many are left (never below 0)."""
        hi = ino >> CHUNK_BITS
        chunk = self._chunks.get(hi)
        if chunk is None:
            return 0
        i = ino & _MASK
        v = chunk[i]
        if v == 0:
            return 0
        left = (self._big[ino] if v == _SPILL else v) - n
        if v == _SPILL:
            if left >= _SPILL:
                self._big[ino] = left
                return left
            del self._big[ino]
        if left > 0:
            chunk[i] = left
            return left
        chunk[i] = 0
        self._n -= 1
        self._live[hi] -= 1
        if not self._live[hi]:
            del self._chunks[hi], self._live[hi]
        return 0
