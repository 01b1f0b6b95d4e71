"""Tiering policies and what the cache reports: tier_after and the free-space floor checked
by `run` every second, pins that count against the cache, the next files to tier, per-file
information and the numbers (evictions by reason, fetches)."""

from __future__ import annotations

import errno
import functools
import random

import pytest
import trio

from cache import CacheFull, PinTooLarge
from cache.datafile import metadata_allowance
from tests.cache.conftest import KiB, blob, put, read_all

BS = 64 * KiB
DAY = 86400.0


async def test_tier_after_tiers_files_not_accessed_for_that_long(
    open_cache, remote, clock, autojump_clock
):
    """With room to spare, `run` tiers the clean data of files not accessed for tier_after
    within a second; pinned files and dirty blocks stay, recent files stay until they age."""
    c = open_cache(clock=clock, max_bytes=1 << 30)
    for key in (1, 2, 3, 4):
        clock.advance(60)
        put(c, remote, key, 2 * BS)
        await read_all(c, remote, key, 2 * BS)
    c.pin(3, 2 * BS)
    await c.write(4, 0, b"d", fetch=remote.fetch(4))  # block 0 of 4 dirty, block 1 clean
    clock.advance(2 * DAY)
    await read_all(c, remote, 2, 2 * BS)
    async with trio.open_nursery() as nursery:
        # no commit: its worker thread would let the autojump clock run ahead of run()
        await nursery.start(functools.partial(c.run, commit_interval=1e9))
        await trio.sleep(3)
        assert [c.cached_bytes(k) for k in (1, 2, 3, 4)] == [2 * BS] * 4  # no tier_after
        assert c.next_to_tier(1)[0].reason == "heat"
        c.tier_after = DAY
        assert [(t.key, t.reason) for t in c.next_to_tier(2)] == [(1, "date"), (4, "date")]
        await trio.sleep(1.5)
        assert c.cached_bytes(1) == 0 and c.state(1, 2 * BS).tiered
        assert c.cached_bytes(2) == c.cached_bytes(3) == 2 * BS
        assert c.blocks(4) == {0: "dirty"}
        date = c.stats().evicted_by["date"]
        assert date.blocks == 3 and date.bytes == 3 * BS
        clock.advance(DAY + 60)  # file 2 ages too
        await trio.sleep(1.5)
        assert c.cached_bytes(2) == 0 and c.cached_bytes(3) == 2 * BS
        c.unpin(3)  # aged long ago: the next check takes it
        await trio.sleep(1.5)
        assert c.cached_bytes(3) == 0
        nursery.cancel_scope.cancel()
    st = c.stats()
    assert st.evicted_by["date"].blocks == 7 and st.evicted_by["size"].blocks == 0


async def test_free_space_floor_is_checked_every_second_and_wins(
    open_cache, remote, clock, autojump_clock
):
    """No call to the cache in between: when the disk's free space falls under the floor
    (here the floor is raised to 100 %, which no disk has), the next check evicts every
    clean unpinned block, counted as "free_space"; pinned and dirty data stay."""
    c = open_cache(clock=clock, max_bytes=1 << 30)
    for key in (1, 2, 3):
        put(c, remote, key, 2 * BS)
        await read_all(c, remote, key, 2 * BS)
    c.pin(2, 2 * BS)
    await c.write(3, 0, b"d", fetch=remote.fetch(3))
    async with trio.open_nursery() as nursery:
        # no commit: its worker thread would let the autojump clock run ahead of run()
        await nursery.start(functools.partial(c.run, commit_interval=1e9))
        c.min_free_pct = 100.0
        await trio.sleep(1.5)
        assert c.cached_bytes(1) == 0
        assert c.cached_bytes(2) == 2 * BS and c.blocks(3) == {0: "dirty"}
        nursery.cancel_scope.cancel()
    by = c.stats().evicted_by
    assert by["free_space"].blocks == 3 and by["free_space"].bytes == 3 * BS
    assert by["size"].blocks == 0
    c.min_free_pct = 0.0
    await read_all(c, remote, 1, 2 * BS)
    assert c.cached_bytes(1) == 2 * BS


async def test_a_pin_that_does_not_fit_is_refused_before_anything_changes(open_cache, remote):
    """Pins reserve room: a pin is refused when the pins would exceed what the data may use
    less the dirty data of unpinned files; a refused pin evicts nothing and records
    nothing. An accepted pin of a file never fetched is recorded, and once the content is
    fetched (evicting unpinned clean data for it) it stays."""
    c = open_cache(max_bytes=8 * BS)
    put(c, remote, 1, 3 * BS)
    await read_all(c, remote, 1, 3 * BS)
    await c.write(2, 0, blob(2 * BS, 2), fetch=remote.fetch(2))  # dirty: 2 blocks
    put(c, remote, 3, 4 * BS)
    c.pin(3, 4 * BS)  # 4 <= 8 - 2: accepted, nothing fetched yet
    assert c.file_info(3).pinned and c.cached_bytes(3) == 0
    assert c.pinned_bytes() == 4 * BS
    with pytest.raises(PinTooLarge) as info:
        c.pin(4, 3 * BS)  # 4 + 3 > 8 - 2
    err = info.value
    assert isinstance(err, CacheFull) and err.errno == errno.ENOSPC
    assert (err.pinned, err.available, err.asked) == (4 * BS, 6 * BS, 3 * BS)
    assert "cannot pin 192K: 256K is pinned already" in str(err)
    assert c.file_info(4) is None and c.pinned_bytes() == 4 * BS
    assert c.cached_bytes(1) == 3 * BS and c.stats().evictions == 0
    c.pin(3, 4 * BS)  # pinning again counts once
    assert c.pinned_bytes() == 4 * BS
    with pytest.raises(PinTooLarge):
        c.pin(3, 7 * BS)
    assert c.pinned_bytes() == 4 * BS and c.file_info(3).pinned
    await c.prefetch(3, 0, 4 * BS, size=4 * BS, fetch=remote.fetch(3))
    assert c.cached_bytes(3) == 4 * BS and c.cached_bytes(1) <= 2 * BS
    c.evict()
    assert c.cached_bytes(3) == 4 * BS and c.dirty_bytes(2) == 2 * BS
    assert c.cached_bytes(1) == 0
    c.unpin(3)
    assert c.pinned_bytes() == 0
    c.pin(4, 2 * BS)
    assert c.pinned_bytes() == 2 * BS
    c.close()
    c = open_cache(max_bytes=1000 * BS)
    assert c.pinned_bytes() == 2 * BS and c.file_info(4).pinned  # survives a reopen
    c.pin(5, 600 * BS)  # a pin reserves the extent allowance of so many blocks too
    assert c.pinned_bytes() == 2 * BS + 600 * BS + metadata_allowance(600)


async def test_deleting_or_renaming_a_pinned_file(open_cache, remote):
    c = open_cache(max_bytes=8 * BS)
    c.pin(1, 3 * BS)
    c.pin(2, 2 * BS)
    c.rename(1, 10)
    assert c.pinned_bytes() == 5 * BS and c.file_info(10).pinned
    c.delete(2)
    assert c.pinned_bytes() == 3 * BS
    c.rename(10, 1)
    c.unpin(1)
    assert c.pinned_bytes() == 0


async def test_next_to_tier_is_the_order_eviction_takes(open_cache, remote, clock):
    """Files of one block, each with its own history: next_to_tier lists exactly the order
    in which evict() then takes them, one by one; pinned and dirty-only files are not
    listed, and asking changes nothing."""
    c = open_cache(clock=clock)
    rng = random.Random(5)
    keys = list(range(1, 41))
    for key in keys:
        put(c, remote, key, BS)
    for _ in range(200):
        clock.advance(rng.choice([60, 3600, 86400]))
        key = rng.choice(keys)
        await read_all(c, remote, key, BS)
    c.pin(7, BS)
    await c.write(100, 0, blob(BS, 100), fetch=remote.fetch(100))
    cached = {k for k in keys if c.cached_bytes(k)}
    listed = c.next_to_tier(100)
    assert c.next_to_tier(100) == listed
    assert [t.key for t in listed] == sorted((k for k in cached if k != 7), key=lambda k: c.heat(k))
    assert all(t.reason == "heat" and t.cached_bytes == BS for t in listed)
    assert [t.heat for t in listed] == [c.heat(t.key) for t in listed]
    assert [t.last_access for t in listed] == [c.last_access(t.key) for t in listed]
    assert [t.key for t in c.next_to_tier(3)] == [t.key for t in listed[:3]]
    taken = []
    for _ in listed:
        before = {k for k in cached if c.cached_bytes(k)}
        assert c.evict(BS) == BS
        (gone,) = before - {k for k in cached if c.cached_bytes(k)}
        taken.append(gone)
    assert taken == [t.key for t in listed]
    assert c.next_to_tier(10) == []
    assert c.cached_bytes(7) == BS and c.dirty_bytes(100) == BS


async def test_file_info(open_cache, remote, clock):
    c = open_cache(clock=clock)
    assert c.file_info(1) is None
    put(c, remote, 1, 3 * BS)
    info = c.file_info(1)
    assert info is not None and info.last_access is None and info.heat == 0.0
    await read_all(c, remote, 1, 3 * BS)
    await c.write(1, 0, b"x", fetch=remote.fetch(1))
    c.pin(1, 3 * BS)
    info = c.file_info(1)
    assert (info.cached_bytes, info.dirty_bytes, info.pinned, info.pin_bytes) == (
        3 * BS,
        BS,
        True,
        3 * BS,
    )
    assert info.last_access == clock.now and info.heat == 1.0


async def test_numbers(open_cache, remote, autojump_clock):
    """Reads served from the cache (count, bytes) and reads that fetched, fetches with
    their failures and durations (trio's clock), as totals, buckets and through on_fetch;
    evictions by reason; sizes."""
    c = open_cache()
    seen: list[tuple[float, int, bool]] = []
    c.on_fetch = lambda seconds, nbytes, ok: seen.append((seconds, nbytes, ok))
    put(c, remote, 1, 4 * BS)
    slow = remote.fetch(1)

    async def fetch(offset: int, length: int) -> bytes:
        await trio.sleep(0.3)
        return await slow(offset, length)

    assert await c.read(1, 0, 2 * BS, size=4 * BS, fetch=fetch) == blob(4 * BS, 1)[: 2 * BS]
    assert await c.read(1, 100, 1000, size=4 * BS, fetch=fetch) == blob(4 * BS, 1)[100:1100]
    await c.prefetch(1, 0, 4 * BS, size=4 * BS, fetch=fetch)  # read-ahead: not a read
    await c.prefetch(1, 0, 4 * BS, size=4 * BS, fetch=fetch)
    remote.fail = OSError("share unreachable")
    put(c, remote, 2, BS)
    with pytest.raises(OSError, match="unreachable"):
        await c.read(2, 0, BS, size=BS, fetch=remote.fetch(2))
    st = c.stats()
    assert (st.hits, st.hit_bytes, st.misses) == (1, 1000, 1)  # a failed read is neither
    assert (st.fetches, st.fetch_failures, st.fetched) == (3, 1, 4 * BS)
    assert st.fetch_seconds == pytest.approx(0.6)
    buckets = dict(st.fetch_buckets)
    assert buckets[0.25] == 1 and buckets[0.5] == 3 and buckets[float("inf")] == 3
    assert [(round(s, 3), n, ok) for s, n, ok in seen] == [
        (0.3, 2 * BS, True),
        (0.3, 2 * BS, True),
        (0.0, 0, False),
    ]
    assert st.files == 2 and st.files_cached == 1 and st.index_bytes > 0
    assert st.evicted_by["command"].blocks == 0
    assert c.tier(1) == 4 * BS
    st = c.stats()
    assert st.evicted_by["command"] == (4, 4 * BS) and st.evictions == 4
    assert st.files_cached == 0


async def test_file_counts(open_cache, remote):
    """Files by state from the records: all blocks here, some, none (not counted), pinned."""
    c = open_cache(max_bytes=1 << 30)
    put(c, remote, 1, 3 * BS)
    put(c, remote, 2, 3 * BS)
    put(c, remote, 3, 3 * BS)
    await read_all(c, remote, 1, 3 * BS)  # local
    await c.read(2, 0, BS, size=3 * BS, fetch=remote.fetch(2))  # partial
    c.pin(4, BS)  # pinned, nothing fetched yet
    assert c.file_counts() == {"cached": 2, "local": 1, "partial": 1, "pinned": 1}
    c.tier(1)
    assert c.file_counts() == {"cached": 1, "local": 0, "partial": 1, "pinned": 1}
