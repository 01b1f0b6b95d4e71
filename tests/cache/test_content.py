"""Reading, writing, read-modify-write, fetch de-duplication and failure, shape changes."""

from __future__ import annotations

import errno
import os
import random

import pytest
import trio

from cache import BlockCache, CacheMismatch, FileSlice
from cache.datafile import metadata_allowance
from tests.cache.conftest import KiB, MiB

BS = 64 * KiB


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


# ----------------------------------------------------------------------------- open


async def test_open_records_identity_and_refuses_mismatch(open_cache, tmp_path):
    c = open_cache()
    assert c.block_size == BS
    # The filesystem opens its own named DBs in the same environment.
    inodes = c.env.open_db(b"inodes")
    with c.env.begin(write=True, db=inodes) as txn:
        txn.put(b"k", b"v")
    assert c.env.info()["map_size"] >= 64 << 30
    assert c.env.max_key_size() > 0
    c.close()
    with pytest.raises(CacheMismatch, match="belongs to share"):
        BlockCache.open(tmp_path / "cache", max_bytes=MiB, share_id="other", block_size=BS)
    with pytest.raises(CacheMismatch, match="block size"):
        BlockCache.open(
            tmp_path / "cache",
            max_bytes=MiB,
            share_id="https://acct.file.core.windows.net/share",
            block_size=2 * BS,
        )
    c = open_cache()
    with c.env.begin(db=c.env.open_db(b"inodes")) as txn:
        assert txn.get(b"k") == b"v"
    with c.env.begin(write=True, db=c._index.meta) as txn:
        txn.put(b"schema", b"999")
    c.close()
    with pytest.raises(CacheMismatch, match="schema version 999"):
        open_cache()


async def test_many_named_dbs_fit(open_cache):
    c = open_cache()
    for i in range(32):
        c.env.open_db(f"fs.db{i}".encode())


def test_block_size_must_be_power_of_two(tmp_path):
    with pytest.raises(ValueError):
        BlockCache.open(tmp_path, max_bytes=MiB, share_id="s", block_size=3 * 4096)


# ----------------------------------------------------------------------------- reads


async def test_read_fetches_once_per_missing_run_then_hits(open_cache, remote):
    c = open_cache()
    data = pattern(10 * BS + 123)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    got = await c.read(1, 100, 3 * BS, size=len(data), fetch=remote.fetch(1))
    assert got == data[100 : 100 + 3 * BS]
    assert remote.calls == [(1, 0, 4 * BS)]  # one run of 4 blocks
    # Blocks 2..3 present, 4..5 missing, 6 present after this read -> runs are re-formed.
    await c.read(1, 6 * BS, 10, size=len(data), fetch=remote.fetch(1))
    remote.calls.clear()
    got = await c.read(1, 0, len(data) + 50, size=len(data), fetch=remote.fetch(1))
    assert got == data
    assert remote.calls == [(1, 4 * BS, 2 * BS), (1, 7 * BS, 3 * BS + 123)]
    remote.calls.clear()
    assert await c.read(1, 0, len(data), size=len(data), fetch=remote.fetch(1)) == data
    assert remote.calls == []
    st = c.stats()
    assert st.hits == 1 and st.misses == 3 and st.fetched == len(data)
    # The short last block occupies one page; plus room for the data file's extent tree.
    assert st.used == 10 * BS + 4096 + metadata_allowance(11)


async def test_read_clips_to_size_and_zero_fills_past_remote(open_cache, remote):
    c = open_cache()
    remote.put(1, b"abc")
    c.set_remote_valid(1, 3)
    assert await c.read(1, 0, 100, size=10, fetch=remote.fetch(1)) == b"abc" + bytes(7)
    assert await c.read(1, 10, 5, size=10, fetch=remote.fetch(1)) == b""
    # Beyond remote_valid nothing is fetched: a file extended locally reads zeros.
    remote.calls.clear()
    assert await c.read(1, 5 * BS, 7, size=6 * BS, fetch=remote.fetch(1)) == bytes(7)
    assert remote.calls == []
    # A remote that returns fewer bytes than remote_valid promised: zeros, not garbage.
    remote.put(2, b"xy")
    c.set_remote_valid(2, 100)
    assert await c.read(2, 0, 100, size=100, fetch=remote.fetch(2)) == b"xy" + bytes(98)


async def test_concurrent_readers_share_one_fetch(open_cache, remote):
    c = open_cache()
    data = pattern(4 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    remote.gate = trio.Event()
    results = {}

    async def reader(name, off, n):
        results[name] = await c.read(1, off, n, size=len(data), fetch=remote.fetch(1))

    async with trio.open_nursery() as n:
        n.start_soon(reader, "a", 0, 2 * BS)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader, "b", 10, 10)  # inside a's run
        n.start_soon(reader, "c", BS, 2 * BS)  # half in a's run, half missing
        n.start_soon(reader, "d", 0, 2 * BS)
        await trio.testing.wait_all_tasks_blocked()
        remote.gate.set()
    assert results == {
        "a": data[: 2 * BS],
        "b": data[10:20],
        "c": data[BS : 3 * BS],
        "d": data[: 2 * BS],
    }
    blocks = remote.fetched_blocks(1, BS)
    assert sorted(blocks) == [0, 1, 2], "a block was fetched twice"


async def test_a_fetch_answered_from_a_local_file_is_copied_file_to_file(open_cache, tmp_path):
    """A FileSlice answer (migrate --cutover) is stored by copy_file_range: the blocks are
    clean and read back, joined readers get the bytes, and with no room the bytes still
    reach the reader without being stored."""
    data = pattern(3 * BS + 100)
    src = tmp_path / "source"
    src.write_bytes(data)
    asked: list[tuple[int, int]] = []
    gate = trio.Event()

    async def fetch(offset: int, length: int) -> FileSlice:
        asked.append((offset, length))
        await gate.wait()
        return FileSlice(os.fsencode(src), offset, max(0, min(length, len(data) - offset)))

    c = open_cache()
    c.set_remote_valid(1, len(data))
    results = {}

    async def reader(name: str, off: int, n: int) -> None:
        results[name] = await c.read(1, off, n, size=len(data), fetch=fetch)

    async with trio.open_nursery() as n:
        n.start_soon(reader, "a", 0, len(data))
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader, "b", BS + 5, 10)  # joins a's fill
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert results == {"a": data, "b": data[BS + 5 : BS + 15]}
    assert asked == [(0, len(data))]
    assert c.state(1, len(data)).full and c.blocks(1) == dict.fromkeys(range(4), "clean")
    assert await c.read(1, 0, len(data), size=len(data), fetch=fetch) == data  # a hit
    assert len(asked) == 1
    c.close()
    # no room for the blocks: the reader still gets the bytes, nothing is kept
    small = open_cache(max_bytes=BS)
    small.set_remote_valid(2, len(data))
    assert await small.read(2, 0, len(data), size=len(data), fetch=fetch) == data
    assert small.cached_bytes(2) == 0
    # a source shorter than the range it stands for is an error, never zeros or junk
    src.write_bytes(data[:BS])
    small.set_remote_valid(3, len(data))
    with pytest.raises(OSError, match="shorter"):
        await small.read(3, 0, len(data), size=len(data), fetch=fetch)


async def test_failed_fetch_raises_to_every_waiter_and_leaves_nothing(open_cache, remote):
    c = open_cache()
    data = pattern(2 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    remote.gate = trio.Event()
    remote.fail = OSError(errno.EIO, "remote broke")
    errors = []

    async def reader(off):
        try:
            await c.read(1, off, 10, size=len(data), fetch=remote.fetch(1))
        except OSError as exc:
            errors.append(exc)

    async with trio.open_nursery() as n:
        for off in (0, 5, 100):
            n.start_soon(reader, off)
        await trio.testing.wait_all_tasks_blocked()
        remote.gate.set()
    assert len(errors) == 3 and all(e.errno == errno.EIO for e in errors)
    assert len(remote.calls) == 1
    assert c.blocks(1) == {} and c.stats().used == 0
    remote.fail = None
    assert await c.read(1, 0, 2 * BS, size=len(data), fetch=remote.fetch(1)) == data


async def test_cancelled_fetcher_lets_waiters_retry(open_cache, remote):
    c = open_cache()
    data = pattern(BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    remote.gate = trio.Event()
    got = []
    async with trio.open_nursery() as n:
        cs = trio.CancelScope()

        async def first():
            with cs:
                await c.read(1, 0, 10, size=len(data), fetch=remote.fetch(1))

        async def second():
            got.append(await c.read(1, 0, 10, size=len(data), fetch=remote.fetch(1)))

        n.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        cs.cancel()
        await trio.testing.wait_all_tasks_blocked()
        remote.gate.set()
    assert got == [data[:10]]
    assert len(remote.calls) == 2


# ----------------------------------------------------------------------------- writes


async def test_partial_write_reads_modify_writes_within_remote_valid(open_cache, remote):
    c = open_cache()
    data = pattern(3 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    await c.write(1, BS + 10, b"XYZ", fetch=remote.fetch(1))
    assert remote.calls == [(1, BS, BS)]  # the one partial block, nothing else
    expect = bytearray(data)
    expect[BS + 10 : BS + 13] = b"XYZ"
    assert await c.read(1, 0, len(data), size=len(data), fetch=remote.fetch(1)) == expect
    assert c.blocks(1)[1] == "dirty"
    assert c.dirty_ranges(1) == [(BS, BS)]


async def test_whole_block_and_beyond_remote_writes_never_fetch(open_cache, remote):
    c = open_cache()
    data = pattern(2 * BS + 100)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    # Covers block 0 fully; block 2 only up to remote_valid (which ends inside it).
    await c.write(1, 0, b"a" * BS, fetch=remote.fetch(1))
    await c.write(1, 2 * BS, b"b" * 100 + b"c" * 50, fetch=remote.fetch(1))
    # Past remote_valid: zeros, never fetched.
    await c.write(1, 5 * BS + 7, b"new", fetch=remote.fetch(1))
    assert remote.calls == []
    got = await c.read(1, 0, 6 * BS, size=6 * BS, fetch=remote.fetch(1))
    expect = bytearray(b"a" * BS + data[BS : 2 * BS] + b"b" * 100 + b"c" * 50)
    expect += bytes(5 * BS + 7 - len(expect)) + b"new"
    expect += bytes(6 * BS - len(expect))
    assert got == expect
    assert remote.calls == [(1, BS, BS)]  # only the block never written


async def test_new_local_file(open_cache, remote):
    c = open_cache()
    fetch = remote.fetch(7)
    await c.write(7, 3, b"hello", fetch=fetch)
    await c.write(7, BS - 2, b"span", fetch=fetch)
    assert remote.calls == []
    size = BS + 2
    got = await c.read(7, 0, size, size=size, fetch=fetch)
    assert got == bytes(3) + b"hello" + bytes(BS - 10) + b"span"
    assert c.dirty_ranges(7) == [(0, BS + 2)]
    assert c.dirty_bytes(7) == c.dirty_bytes() == BS + 4096


async def test_write_waits_for_fill_in_flight(open_cache, remote):
    c = open_cache()
    data = pattern(BS)
    remote.put(1, data)
    c.set_remote_valid(1, BS)
    remote.gate = trio.Event()
    async with trio.open_nursery() as n:
        n.start_soon(lambda: c.read(1, 0, 10, size=BS, fetch=remote.fetch(1)))
        await trio.testing.wait_all_tasks_blocked()
        # A whole-block write must not be overwritten by the fill that completes later.
        n.start_soon(lambda: c.write(1, 0, b"w" * BS, fetch=remote.fetch(1)))
        await trio.testing.wait_all_tasks_blocked()
        remote.gate.set()
    assert await c.read(1, 0, BS, size=BS, fetch=remote.fetch(1)) == b"w" * BS
    assert len(remote.calls) == 1


# ----------------------------------------------------------------------------- shape


async def test_truncate_zeroes_tail_and_lowers_remote_valid(open_cache, remote):
    c = open_cache()
    data = pattern(4 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    await c.read(1, 0, len(data), size=len(data), fetch=remote.fetch(1))
    c.truncate(1, BS + 10)
    assert c.remote_valid(1) == BS + 10
    assert c.blocks(1) == {0: "clean", 1: "dirty"}  # the tail block lost data: upload it
    assert c.dirty_ranges(1) == [(BS, 10)]
    # Grow again: the old bytes must not come back, neither from disk nor from the remote.
    remote.calls.clear()
    got = await c.read(1, 0, 4 * BS, size=4 * BS, fetch=remote.fetch(1))
    assert got == data[: BS + 10] + bytes(3 * BS - 10)
    assert remote.calls == []
    await c.write(1, 3 * BS, b"q", fetch=remote.fetch(1))
    assert remote.calls == []
    assert c.stats().used == BS + 4096 + 4096


async def test_truncate_growing_keeps_blocks_clean(open_cache, remote):
    c = open_cache()
    data = pattern(BS + 100)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    await c.read(1, 0, len(data), size=len(data), fetch=remote.fetch(1))
    c.truncate(1, 3 * BS)
    assert c.blocks(1) == {0: "clean", 1: "clean"}
    assert await c.read(1, 0, 3 * BS, size=3 * BS, fetch=remote.fetch(1)) == data + bytes(
        2 * BS - 100
    )


async def test_truncate_cancels_fill_in_flight(open_cache, remote):
    c = open_cache()
    data = pattern(2 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    remote.gate = trio.Event()
    got = []
    async with trio.open_nursery() as n:

        async def reader():
            got.append(await c.read(1, 0, 2 * BS, size=2 * BS, fetch=remote.fetch(1)))

        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        c.truncate(1, 10)
        remote.gate.set()
    assert got == [data]  # the read started before the truncate
    assert c.blocks(1) == {}  # but the stale fill was not stored
    assert await c.read(1, 0, BS, size=BS, fetch=remote.fetch(1)) == data[:10] + bytes(BS - 10)


async def test_delete_and_rename(open_cache, remote):
    c = open_cache()
    fetch = remote.fetch(0)
    await c.write(1, 0, b"one", fetch=fetch)
    await c.write(2, 0, b"two", fetch=fetch)
    path1 = c.data_path(1)
    c.rename(1, 3)
    assert c.data_path(3) == path1  # the data stays where it is
    assert await c.read(3, 0, 3, size=3, fetch=fetch) == b"one"
    assert sorted(c.dirty_keys()) == [2, 3]
    c.rename(3, 2)  # replaces key 2
    assert sorted(c.dirty_keys()) == [2]
    assert await c.read(2, 0, 3, size=3, fetch=fetch) == b"one"
    c.delete(2)
    assert not path1.exists()
    assert c.dirty_keys() == [] and c.stats().used == 0
    c.commit()
    c.close()
    c = BlockCache.open(
        c.directory,
        max_bytes=MiB,
        share_id="https://acct.file.core.windows.net/share",
        block_size=BS,
        bound="data",
    )
    try:
        assert c.stats().files == 0
    finally:
        c.close()


async def test_a_commit_with_nothing_to_write_writes_no_transaction(open_cache, remote):
    """A second fsync, or one of a directory, changes no claim: no transaction is written
    (the environment is still synced, for transactions others committed meanwhile)."""
    c = open_cache()
    await c.write(1, 0, b"x" * 100, fetch=remote.fetch(1))
    c.commit()
    txnid = c.env.info()["last_txnid"]
    c.commit()
    await c.commit_async(also=lambda txn: None)
    assert c.env.info()["last_txnid"] == txnid
    wrote = []
    c.commit(also=lambda txn: (txn.put(b"k", b"v"), lambda: wrote.append(1))[1])
    assert c.env.info()["last_txnid"] == txnid + 1 and wrote == [1]


async def test_invalidate_drops_clean_keeps_dirty(open_cache, remote):
    c = open_cache()
    old = pattern(3 * BS, seed=1)
    remote.put(1, old)
    c.set_remote_valid(1, len(old))
    await c.read(1, 0, len(old), size=len(old), fetch=remote.fetch(1))
    new = pattern(3 * BS, seed=2)
    remote.put(1, new)
    assert c.invalidate(1, len(new)) is False
    assert await c.read(1, 0, len(new), size=len(new), fetch=remote.fetch(1)) == new
    await c.write(1, BS, b"mine", fetch=remote.fetch(1))
    newer = pattern(2 * BS, seed=3)
    remote.put(1, newer)
    assert c.invalidate(1, len(newer)) is True  # conflict: our dirty block stays
    assert c.blocks(1) == {1: "dirty"}
    got = await c.read(1, 0, 2 * BS, size=2 * BS, fetch=remote.fetch(1))
    assert got == newer[:BS] + b"mine" + new[BS + 4 : 2 * BS]


# ----------------------------------------------------------------------------- write-back


async def test_dirty_ranges_coalesce_up_to_4mib(open_cache, remote):
    c = open_cache(block_size=1 * MiB, max_bytes=64 * MiB)
    fetch = remote.fetch(1)
    await c.write(1, 0, b"x" * (9 * MiB + 5), fetch=fetch)
    await c.write(1, 12 * MiB, b"y", fetch=fetch)
    assert c.dirty_ranges(1) == [
        (0, 4 * MiB),
        (4 * MiB, 4 * MiB),
        (8 * MiB, 2 * MiB),
        (12 * MiB, 1),
    ]


async def test_snapshot_and_mark_clean_respect_generations(open_cache, remote):
    c = open_cache()
    fetch = remote.fetch(1)
    await c.write(1, 0, b"a" * (3 * BS), fetch=fetch)
    data, token = c.snapshot_range(1, 0, 3 * BS)
    assert data == b"a" * (3 * BS)
    await c.write(1, BS + 5, b"b", fetch=fetch)  # lands while the upload runs
    c.mark_clean(1, token)
    assert c.blocks(1) == {0: "clean", 1: "dirty", 2: "clean"}
    assert c.dirty_ranges(1) == [(BS, BS)]
    # A snapshot of part of a block does not clean it.
    data, token = c.snapshot_range(1, BS, 10)
    c.mark_clean(1, token)
    assert c.blocks(1)[1] == "dirty"
    data, token = c.snapshot_range(1, BS, BS)
    c.mark_clean(1, token)
    assert c.dirty_keys() == [] and c.dirty_bytes() == 0


async def test_snapshot_covers_short_last_block(open_cache, remote):
    c = open_cache()
    await c.write(1, 0, b"z" * (BS + 10), fetch=remote.fetch(1))
    assert c.dirty_ranges(1) == [(0, BS + 10)]
    data, token = c.snapshot_range(1, 0, BS + 10)
    assert data == b"z" * (BS + 10)
    c.mark_clean(1, token)
    assert c.dirty_keys() == []


async def test_dirty_state_survives_restart(open_cache, remote):
    c = open_cache()
    fetch = remote.fetch(1)
    await c.write(1, 0, b"d" * 100, fetch=fetch)
    await c.write(2, BS, b"e" * 100, fetch=fetch)
    c.set_remote_valid(3, 10)
    c.pin(3, 10)
    c.commit()
    c.close()
    c = open_cache()
    assert sorted(c.dirty_keys()) == [1, 2]
    assert c.dirty_ranges(2) == [(BS, 100)]
    assert c.state(3, 10).pinned and c.remote_valid(3) == 10
    assert await c.read(2, BS, 100, size=BS + 100, fetch=fetch) == b"e" * 100


# ----------------------------------------------------------------------------- tiering


async def test_pin_state_and_tier(open_cache, remote):
    c = open_cache()
    data = pattern(3 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    assert str(c.state(1, len(data))) == "tiered"
    await c.read(1, 0, 10, size=len(data), fetch=remote.fetch(1))
    assert str(c.state(1, len(data))) == "partial"
    await c.write(1, 2 * BS, b"x", fetch=remote.fetch(1))
    await c.read(1, 0, len(data), size=len(data), fetch=remote.fetch(1))
    c.pin(1, len(data))
    s = c.state(1, len(data))
    assert (s.full, s.dirty, s.pinned, str(s)) == (True, True, True, "full,dirty,pinned")
    assert c.tier(1) == 0 and c.evict() == 0  # pinned: nothing leaves
    assert c.stats().pinned == 3 * BS
    c.unpin(1)
    assert c.tier(1) == 2 * BS  # the dirty block stays
    assert str(c.state(1, len(data))) == "partial,dirty"
    assert c.cached_bytes(1) == BS
    assert c.stats().evictions == 2


async def test_heat_survives_restart_and_orders_eviction(open_cache, remote, clock):
    c = open_cache(clock=clock)
    for key in (1, 2, 3):
        remote.put(key, pattern(BS, seed=key))
        c.set_remote_valid(key, BS)
    for key in (2, 3, 1):  # each read once, 2 first: the coldest
        clock.advance(60)
        await c.read(key, 0, BS, size=BS, fetch=remote.fetch(key))
    c.close()
    c = open_cache(clock=clock)
    assert c.evict(BS) == BS
    assert c.cached_bytes(2) == 0 and c.cached_bytes(3) == BS and c.cached_bytes(1) == BS


async def test_reads_do_not_write_the_index(open_cache, remote):
    """A hit costs a pread, not an LMDB write transaction."""
    c = open_cache()
    remote.put(1, pattern(BS))
    c.set_remote_valid(1, BS)
    await c.read(1, 0, BS, size=BS, fetch=remote.fetch(1))
    c.commit()
    before = c.env.info()["last_txnid"]
    for _ in range(100):
        await c.read(1, 0, BS, size=BS, fetch=remote.fetch(1))
    assert c.env.info()["last_txnid"] == before
    c.commit()
    assert c.env.info()["last_txnid"] == before + 1


def test_data_files_are_sparse(tmp_path):
    """The cache depends on holes: check this filesystem gives us them."""
    from cache.system import punch_hole

    p = tmp_path / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, b"x" * (1 << 20), 0)
        os.fsync(fd)
        punch_hole(fd, 0, 1 << 20)
        assert os.fstat(fd).st_blocks == 0
        assert os.pread(fd, 10, 100) == bytes(10)
    finally:
        os.close(fd)


async def test_commit_async_syncs_each_file_once_unless_written_meanwhile(
    open_cache, remote, monkeypatch
):
    """A file synced in commit_async's worker thread is not synced again by its commit; one
    written while that thread ran is; and a commit that runs meanwhile syncs the files the
    thread has not finished with (their claims must never precede their data)."""
    import cache.durability as durability
    from cache.datafile import DataFiles

    c = open_cache()
    for key in (1, 2, 3):
        await c.write(key, 0, b"x" * 100, fetch=remote.fetch(key))
    ids = {key: c._files[key].data_id for key in (1, 2, 3)}
    again: list[int] = []
    real_sync = DataFiles.datasync
    monkeypatch.setattr(
        DataFiles, "datasync", lambda self, d: again.append(d) or real_sync(self, d)
    )
    real_thread = durability._datasync_and_close

    def in_thread(fds):
        # while the thread syncs: a plain commit by another task, then a write to file 2
        trio.from_thread.run_sync(c.commit)
        trio.from_thread.run(lambda: c.write(2, 100, b"y", fetch=remote.fetch(2)))
        real_thread(fds)

    monkeypatch.setattr(durability, "_datasync_and_close", in_thread)
    await c.commit_async()
    # the commit meanwhile synced all three (the thread had not); the final commit only 2
    assert sorted(again) == sorted([*ids.values(), ids[2]])
    assert not c._syncing and not c._unsynced
    again.clear()
    monkeypatch.setattr(durability, "_datasync_and_close", real_thread)
    await c.write(3, 0, b"z", fetch=remote.fetch(3))
    await c.commit_async()
    assert again == []  # synced in the thread only
