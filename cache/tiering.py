"""Tiering calls: pins that count against the cache, and what the cache can say about a file
and about what it would evict next, fast with 100,000 files (a status command asks).

A pin reserves room: `pinned_bytes()` is, over the pinned files, the larger of what each
pin asked for (its size, page-rounded, with the extent allowance a file of that many blocks
may need: INVARIANTS.md 5) and what the file holds. `pin` refuses (PinTooLarge) when that
would exceed what the data may use (max_bytes less the reserve, footprint.py) less the
dirty data of unpinned files, so that the pinned content, once fetched, fits beside the
data waiting for upload. A refused pin changes nothing and evicts nothing; an accepted one
evicts nothing either: whoever pins fetches the content, and the fetches make room.
"""

from __future__ import annotations

from typing import Literal

from .datafile import metadata_allowance, page_up
from .entry import CLEAN, DIRTY, CachedFile
from .errors import PinTooLarge
from .footprint import human_size
from .heat import current
from .results import FileInfo, FileState, TierCandidate
from .state import CacheState, evictable


class Tiering(CacheState):
    """Part of BlockCache: pins, per-file state and heat, the next files to tier."""

    def pin(self, key: int, size: int) -> None:
        """Pin a file of `size` bytes (known to the cache or not): its blocks are never
        evicted. Raises PinTooLarge, changing nothing, when the pins would not fit."""
        f = self._files.get(key)
        nblocks = (size + self.block_size - 1) >> self._shift
        want = page_up(size) + metadata_allowance(nblocks)
        mine = f is not None and f.pinned
        used = f.used if f is not None else 0
        dirty = f.dirty if f is not None else 0
        asked = max(want, used)
        others = self._pin_total - (f.pin_share if f is not None and mine else 0)
        unpinned_dirty = self._dirty - self._pin_dirty - (0 if mine else dirty)
        may_use = self.max_bytes - self._reserved()
        available = max(0, may_use - unpinned_dirty)
        if others + asked > available:
            raise PinTooLarge(
                f"cannot pin {human_size(asked)}: {human_size(others)} is pinned already and "
                f"pinned data may use {human_size(available)} of the cache ("
                f"{human_size(may_use)} for data, less {human_size(unpinned_dirty)} waiting "
                "for upload)",
                pinned=others,
                available=available,
                asked=asked,
            )
        f = self._get(key)
        if f.pinned:
            self._pin_out(f)
        f.pinned = True
        f.pin_size = want
        self._pin_in(f)
        self._meta_dirty.add(f)

    def unpin(self, key: int) -> None:
        f = self._files.get(key)
        if f is None or not f.pinned:
            return
        self._pin_out(f)
        f.pinned = False
        f.pin_size = f.pin_share = 0
        self._meta_dirty.add(f)
        if evictable(f):
            self._heat_order.add(f)
            self._date_order.add(f)
        self._space_freed()

    def pinned_bytes(self) -> int:
        """What pins reserve: over the pinned files, max(size asked, bytes held)."""
        return self._pin_total

    def heat(self, key: int) -> float:
        """The file's heat now (heat.py); 0.0 for a key the cache has no record of."""
        f = self._files.get(key)
        return current(f.heat, f.atime, self._clock()) if f is not None else 0.0

    def last_access(self, key: int) -> float | None:
        """When the file was last read or written (the cache's clock), None if never."""
        f = self._files.get(key)
        return f.atime if f is not None and f.atime > 0 else None

    def file_info(self, key: int) -> FileInfo | None:
        f = self._files.get(key)
        if f is None:
            return None
        return FileInfo(
            cached_bytes=f.used,
            dirty_bytes=f.dirty,
            pinned=f.pinned,
            pin_bytes=f.pin_share if f.pinned else 0,
            last_access=f.atime if f.atime > 0 else None,
            heat=current(f.heat, f.atime, self._clock()),
        )

    def next_to_tier(self, n: int) -> list[TierCandidate]:
        """The n files eviction would take next, in order: those past tier_after first (the
        next check takes them), least recently accessed first, then the coldest. Costs
        O(n log files): it takes them from the orders and puts them back."""
        out: list[TierCandidate] = []
        now = self._clock()
        seen: set[CachedFile] = set()
        if self.tier_after is not None:
            taken = []
            while len(out) < n:
                f = self._date_order.take(evictable, below=now - self.tier_after)
                if f is None:
                    break
                taken.append(f)
                seen.add(f)
                out.append(self._candidate(f, "date", now))
            for f in taken:
                self._date_order.add(f)
        taken = []
        while len(out) < n:
            f = self._heat_order.take(evictable)
            if f is None:
                break
            taken.append(f)
            if f not in seen:
                out.append(self._candidate(f, "heat", now))
        for f in taken:
            self._heat_order.add(f)
        return out

    @staticmethod
    def _candidate(f: CachedFile, reason: Literal["date", "heat"], now: float) -> TierCandidate:
        return TierCandidate(
            key=f.key,
            reason=reason,
            heat=current(f.heat, f.atime, now),
            last_access=f.atime if f.atime > 0 else None,
            cached_bytes=f.used,
        )

    def state(self, key: int, size: int) -> FileState:
        f = self._files.get(key)
        nblocks = (size + self.block_size - 1) >> self._shift
        if f is None:
            empty = nblocks == 0
            return FileState(not empty, False, empty, False, False, 0)
        f = self._get(key)
        st = f.states
        assert st is not None
        sh = self._shift
        present = sum(1 for b in range(min(nblocks, len(st))) if st[b] >= CLEAN)
        local = sum(
            1
            for b in range(nblocks)
            if (b < len(st) and st[b] >= CLEAN) or (b << sh) >= f.remote_valid
        )
        full = local == nblocks
        tiered = not full and present == 0
        return FileState(tiered, not full and not tiered, full, DIRTY in st, f.pinned, f.used)

    def cached_bytes(self, key: int) -> int:
        f = self._files.get(key)
        return f.used if f is not None else 0

    def blocks(self, key: int) -> dict[int, str]:
        """block -> "clean"/"dirty" for every present block (status output, tests)."""
        f = self._files.get(key)
        if f is None:
            return {}
        st = self._get(key).states
        assert st is not None
        return {b: "dirty" if s == DIRTY else "clean" for b, s in enumerate(st) if s >= CLEAN}

    def file_counts(self) -> dict[str, int]:
        """Files with a cache record, by state: `cached` (any data here), `local` (every
        block up to the length the cache knows), `partial` (some), `pinned`. One pass over
        the records in memory (status calls it): a file whose blocks were never loaded
        since open counts its extent allowance as data, so one missing block smaller than
        that allowance can count it local."""
        bs = self.block_size
        cached = local = pinned = 0
        for f in self._files.values():
            pinned += f.pinned
            data = f.used - f.overhead
            if data <= 0:
                continue
            cached += 1
            n = (f.length + bs - 1) // bs
            whole = 0 if n == 0 else (n - 1) * bs + page_up(f.length - (n - 1) * bs)
            local += data >= whole
        return {"cached": cached, "local": local, "partial": cached - local, "pinned": pinned}
