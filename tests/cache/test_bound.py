"""The size bound: eviction order, real disk usage, CacheFull, the free-space policy, and
(bound="directory", the default) everything in the cache directory within max_bytes."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from cache import BlockCache, CacheFull, CacheTooSmall, minimum_size
from cache.footprint import MIN_BLOCKS, index_headroom
from tests.cache.conftest import KiB, MiB, blob
from tests.cache.remote_model import allocated, du

BS = 64 * KiB


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


async def test_evicts_the_coldest_files_first(open_cache, remote, clock):
    """Files read once each, a minute apart: the least recently used is the coldest (heat
    order among files used alike is LRU; tests/cache/test_heat.py shows where it is not)."""
    c = open_cache(max_bytes=6 * BS, clock=clock)
    for k in (1, 2, 3):
        remote.put(k, blob(2 * BS, k))
        c.set_remote_valid(k, 2 * BS)
        clock.advance(60)
        await c.read(k, 0, 2 * BS, size=2 * BS, fetch=remote.fetch(k))
    clock.advance(60)
    await c.read(1, 0, 10, size=2 * BS, fetch=remote.fetch(1))  # 2 is now the coldest
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
    c.pin(2, BS)
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


def index_bytes(c: BlockCache) -> int:
    return sum(p.stat().st_blocks * 512 for p in (c.directory / "index.lmdb").iterdir())


async def test_the_whole_directory_stays_within_max_bytes(open_cache, remote):
    """bound="directory": the data files, the data/xx directories appearing as files are
    cached, the index (grown by another table in the same environment, as the filesystem's
    namespace grows it) and a file of the caller's (a log, within other_reserve) together
    never exceed max_bytes, measured like du after every step. run() measures the index every
    0.1 s and evicts clean data when it grew into their room."""
    max_bytes = 4 * MiB
    bs = 16 * KiB
    c = open_cache(max_bytes=max_bytes, bound="directory", block_size=bs, other_reserve=256 * KiB)
    log = c.directory / "app.log"
    table = c.env.open_db(b"namespace")
    step_growth = index_headroom(max_bytes) // 4  # the namespace's growth between two ticks
    sizes = {k: (k % 7 + 1) * 3 * bs + k * 311 for k in range(1, 400)}
    for k, n in sizes.items():
        remote.put(k, blob(n, k))
        c.set_remote_valid(k, n)
    worst = 0
    row = 0
    subdirs = 0

    def check() -> None:
        nonlocal worst, subdirs
        used = du(c.directory)
        worst = max(worst, used)
        subdirs = max(subdirs, len(os.listdir(c.directory / "data")))
        assert used <= max_bytes, f"{used} bytes in the cache directory, bound {max_bytes}"

    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        for step, k in enumerate(sizes):
            n = sizes[k]
            got = await c.read(k, 0, n, size=n, fetch=remote.fetch(k))
            assert got == blob(n, k)
            check()
            if step % 8 == 0 and index_bytes(c) < 2 * MiB:  # the namespace grows the index
                with c.env.begin(write=True, db=table) as txn:
                    for _ in range(step_growth // 1024):
                        txn.put(row.to_bytes(8, "big"), bytes(900))
                        row += 1
                check()
            with open(log, "ab") as fh:  # the caller's log, rotated at its reserve
                if fh.tell() + 8 * KiB > 128 * KiB:
                    fh.truncate(0)
                fh.write(b"x" * 8 * KiB)
            check()
            if step % 8 == 7:
                await trio.sleep(c.footprint_interval * 1.5)  # a tick measures and evicts
                check()
        nursery.cancel_scope.cancel()
    st = c.stats()
    assert st.evictions > 0 and st.reserved > 0
    assert st.used <= max_bytes - st.reserved
    assert subdirs > 8  # data/xx directories came (and went with their files)
    assert index_bytes(c) > 2 * MiB  # the index took half the bound, and the data made way
    assert worst > max_bytes * 3 // 4  # the bound was really reached


async def test_too_small_a_bound_is_refused_with_the_minimum(tmp_path, remote):
    """max_bytes that cannot hold the directory's index, directories and other files plus
    MIN_BLOCKS blocks is refused at open, naming the minimum; at that minimum MIN_BLOCKS dirty
    blocks, each in a file of its own, fit without waiting; a data/xx directory goes with its
    last file."""
    bs = 64 * KiB
    with pytest.raises(CacheTooSmall, match="too small: it must be at least") as info:
        BlockCache.open(tmp_path / "c", max_bytes=MIN_BLOCKS * bs, share_id="s", block_size=bs)
    need = info.value.minimum
    assert need > MIN_BLOCKS * bs
    assert minimum_size(tmp_path / "c", bs) >= need  # what the CLI checks, before opening
    for i in range(256):  # left empty by an older version: removed at open
        (tmp_path / "c" / "data" / f"{i:02x}").mkdir(exist_ok=True)
    c = BlockCache.open(tmp_path / "c", max_bytes=need, share_id="s", block_size=bs, full_timeout=0)
    try:
        for k in range(MIN_BLOCKS):
            await c.write(k, 0, blob(bs, k), fetch=remote.fetch(k))
        c.commit()
        assert c.dirty_bytes() == MIN_BLOCKS * bs
        assert du(c.directory) <= need
        assert len(os.listdir(c.directory / "data")) <= MIN_BLOCKS
        for k in range(MIN_BLOCKS):
            c.delete(k)
        assert os.listdir(c.directory / "data") == []
    finally:
        c.close()


async def test_a_grown_index_raises_the_minimum_and_takes_room_from_data(tmp_path, remote):
    """The index only grows (LMDB reuses freed pages, never returns them): reopening with a
    bound its index leaves no room in is refused; with a bound that holds it, the data that
    no longer fit are evicted at open."""
    bs = 64 * KiB
    path = tmp_path / "c"
    fresh = minimum_size(path, bs)
    c = BlockCache.open(path, max_bytes=16 * MiB, share_id="s", block_size=bs)
    for k in range(1, 9):
        remote.put(k, blob(MiB, k))
        c.set_remote_valid(k, MiB)
        await c.read(k, 0, MiB, size=MiB, fetch=remote.fetch(k))
    table = c.env.open_db(b"namespace")
    with c.env.begin(write=True, db=table) as txn:
        for i in range(6000):
            txn.put(i.to_bytes(8, "big"), bytes(900))
    c.close()
    grown = minimum_size(path, bs)
    assert grown > fresh + 5 * MiB
    with pytest.raises(CacheTooSmall):
        BlockCache.open(path, max_bytes=fresh, share_id="s", block_size=bs)
    c = BlockCache.open(path, max_bytes=grown + 2 * MiB, share_id="s", block_size=bs)
    try:
        st = c.stats()
        assert 0 < st.used <= st.max_bytes - st.reserved
        assert du(path) <= grown + 2 * MiB
    finally:
        c.close()


async def test_the_extent_tree_of_a_shrunk_file_stays_counted(open_cache, remote):
    """ext4 gives a file with more than four extents a 4 KiB tree leaf and keeps it until the
    file's last extent goes: a file written in six separate blocks, then cut to two, still
    occupies that leaf, and the accounting must still cover it, before and after a reopen
    (a crash run once found `used` one page short of st_blocks)."""
    bs = 16 * KiB
    c = open_cache(block_size=bs)
    for b in range(0, 12, 2):  # six blocks with holes between them: six extents at least
        await c.write(7, b * bs, blob(bs, b), fetch=remote.fetch(7))
    c.commit()
    assert c.stats().used >= allocated(c)
    c.truncate(7, 3 * bs)  # blocks 0 and 2 remain
    c.commit()
    assert len(c.blocks(7)) == 2
    assert c.stats().used >= allocated(c)
    c.close()
    c = open_cache(block_size=bs)
    assert await c.read(7, 0, bs, size=3 * bs, fetch=remote.fetch(7)) == blob(bs, 0)
    assert c.stats().used >= allocated(c)
