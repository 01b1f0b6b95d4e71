"""Dirty tracking for the uploader: coalesced dirty ranges, consistent snapshots, and cleaning
only what did not change since the snapshot (generations). The uploader itself is
fsync_fuse/writeback/uploader.py; this is only the cache's side of it."""

from __future__ import annotations

import os

from .entry import CLEAN, DIRTY, FILLING, MAX_RANGE
from .results import Token
from .state import CacheState


class DirtyBlocks(CacheState):
    """Part of BlockCache: which blocks must be uploaded, and marking them clean again."""

    def dirty_keys(self) -> list[int]:
        return [k for k, f in self._files.items() if f.dirty]

    def dirty_bytes(self, key: int | None = None) -> int:
        if key is None:
            return self._dirty
        f = self._files.get(key)
        return f.dirty if f is not None else 0

    def dirty_ranges(self, key: int) -> list[tuple[int, int]]:
        """(offset, length) of dirty data, coalesced, each at most 4 MiB, clipped to the
        file's length as the cache knows it (its last write end or truncate size)."""
        f = self._files.get(key)
        if f is None:
            return []
        f = self._get(key)
        st = f.states
        assert st is not None
        sh = self._shift
        per = MAX_RANGE >> sh
        out: list[tuple[int, int]] = []
        b = st.find(DIRTY)
        while b >= 0:
            e = b
            while e < len(st) and st[e] == DIRTY and e - b < per:
                e += 1
            lo = b << sh
            hi = min(e << sh, f.length)
            if hi > lo:
                out.append((lo, hi - lo))
            b = st.find(DIRTY, e)
        return out

    def snapshot_range(self, key: int, offset: int, length: int) -> tuple[bytes, Token]:
        """A copy of [offset, offset+length) for upload plus the generations of the dirty
        blocks it fully covers (a block is covered when the range reaches its end or the
        file's end). Raises ValueError when part of the range is not in the cache."""
        f = self._get(key)
        st = f.states
        assert st is not None
        sh = self._shift
        end = offset + length
        gens: list[tuple[int, int]] = []
        if length <= 0:
            return b"", Token(f.data_id, ())
        for b in range((offset >> sh), ((end - 1) >> sh) + 1):
            s = f.state(b)
            if s < CLEAN:
                if (b << sh) < f.remote_valid or s == FILLING:
                    raise ValueError(f"snapshot of key {key}: block {b} is not cached")
                continue
            if s == DIRTY and offset <= (b << sh) and end >= min((b + 1) << sh, f.length):
                gens.append((b, f.gens[b]))
        if f.used:
            data = os.pread(self._fd(f), length, offset)
        else:
            data = b""
        if len(data) < length:
            data += bytes(length - len(data))
        return data, Token(f.data_id, tuple(gens))

    def mark_clean(self, key: int, token: Token) -> None:
        """Clean the blocks whose generation is still the one the snapshot saw."""
        f = self._files.get(key)
        if f is None or f.data_id != token.data_id or f.states is None:
            return
        st = f.states
        changed = False
        for b, gen in token.gens:
            if b < len(st) and st[b] == DIRTY and f.gens.get(b) == gen:
                self._set_block(f, b, CLEAN, self._alloc(f, b))
                changed = True
        if changed:
            self._space_freed()
