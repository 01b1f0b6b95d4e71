"""The size bound: eviction order, real disk usage, CacheFull, the free-space policy."""

from __future__ import annotations

import errno
import functools
import random

import pytest
import trio

from cache import CacheFull
from tests.cache.conftest import KiB
from tests.cache.remote_model import allocated

BS = 64 * KiB


@functools.cache
def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


async def test_reads_far_beyond_the_bound_stay_within_it(open_cache, remote):
    """Fill through reads (concurrent, uneven sizes) to 20x the bound; after every step the
    data files' real allocation (st_blocks) stays within max_bytes plus blocks in flight."""
    max_bytes = 16 * BS
    c = open_cache(max_bytes=max_bytes)
    sizes = {k: (k % 5 + 1) * 6 * BS + k * 777 for k in range(1, 25)}
    for k, n in sizes.items():
        remote.put(k, blob(n, k))
        c.set_remote_valid(k, n)
    worst = 0

    async def reader(k: int, step: int) -> None:
        nonlocal worst
        n = sizes[k]
        for off in range(0, n, step):
            got = await c.read(k, off, step, size=n, fetch=remote.fetch(k))
            assert got == blob(n, k)[off : off + step]
            inflight = sum(len(f.inflight) for f in c._files.values())
            on_disk = allocated(c)
            worst = max(worst, on_disk)
            assert on_disk <= max_bytes + inflight * BS
            assert c.stats().used <= max_bytes

    async with trio.open_nursery() as n:
        for k in sizes:
            n.start_soon(reader, k, (k % 3 + 1) * 20 * KiB)
    total = sum(sizes.values())
    assert total > 20 * max_bytes
    st = c.stats()
    assert st.fetched >= total and st.evictions > 0
    assert worst > max_bytes // 2  # the cache was really used
    assert allocated(c) <= st.used <= max_bytes


async def test_evicts_least_recently_used_files_first(open_cache, remote):
    c = open_cache(max_bytes=6 * BS)
    for k in (1, 2, 3):
        remote.put(k, blob(2 * BS, k))
        c.set_remote_valid(k, 2 * BS)
        await c.read(k, 0, 2 * BS, size=2 * BS, fetch=remote.fetch(k))
    await c.read(1, 0, 10, size=2 * BS, fetch=remote.fetch(1))  # 2 is now the oldest
    remote.put(4, blob(BS, 4))
    c.set_remote_valid(4, BS)
    await c.read(4, 0, BS, size=BS, fetch=remote.fetch(4))
    assert c.cached_bytes(2) < 2 * BS
    assert c.cached_bytes(1) == 2 * BS and c.cached_bytes(3) == 2 * BS


async def test_never_evicts_dirty_or_pinned(open_cache, remote):
    c = open_cache(max_bytes=4 * BS)
    await c.write(1, 0, b"d" * (2 * BS), fetch=remote.fetch(1))
    remote.put(2, blob(BS, 2))
    c.set_remote_valid(2, BS)
    c.pin(2)
    await c.read(2, 0, BS, size=BS, fetch=remote.fetch(2))
    remote.put(3, blob(8 * BS, 3))
    c.set_remote_valid(3, 8 * BS)
    got = await c.read(3, 0, 8 * BS, size=8 * BS, fetch=remote.fetch(3))
    assert got == blob(8 * BS, 3)  # served even though it could not all be kept
    assert c.dirty_bytes(1) == 2 * BS and c.cached_bytes(2) == BS
    assert c.stats().used <= 4 * BS
    # Once stored, clean blocks of file 3 were evicted before anything dirty or pinned.
    assert await c.read(1, 0, 2 * BS, size=2 * BS, fetch=remote.fetch(1)) == b"d" * (2 * BS)


async def test_writes_block_then_fail_with_cachefull(open_cache, remote, autojump_clock):
    c = open_cache(max_bytes=4 * BS, full_timeout=30)
    fetch = remote.fetch(1)
    await c.write(1, 0, b"a" * (4 * BS), fetch=fetch)
    start = trio.current_time()
    with pytest.raises(CacheFull) as info:
        await c.write(1, 4 * BS, b"b", fetch=fetch)
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)
    assert trio.current_time() - start == pytest.approx(30)
    # Nothing of the failed write is visible.
    assert c.dirty_ranges(1) == [(0, 4 * BS)]
    assert c.stats().used == 4 * BS and allocated(c) <= 4 * BS


async def test_blocked_write_proceeds_when_an_upload_cleans(open_cache, remote, autojump_clock):
    c = open_cache(max_bytes=4 * BS, full_timeout=30)
    fetch = remote.fetch(1)
    await c.write(1, 0, b"a" * (4 * BS), fetch=fetch)
    done = []

    async def writer():
        await c.write(2, 0, b"b" * BS, fetch=remote.fetch(2))
        done.append(trio.current_time())

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.sleep(5)
        assert not done
        data, token = c.snapshot_range(1, 0, 4 * BS)
        c.mark_clean(1, token)  # the upload finished: these blocks may now be evicted
    assert done and done[0] == pytest.approx(5)
    assert c.stats().used <= 4 * BS
    assert await c.read(2, 0, BS, size=BS, fetch=remote.fetch(2)) == b"b" * BS


async def test_rewriting_dirty_blocks_needs_no_room(open_cache, remote, autojump_clock):
    c = open_cache(max_bytes=2 * BS, full_timeout=1)
    fetch = remote.fetch(1)
    await c.write(1, 0, b"a" * (2 * BS), fetch=fetch)
    for _ in range(3):
        await c.write(1, 100, b"again", fetch=fetch)


async def test_min_free_pct_evicts_clean_data(open_cache, remote):
    """A free-space floor higher than this disk's free share: every clean block must go,
    dirty data stays, and reads are still served (uncached)."""
    c = open_cache(max_bytes=64 * BS, min_free_pct=100.0)
    remote.put(1, blob(4 * BS, 1))
    c.set_remote_valid(1, 4 * BS)
    got = await c.read(1, 0, 4 * BS, size=4 * BS, fetch=remote.fetch(1))
    assert got == blob(4 * BS, 1)
    assert c.cached_bytes(1) == 0
    c.min_free_pct = 0.0
    await c.read(1, 0, 4 * BS, size=4 * BS, fetch=remote.fetch(1))
    assert c.cached_bytes(1) == 4 * BS
    c.min_free_pct = 100.0
    c._limit_cache = (-1e9, 0)

    async with trio.open_nursery() as n:
        await n.start(c.run)
        with trio.fail_after(5):
            while c.cached_bytes(1):
                await trio.sleep(0.05)
        n.cancel_scope.cancel()
