"""The size bound and the policies: room is made before anything is allocated, clean
blocks of the coldest unpinned files first (heat.py); what the rest of the directory takes
(footprint.py) and a free-space floor lower what the data may use; files not accessed for
tier_after lose their clean blocks whatever the room. Every eviction is counted by reason
(results.REASONS)."""

from __future__ import annotations

import time

from .entry import ABSENT, CLEAN, CachedFile, has_present
from .state import CacheState, evictable
from .system import disk_space, punch_hole


class Eviction(CacheState):
    """Part of BlockCache: freeing clean blocks, on demand and to stay under the bound."""

    def _drop_clean(self, f: CachedFile, blocks: list[int], *, persist: bool = True) -> int:
        """Punch clean blocks out; their records go first. Returns bytes freed."""
        if persist:
            self._persist_now(deletes=[(f, b) for b in blocks], files=[f])
        if not blocks:
            return 0
        freed = 0
        sh = self._shift
        fd = self._fd(f)
        start = prev = blocks[0]
        for b in [*blocks[1:], None]:
            if b is not None and b == prev + 1:
                prev = b
                continue
            punch_hole(fd, start << sh, (prev - start + 1) << sh)
            if b is not None:
                start = prev = b
        for b in blocks:
            freed += self._alloc(f, b)
            self._set_block(f, b, ABSENT)
        self._unsynced.add(f.data_id)
        if not f.inflight and not has_present(f.states):
            self._data.unlink(f.data_id)
            self._unsynced.discard(f.data_id)
            f.fresh = True
        self._space_freed()
        return freed

    def tier(self, key: int) -> int:
        """Evict every clean block of one unpinned file now. Returns bytes freed."""
        f = self._files.get(key)
        if f is None or f.pinned:
            return 0
        f = self._get(key)
        st = f.states
        assert st is not None
        blocks = [b for b in range(len(st)) if st[b] == CLEAN]
        freed = self._drop_clean(f, blocks)
        self._count_evicted("command", len(blocks), freed)
        return freed

    def evict(self, nbytes: int | None = None) -> int:
        """Evict clean unpinned blocks, coldest files first, until `nbytes` are freed (all of
        them when None). Returns bytes freed."""
        before = self._used
        target = 0 if nbytes is None else max(0, self._used - nbytes)
        self._evict_to(target, reason="command")
        return before - self._used

    def _tier_aged(self) -> int:
        """The date policy (run, every second): every clean block of unpinned files not
        accessed for tier_after goes, whatever the room, at most `date_batch` files a call.
        Returns bytes freed."""
        if self.tier_after is None:
            return 0
        cutoff = self._clock() - self.tier_after
        victims: list[tuple[CachedFile, list[int]]] = []
        while len(victims) < self.date_batch:
            f = self._date_order.take(evictable, below=cutoff)
            if f is None:
                break
            if f.states is None:
                self._load_blocks(f)
            st = f.states
            assert st is not None
            blocks = [b for b in range(len(st)) if st[b] == CLEAN]
            if blocks:
                victims.append((f, blocks))
        return self._evict_blocks(victims, "date")

    def _reserved(self) -> int:
        """Bytes of max_bytes the data may not use (footprint.py); 0 with bound="data"."""
        if self.bound == "data":
            return 0
        return self._footprint.reserved(self.max_bytes)

    def _limit(self) -> int:
        """What the data may use: max_bytes less the reserve for everything else in the
        directory, lowered so the disk keeps min_free_pct free (checked at most once per
        free_space_interval)."""
        return min(self._limits())

    def _limits(self) -> tuple[int, int]:
        """(max_bytes less the reserve, the free-space floor or that again when none)."""
        limit = self.max_bytes - self._reserved()
        if self.min_free_pct <= 0:
            return limit, limit
        now = time.monotonic()
        when, floor = self._limit_cache
        if now - when >= self.free_space_interval:
            free, total = disk_space(self.directory)
            want_free = total * self.min_free_pct / 100
            floor = max(0, self._used + int(free - want_free))
            self._limit_cache = (now, floor)
        return limit, floor

    def _make_room(self, need: int, protect: tuple[CachedFile, int, int] | None = None) -> bool:
        """Evict until `need` more bytes fit under the bound; False if they cannot. The
        eviction counts as "free_space" when the free-space floor is the lower limit."""
        bound, floor = self._limits()
        limit = min(bound, floor)
        if self._used + need <= limit:
            return True
        slack = max(0, min(limit // 16, 16 * self.block_size))
        reason = "free_space" if floor < bound else "size"
        self._evict_to(max(0, limit - need - slack), protect, reason=reason)
        return self._used + need <= self._limit()  # files gone may have taken directories

    def _evict_to(
        self,
        target: int,
        protect: tuple[CachedFile, int, int] | None = None,
        *,
        reason: str = "size",
    ) -> None:
        """Evict clean blocks of the coldest unpinned files (their last blocks first) until
        `used` is at most `target`."""
        to_free = self._used - target
        if to_free <= 0:
            return
        victims: list[tuple[CachedFile, list[int]]] = []
        taken: list[CachedFile] = []
        while to_free > 0:
            f = self._heat_order.take(evictable)
            if f is None:
                break
            taken.append(f)
            if f.states is None:
                self._load_blocks(f)
            st = f.states
            assert st is not None
            blocks: list[int] = []
            for b in range(len(st) - 1, -1, -1):
                if st[b] != CLEAN:
                    continue
                if protect is not None and protect[0] is f and protect[1] <= b <= protect[2]:
                    continue
                blocks.append(b)
                to_free -= self._alloc(f, b)
                if to_free <= 0:
                    break
            if blocks:
                blocks.reverse()
                victims.append((f, blocks))
        self._evict_blocks(victims, reason)
        for f in taken:
            if evictable(f):  # clean blocks left: it stays in the order
                self._heat_order.add(f)

    def _evict_blocks(self, victims: list[tuple[CachedFile, list[int]]], reason: str) -> int:
        """Drop the victims' clean blocks, their claims in one transaction first; count them."""
        if not victims:
            return 0
        self._persist_now(
            deletes=[(f, b) for f, blocks in victims for b in blocks],
            files=[f for f, _ in victims],
        )
        total = 0
        for f, blocks in victims:
            freed = self._drop_clean(f, blocks, persist=False)
            self._count_evicted(reason, len(blocks), freed)
            total += freed
        return total
