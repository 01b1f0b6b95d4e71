"""Serving reads: hits by pread, misses by one fetch per run of missing blocks, joined by
every reader and writer that needs the same blocks (see INVARIANTS.md, "In flight")."""

from __future__ import annotations

import errno
import logging
import os
from bisect import bisect_left

import trio

from .datafile import overhead_after, page_up, pwrite_all
from .entry import ABSENT, CLEAN, FILLING, CachedFile, Fill
from .heat import ACCESS_GAP, HALF_LIFE, RESOLUTION
from .results import Fetch, FileSlice, as_bytes
from .state import FETCH_BUCKETS, CacheState
from .system import copy_range, punch_hole

log = logging.getLogger(__name__)


class Reading(CacheState):
    """Part of BlockCache: reads, read-ahead and the fills both share with writes."""

    async def read(self, key: int, offset: int, length: int, *, size: int, fetch: Fetch) -> bytes:
        """Bytes [offset, offset+length) clipped to `size`; missing blocks are fetched once per
        run of contiguous missing blocks and joined with fetches already in flight."""
        end = offset + length
        if end > size:
            end = size
        if offset >= end:
            return b""
        f = self._files.get(key)
        if f is not None and f.states is not None:
            st = f.states
            sh = self._shift
            b0 = offset >> sh
            b1 = (end - 1) >> sh
            if b1 < len(st) and (st[b0] >= CLEAN if b0 == b1 else min(st[b0 : b1 + 1]) >= CLEAN):
                data = os.pread(self._data.fd(f.data_id), end - offset, offset)
                if len(data) < end - offset:
                    data += bytes(end - offset - len(data))
                self._hits += 1
                self._hit_bytes += end - offset
                f.length = size
                now = self._clock()
                dt = now - f.atime
                if dt >= RESOLUTION:  # heat.access, inlined: this is the hot path
                    f.heat = f.heat * 2.0 ** (-dt / HALF_LIFE) + (
                        1.0 if dt >= ACCESS_GAP else dt / ACCESS_GAP
                    )
                    f.atime = now
                self._meta_dirty.add(f)
                return data
        return await self._read_slow(key, offset, end, size, fetch)

    async def prefetch(
        self, key: int, offset: int, length: int, *, size: int, fetch: Fetch
    ) -> None:
        """What read() does for blocks that are missing, without building a reply: read-ahead
        throws the bytes away, and copying megabytes into a reply on the one thread costs more
        than the fetch (py-spy on a cold sequential read)."""
        end = min(offset + length, size)
        if offset < end:
            await self._read_slow(key, offset, end, size, fetch, reply=False)

    async def _read_slow(
        self, key: int, offset: int, end: int, size: int, fetch: Fetch, *, reply: bool = True
    ) -> bytes:
        f = self._get(key)
        self._touch(f)  # most recently used: our own fills must not evict each other
        sh = self._shift
        b0 = offset >> sh
        b1 = (end - 1) >> sh
        got: dict[int, memoryview] = {}  # bytes of fills we ran or joined, by block
        missed = False
        while True:
            if f.dead:
                f = self._get(key)
                got.clear()
            st = f.states
            assert st is not None
            rv = f.remote_valid
            run_start = -1
            runs: list[tuple[int, int]] = []
            wait: Fill | None = None
            for b in range(b0, b1 + 1):
                s = st[b] if b < len(st) else ABSENT
                if s == ABSENT and b not in got and (b << sh) < rv:
                    if run_start < 0:
                        run_start = b
                    continue
                if run_start >= 0:
                    runs.append((run_start, b))
                    run_start = -1
                if s == FILLING and b not in got and wait is None:
                    wait = f.inflight[b]
            if run_start >= 0:
                runs.append((run_start, b1 + 1))
            if not runs and wait is None:
                break
            missed = True
            if runs:
                await self._fetch_run(f, runs[0][0], runs[0][1], fetch, got)
            else:
                assert wait is not None
                await self._join_fill(wait, got)
        if reply:  # read-ahead is not a read
            if missed:
                self._misses += 1
            else:
                self._hits += 1
                self._hit_bytes += end - offset
        f.length = size
        self._touch(f)
        return self._assemble(f, offset, end, got) if reply else b""

    def _assemble(self, f: CachedFile, offset: int, end: int, got: dict[int, memoryview]) -> bytes:
        """Build the reply from present blocks (pread), fetched-but-unstored blocks and zeros."""
        st = f.states
        assert st is not None
        sh = self._shift
        b0 = offset >> sh
        b1 = (end - 1) >> sh
        n = end - offset
        if not got and all(st[b] >= CLEAN for b in range(b0, min(b1 + 1, len(st)))):
            if f.used == 0:
                return bytes(n)
            data = os.pread(self._fd(f), n, offset)
            return data if len(data) == n else data + bytes(n - len(data))
        buf = bytearray(n)
        view = memoryview(buf)
        for b in range(b0, b1 + 1):
            lo = max(offset, b << sh)
            hi = min(end, (b + 1) << sh)
            piece = got.get(b)
            if piece is not None:
                src = piece[lo - (b << sh) : hi - (b << sh)]
                view[lo - offset : lo - offset + len(src)] = src
            elif b < len(st) and st[b] >= CLEAN:
                os.preadv(self._fd(f), [view[lo - offset : hi - offset]], lo)
        return bytes(buf)

    async def _join_fill(self, fill: Fill, got: dict[int, memoryview]) -> None:
        await fill.event.wait()
        if fill.error is not None:
            if isinstance(fill.error, trio.Cancelled):
                return  # the task that fetched was cancelled; the caller retries
            raise fill.error
        self._take(fill, got)

    def _take(self, fill: Fill, got: dict[int, memoryview]) -> None:
        """Keep the bytes of a fill we waited for: even when stored, the blocks may be evicted
        again before our reply is built, and we must not fetch them twice."""
        if fill.data is None:
            return
        data = memoryview(fill.data)
        bs = self.block_size
        for i, b in enumerate(range(fill.first, fill.last)):
            got[b] = data[i * bs : (i + 1) * bs]

    async def _fetch_run(
        self, f: CachedFile, first: int, last: int, fetch: Fetch, got: dict[int, memoryview]
    ) -> None:
        """Fetch blocks [first, last) (all ABSENT) with one call, store them if there is room."""
        sh = self._shift
        fill = Fill(first, last)
        f.grow(last)
        st = f.states
        assert st is not None
        for b in range(first, last):
            st[b] = FILLING
            f.inflight[b] = fill
        off = first << sh
        want = min(last << sh, f.remote_valid) - off
        start = trio.current_time()
        data: bytes | memoryview | None
        try:
            answer = await fetch(off, want)
            local = False
            if isinstance(answer, FileSlice):
                local = True  # stored (or not) by _place already
                n = min(answer.length, want)
                data = self._place(f, fill, answer._replace(length=n))
            else:
                n = min(len(answer), want)
                data = memoryview(answer)[:want] if len(answer) > want else answer
        except BaseException as exc:
            fill.error = exc
            self._end_fill(f, fill)
            if isinstance(exc, Exception):  # a cancelled fetch is no answer of the remote
                self._fetch_ended(start, 0, False)
            raise
        self._fetched += n
        self._fetch_ended(start, n, True)
        fill.data = data
        if data is not None and not local and not fill.cancelled and not f.dead:
            self._store_fill(f, fill, data)
        self._end_fill(f, fill)
        self._take(fill, got)

    def _place(self, f: CachedFile, fill: Fill, where: FileSlice) -> bytes | None:
        """A fill whose bytes are in a local file: copied file to file into the data file
        (None: stored, the blocks are CLEAN and every reader preads them); when it cannot be
        stored (no room, a write cancelled the fill, an I/O error) the bytes themselves."""
        if not fill.cancelled and not f.dead:
            src = os.open(where.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if self._store_fill(f, fill, where, src):
                    return None
            finally:
                os.close(src)
        return as_bytes(where)

    def _fetch_ended(self, start: float, nbytes: int, ok: bool) -> None:
        """Count one fetch (CacheStats) and hand it to `on_fetch`, whose errors are logged."""
        seconds = trio.current_time() - start
        self._fetches += 1
        if not ok:
            self._fetch_failures += 1
        self._fetch_seconds += seconds
        self._fetch_buckets[bisect_left(FETCH_BUCKETS, seconds)] += 1
        if self.on_fetch is not None:
            try:
                self.on_fetch(seconds, nbytes, ok)
            except Exception:
                log.exception("cache: on_fetch callback failed")

    def _end_fill(self, f: CachedFile, fill: Fill) -> None:
        st = f.states
        assert st is not None
        for b in range(fill.first, fill.last):
            if f.inflight.get(b) is fill:
                del f.inflight[b]
                if st[b] == FILLING:
                    st[b] = ABSENT
        fill.event.set()

    def _store_fill(
        self, f: CachedFile, fill: Fill, data: bytes | memoryview | FileSlice, src: int = -1
    ) -> bool:
        """Write a fill's bytes into the data file if room can be made; else leave the blocks
        absent (the waiters have the bytes anyway). A failed write leaves a hole, not junk.
        A FileSlice is copied from the open file `src`; a copy that comes up short (the file
        shrank) is a failed write too. True when stored."""
        bs = self.block_size
        n = data.length if isinstance(data, FileSlice) else len(data)
        allocs = [page_up(max(0, min(bs, n - i * bs))) for i in range(fill.last - fill.first)]
        more = overhead_after(f.overhead, f.npresent + len(allocs)) - f.overhead
        if not self._make_room(sum(allocs) + more):
            return False
        off = fill.first << self._shift
        fd = self._fd(f)
        try:
            if isinstance(data, FileSlice):
                assert data.offset == off
                if copy_range(src, fd, off, n) < n:
                    raise OSError(errno.EIO, "the source file ended early")
            elif n:
                pwrite_all(fd, data, off)
        except OSError:
            log.warning("cache fill of %d bytes failed; serving it uncached", n, exc_info=True)
            punch_hole(fd, off, (fill.last - fill.first) * bs)
            return False
        for i, b in enumerate(range(fill.first, fill.last)):
            self._set_block(f, b, CLEAN, allocs[i])
        self._unsynced.add(f.data_id)
        return True
