"""readdir answers kept ready per directory, so a warm `find` or `ls -lR` costs no record
decoding.

The kernel reads a directory in several READDIRPLUS requests (two for 100 entries here: one
that fills its buffer, one that finds the end), and listings of a tree repeat (`find`, a
build's globbing, a file manager). Decoding each record and building its attributes took
~9 us per entry per request (py-spy: Namespace.get and Inode.decode were half the daemon's
time in a warm `find`). Here a directory's entries are built once, in chunks of `CHUNK`, and
kept until the namespace reports a change in that directory (`changed`, called for every
record or entry it writes there) or they age out of a bounded LRU.

A directory of at most `CHUNK` entries is kept whole and serves every later listing; a bigger
one is served a chunk at a time, and only the chunk being read is kept, so a directory of a
million entries costs one chunk of memory.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fsync_fuse.attrs import Inode

#: readdir offsets are entry ids + 3 (0 is "from the start"; ids are never reused)
OFFSET = 3

#: (offset of the next entry, name, the kernel's attributes, inode)
Reply = tuple[int, bytes, Any, int]
#: the namespace's `children(dir, after_id, limit)` -> [(entry id, name, record)]
Children = Callable[[int, int, int], list[tuple[int, str, Inode]]]


@dataclass(slots=True)
class _Chunk:
    """Entries in parallel arrays (a tuple per entry was a third more memory)."""

    after: int  # holds every entry with an offset above this ...
    offs: array  # offset of the next entry, per entry
    inos: array
    names: list[bytes]
    attrs: list[Any]
    done: bool  # ... up to the end of the directory (else up to offs[-1])

    def __len__(self) -> int:
        return len(self.names)


class DirReplies:
    CHUNK = 512

    def __init__(self, *, max_entries: int = 120_000) -> None:
        """The namespace reports changes to `changed`, so it is built after this; the
        namespace's listing and the attributes come with each call (`replies`)."""
        self.max_entries = max_entries
        self._chunks: OrderedDict[int, _Chunk] = OrderedDict()
        self._count = 0
        self.stats = {"built": 0, "served": 0, "dropped": 0}

    def changed(self, dir_ino: int) -> None:
        """Something in the directory changed (an entry, or a child's record)."""
        chunk = self._chunks.pop(dir_ino, None)
        if chunk is not None:
            self._count -= len(chunk)
            self.stats["dropped"] += 1

    def replies(
        self, dir_ino: int, start: int, children: Children, attrs: Callable[[Inode], Any]
    ) -> Iterator[Reply]:
        """Entries with an offset above `start`, in order; `children(dir, after_id, limit)`
        lists the namespace's entries in id order, `attrs(record)` is what readdir_reply
        takes. Consume it without awaiting: the chunks are the namespace's state at the time
        of the call."""
        chunk = self._chunks.get(dir_ino)
        if chunk is None or start < chunk.after or (not chunk.done and start >= chunk.offs[-1]):
            chunk = self._load(dir_ino, start, children, attrs)
        else:
            self._chunks.move_to_end(dir_ino)
        i = bisect_right(chunk.offs, start)
        while True:
            self.stats["served"] += len(chunk) - i
            yield from zip(
                chunk.offs[i:], chunk.names[i:], chunk.attrs[i:], chunk.inos[i:], strict=True
            )
            if chunk.done:
                return
            chunk = self._load(dir_ino, chunk.offs[-1], children, attrs)
            i = 0

    def _load(
        self, dir_ino: int, start: int, children: Children, attrs: Callable[[Inode], Any]
    ) -> _Chunk:
        batch = children(dir_ino, max(0, start - OFFSET), self.CHUNK)
        chunk = _Chunk(
            start,
            array("q", [dent + OFFSET for dent, _, _ in batch]),
            array("q", [rec.ino for _, _, rec in batch]),
            [name.encode() for _, name, _ in batch],
            [attrs(rec) for _, _, rec in batch],
            len(batch) < self.CHUNK,
        )
        self.stats["built"] += len(chunk)
        old = self._chunks.pop(dir_ino, None)
        if old is not None:
            self._count -= len(old)
        self._chunks[dir_ino] = chunk
        self._count += len(chunk)
        while self._count > self.max_entries and len(self._chunks) > 1:
            _, aged = self._chunks.popitem(last=False)
            self._count -= len(aged)
        return chunk
