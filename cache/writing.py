"""Writes (with read-modify-write and waiting for room) and shape changes: truncate, delete,
rename, invalidate. Destructive steps withdraw claims first (INVARIANTS.md, 3 and 4)."""

from __future__ import annotations

import os
import time

import trio

from .datafile import overhead_after, page_up, pwrite_all
from .entry import ABSENT, CLEAN, DIRTY, FILLING, CachedFile, Fill, has_present
from .errors import CacheFull
from .results import Fetch
from .state import CacheState


class Writing(CacheState):
    """Part of BlockCache: writes and the calls that change a file's shape or identity."""

    async def write(self, key: int, offset: int, data: bytes | memoryview, *, fetch: Fetch) -> None:
        """Write into the cache and mark the touched blocks dirty (generation++).

        A partial write into a block that is neither present nor at/after remote_valid fetches
        the block first (read-modify-write). Waits up to full_timeout for room when dirty and
        pinned data fill the cache, then raises CacheFull; nothing is written in that case."""
        n = len(data)
        if n == 0:
            return
        sh = self._shift
        bs = self.block_size
        end = offset + n
        b0 = offset >> sh
        b1 = (end - 1) >> sh
        f = self._get(key)
        epoch = f.epoch
        got: dict[int, memoryview] = {}
        deadline: float | None = None
        while True:
            if f.dead:
                f = self._get(key)
            if f.dead or f.epoch != epoch:
                got.clear()
                epoch = f.epoch
            st = f.states
            assert st is not None
            rv = f.remote_valid
            wait: Fill | None = None
            for b in range(b0, min(b1 + 1, len(st))):
                if st[b] == FILLING:
                    wait = f.inflight[b]
                    break
            if wait is not None:
                await self._join_fill(wait, got)
                continue
            need = None
            for b in (b0, b1):
                bstart = b << sh
                if f.state(b) != ABSENT or b in got or bstart >= rv:
                    continue
                if offset <= bstart and end >= min(bstart + bs, rv):
                    continue  # every byte the remote could supply is overwritten
                need = b
                break
            if need is not None:
                await self._fetch_run(f, need, need + 1, fetch, got)
                continue
            # From here on no await until the write is done.
            f.grow(b1 + 1)
            allocs: list[int] = []
            growth = 0
            fresh_blocks = 0
            for b in range(b0, b1 + 1):
                s = st[b]
                hi = page_up(min(end - (b << sh), bs))
                if s >= CLEAN:
                    old = self._alloc(f, b)
                    new = max(old, hi)
                    growth += new - old
                else:
                    piece = got.get(b)
                    new = max(hi, page_up(len(piece))) if piece is not None else hi
                    growth += new
                    fresh_blocks += 1
                allocs.append(new)
            growth += overhead_after(f.overhead, f.npresent + fresh_blocks) - f.overhead
            if growth > 0 and not self._make_room(growth, protect=(f, b0, b1)):
                if deadline is None:
                    deadline = trio.current_time() + self.full_timeout
                await self._wait_for_space(deadline)
                continue
            break
        if f.data_id not in self._volatile:
            durable = f.durable
            for b in range(b0, min(b1 + 1, len(durable))):
                if durable[b] == CLEAN and st[b] == CLEAN:
                    self._persist_now(volatile=[f])
                    break
        fd = self._fd(f)
        for b in range(b0, b1 + 1):
            piece = got.get(b)
            if piece is not None and st[b] == ABSENT and len(piece):
                pwrite_all(fd, piece, b << sh)
        pwrite_all(fd, data, offset)
        for i, b in enumerate(range(b0, b1 + 1)):
            self._set_block(f, b, DIRTY, allocs[i])
            self._gen += 1
            f.gens[b] = self._gen
        if end > f.length:
            f.length = end
        f.last_mut = time.monotonic()
        self._unsynced.add(f.data_id)
        self._touch(f)

    async def _wait_for_space(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._space_event.wait()
            return
        raise CacheFull(
            f"{self._dirty} dirty bytes and pinned data fill the {self.max_bytes}-byte cache "
            f"and no upload freed room within {self.full_timeout:g} s"
        )

    def truncate(self, key: int, size: int) -> None:
        """Drop blocks past `size`, zero the tail of the last block (a present tail block that
        loses data becomes dirty), lower remote_valid to `size`. Persist the new size in the
        filesystem's own records before calling this (see INVARIANTS.md)."""
        f = self._get(key)
        sh = self._shift
        bs = self.block_size
        st = f.states
        assert st is not None
        keep = (size + bs - 1) >> sh  # blocks [0, keep) survive
        f.cancel_fills(size >> sh)
        dropped = [b for b in range(keep, len(st)) if st[b] >= CLEAN]
        tail = size >> sh if size & (bs - 1) else -1  # partial last block, if any
        fd = -1
        if has_present(st):
            fd = self._fd(f)
            if os.fstat(fd).st_size <= size:
                fd = -1  # nothing beyond `size` to destroy
        if fd < 0 or f.state(tail) < CLEAN:
            tail = -1
        lowered = f.remote_valid > size
        f.remote_valid = min(f.remote_valid, size)
        f.length = size
        f.epoch += 1
        self._meta_dirty.add(f)
        self._persist_now(
            deletes=[(f, b) for b in dropped],
            dirties=[(f, tail)] if tail >= 0 else [],
            files=[f],
            force=lowered,
        )
        if fd >= 0:
            os.ftruncate(fd, size)
            self._unsynced.add(f.data_id)
            for b in dropped:
                self._set_block(f, b, ABSENT)
            if tail >= 0:
                tstart = tail << sh
                self._set_block(f, tail, DIRTY, min(self._alloc(f, tail), page_up(size - tstart)))
                self._gen += 1
                f.gens[tail] = self._gen
            f.last_mut = time.monotonic()
            self._space_freed()
        if not f.fresh and not f.inflight and not has_present(st):
            self._data.unlink(f.data_id)
            self._unsynced.discard(f.data_id)
            f.fresh = True

    def set_remote_valid(self, key: int, nbytes: int) -> None:
        """How many leading bytes of the file the remote can supply (0 for a new local file)."""
        f = self._get(key)
        if f.remote_valid != nbytes:
            f.remote_valid = nbytes
            f.length = max(f.length, nbytes)
            self._meta_dirty.add(f)

    def remote_valid(self, key: int) -> int:
        f = self._files.get(key)
        return f.remote_valid if f is not None else 0

    def delete(self, key: int) -> None:
        """Forget the file and free its data."""
        f = self._files.get(key)
        if f is None:
            return
        if f.states is None:
            self._load_blocks(f)
        st = f.states
        assert st is not None
        f.cancel_fills()
        present = [(f, b) for b in range(len(st)) if st[b] >= CLEAN]
        self._persist_now(deletes=[(f, b) for b in range(len(f.durable)) if f.durable[b]])
        for _, b in present:
            self._set_block(f, b, ABSENT)
        self._data.unlink(f.data_id)
        self._forget(f)
        self._space_freed()

    def _forget(self, f: CachedFile) -> None:
        f.dead = True
        del self._files[f.key]
        del self._by_id[f.data_id]
        if f.pinned:
            self._pin_out(f)
        self._heat_order.discard(f)
        self._date_order.discard(f)
        self._pending_files.discard(f)
        self._meta_dirty.discard(f)
        self._unsynced.discard(f.data_id)
        self._deleted_keys.add(f.key)
        self._dropped_ids.add(f.data_id)

    def rename(self, old_key: int, new_key: int) -> None:
        """The entry moves to new_key (replacing what was there); the data stays in place."""
        if old_key == new_key:
            return
        if new_key in self._files:
            self.delete(new_key)
        f = self._files.pop(old_key, None)
        if f is None:
            return
        f.key = new_key
        self._files[new_key] = f
        self._deleted_keys.add(old_key)
        self._deleted_keys.discard(new_key)
        self._meta_dirty.add(f)

    def invalidate(self, key: int, remote_size: int) -> bool:
        """The remote content changed: drop clean blocks, keep dirty ones, set remote_valid.
        Returns True when dirty blocks remain (a conflict the caller must resolve)."""
        f = self._files.get(key)
        if f is None:
            self.set_remote_valid(key, remote_size)
            return False
        f = self._get(key)
        st = f.states
        assert st is not None
        f.cancel_fills()
        clean = [b for b in range(len(st)) if st[b] == CLEAN]
        f.epoch += 1
        if DIRTY not in st:
            f.remote_valid = remote_size
            f.length = remote_size
        else:
            # A conflict: the local version keeps its length, and if it grows, the bytes past
            # that length are a hole of zeros, never the share's new content.
            f.remote_valid = min(remote_size, f.length)
        self._meta_dirty.add(f)
        self._drop_clean(f, clean)
        return DIRTY in st
