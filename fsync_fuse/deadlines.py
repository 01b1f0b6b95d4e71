"""Upload deadlines per inode, with a heap so a write costs O(1) and wakes nobody.

`DirtySet.due` maps inode → the trio time its upload is due. Every write pushes its file's
deadline back, so the map changes on the hot path; the scheduler must still find the earliest
deadline without scanning every queued file (a `tar x` of many small files made that O(N²)).

Invariant: every inode in the map that is not *parked* has a heap entry whose time is at most
its deadline. A later deadline therefore needs no heap entry (the earlier one wakes the
scheduler, which re-files the inode at its current deadline); an earlier one is pushed and, if
it is earlier than what the scheduler sleeps until, wakes it. Entries of removed inodes are
dropped when they surface (lazy deletion); the heap is rebuilt when stale entries dominate.
Parked: popped while its upload was running; `unpark` re-files it when that upload ends.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Container


class Deadlines(dict[int, float]):
    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._heap: list[tuple[float, int]] = []
        self._wake = wake
        #: what the scheduler sleeps until: only an earlier deadline wakes it
        self.waiting_until = math.inf

    def __setitem__(self, ino: int, due: float) -> None:
        old = self.get(ino)
        super().__setitem__(ino, due)
        if old is None or due < old:
            heapq.heappush(self._heap, (due, ino))
            if len(self._heap) > 2 * len(self) + 64:
                self._heap = [(t, i) for i, t in self.items()]
                heapq.heapify(self._heap)
        if due < self.waiting_until:
            self.waiting_until = due
            self._wake()

    def setdefault(self, ino: int, due: float) -> float:
        if ino not in self:
            self[ino] = due
        return self[ino]

    def take_due(self, now: float, running: Container[int]) -> list[int]:
        """Remove and return the inodes due by `now` whose upload is not running (those are
        parked until `unpark`)."""
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, ino = heapq.heappop(heap)
            cur = self.get(ino)
            if cur is None:
                continue  # removed since
            if cur > now:
                if cur != t:
                    heapq.heappush(heap, (cur, ino))  # pushed back by writes: re-file
                continue
            if ino in running:
                continue  # parked: the running upload's end re-files it
            del self[ino]
            out.append(ino)
        return out

    def unpark(self, ino: int) -> None:
        """An upload of `ino` ended: if it is due again, give it a heap entry."""
        due = self.get(ino)
        if due is not None:
            heapq.heappush(self._heap, (due, ino))

    def next_deadline(self) -> float:
        heap = self._heap
        while heap and heap[0][1] not in self:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf
