"""Heat: how much a file is used, recency and frequency in one number, and the orders in
which eviction takes files (the one place the formula is defined; API.md points here).

At every access (read hit, read miss, write, prefetch) at time t (seconds, the cache's
clock), with `last` the file's previous access::

    heat = heat * 2 ** (-(t - last) / HALF_LIFE) + min(1, (t - last) / ACCESS_GAP)
    last = t

so every access adds one that halves every HALF_LIFE, and accesses closer together than
ACCESS_GAP add only their share of one: a file is read in calls of 128 KiB, and counting
each call would make heat measure bytes read instead of uses. A file used all the time
gains one per ACCESS_GAP (its heat tends to HALF_LIFE / (ACCESS_GAP * ln 2), about 69).
An access less than RESOLUTION after `last` changes nothing (it is counted with the next
one, which measures from the same `last`): a burst of hits costs a subtraction each, and
the last access is known to the second.

HALF_LIFE is two days so that a file read every day outranks one read once this morning:
read every morning until yesterday it holds 2**-0.5 + 2**-1 + ... this morning (about 2.2
after a week) against 1 for the file read now; with a one-day half-life it would stay below
(1/2 + 1/4 + ... < 1). Old use fades: a file used on a hundred occasions a month ago is
colder than one read once today (100 * 2**-15).

The current heat of a file is `heat * 2 ** (-(now - last) / HALF_LIFE)`. Ordering files by
it does not depend on `now`: it is the order of `log2(heat) + last / HALF_LIFE`
(`order_key`), which changes only when the file is accessed, and then only grows. That is
what lets eviction keep files in a heap that accesses never touch (`Order`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

HALF_LIFE = 2 * 86400.0
ACCESS_GAP = 3600.0
RESOLUTION = 1.0


class Accessed(Protocol):
    heat: float  # as of `atime`
    atime: float  # the last access, 0.0 when never accessed


def access(f: Accessed, now: float) -> None:
    """Count one access at `now` (the formula above). A clock that went back counts nothing."""
    dt = now - f.atime
    if dt >= RESOLUTION:
        f.heat = f.heat * 2.0 ** (-dt / HALF_LIFE) + (1.0 if dt >= ACCESS_GAP else dt / ACCESS_GAP)
        f.atime = now


def current(heat: float, last: float, now: float) -> float:
    """Heat decayed from the last access to `now`."""
    if heat <= 0.0 or now <= last:
        return heat
    return heat * 2.0 ** (-(now - last) / HALF_LIFE)


def order_key(f: Accessed) -> float:
    """Ascending = coldest first, at any time; -inf for a file never accessed."""
    if f.heat <= 0.0:
        return -math.inf
    return math.log2(f.heat) + f.atime / HALF_LIFE


def last_access_key(f: Accessed) -> float:
    return f.atime


F = TypeVar("F", bound=Accessed)


class Order(Generic[F]):
    """Files smallest key first, as a lazy heap: the entry pushed for a file keeps the key the
    file had then. Keys only grow while a file is in (order_key and the last access do), so
    an entry's key is a lower bound of its file's: when an entry reaches the top with an
    outdated key it is pushed again with the current one, and the first entry found current
    is the smallest. An access therefore costs nothing here.

    `take` removes the file it returns; whoever took it adds it back if it should stay.
    Membership is what the caller keeps true (eviction.py: every live unpinned file with a
    clean block is in both orders); files found unusable at the top just leave."""

    def __init__(self, key_of: Callable[[F], float]) -> None:
        self._key_of = key_of
        self._heap: list[tuple[float, int, F]] = []
        self._seq = 0
        self._members: dict[F, int] = {}  # file -> sequence number of its live entry

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, f: F) -> bool:
        return f in self._members

    def add(self, f: F) -> None:
        if f not in self._members:
            self._push(f)

    def discard(self, f: F) -> None:
        self._members.pop(f, None)

    def rebuild(self, files: list[F]) -> None:
        """Exactly `files`, in one heapify (at open: ~70 ms for 100,000 files)."""
        self._members = {}
        self._heap = []
        for f in files:
            self._seq += 1
            self._members[f] = self._seq
            self._heap.append((self._key_of(f), self._seq, f))
        heapq.heapify(self._heap)

    def take(self, usable: Callable[[F], bool], below: float = math.inf) -> F | None:
        """Remove and return the member with the smallest current key if that is below
        `below` (None when there is none). Members found not `usable` on the way leave."""
        heap = self._heap
        members = self._members
        while heap:
            key, seq, f = heap[0]
            if members.get(f) != seq:
                heapq.heappop(heap)  # left, or pushed again since
                continue
            if key >= below:
                return None
            now_key = self._key_of(f)
            if now_key != key:
                self._seq += 1
                members[f] = self._seq
                heapq.heapreplace(heap, (now_key, self._seq, f))
                continue
            heapq.heappop(heap)
            del members[f]
            if usable(f):
                return f
        return None

    def _push(self, f: F) -> None:
        self._seq += 1
        self._members[f] = self._seq
        heapq.heappush(self._heap, (self._key_of(f), self._seq, f))
        if len(self._heap) > 2 * len(self._members) + 1024:
            self.rebuild(list(self._members))
