"""prefetch(): read-ahead fills missing blocks like read() but builds no reply."""

from __future__ import annotations

import random

import trio

from tests.cache.conftest import KiB

BS = 64 * KiB


def pattern(n: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(n)


async def test_prefetch_fills_missing_runs_once_and_later_reads_hit(open_cache, remote):
    c = open_cache()
    data = pattern(6 * BS + 77)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    await c.read(1, 2 * BS, 10, size=len(data), fetch=remote.fetch(1))
    remote.calls.clear()
    assert await c.prefetch(1, 0, len(data) + BS, size=len(data), fetch=remote.fetch(1)) is None
    # Block 2 was present: two runs, the last one clipped to the file.
    assert remote.calls == [(1, 0, 2 * BS), (1, 3 * BS, 3 * BS + 77)]
    remote.calls.clear()
    assert await c.read(1, 0, len(data), size=len(data), fetch=remote.fetch(1)) == data
    assert remote.calls == []
    await c.prefetch(1, 0, len(data), size=len(data), fetch=remote.fetch(1))
    await c.prefetch(1, len(data), BS, size=len(data), fetch=remote.fetch(1))  # past the end
    assert remote.calls == []


async def test_reader_joining_a_prefetch_gets_its_bytes(open_cache, remote):
    c = open_cache()
    data = pattern(4 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    remote.gate = trio.Event()
    got = {}

    async def read():
        got["r"] = await c.read(1, BS + 5, BS, size=len(data), fetch=remote.fetch(1))

    async with trio.open_nursery() as n:
        n.start_soon(_prefetch_all, c, remote, len(data))
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        remote.gate.set()
    assert got["r"] == data[BS + 5 : 2 * BS + 5]
    assert remote.calls == [(1, 0, 4 * BS)]


async def test_prefetch_of_a_truncated_range_stores_nothing_stale(open_cache, remote):
    c = open_cache()
    data = pattern(4 * BS)
    remote.put(1, data)
    c.set_remote_valid(1, len(data))
    remote.gate = trio.Event()
    async with trio.open_nursery() as n:
        n.start_soon(_prefetch_all, c, remote, len(data))
        await trio.testing.wait_all_tasks_blocked()
        c.truncate(1, BS)  # the fill in flight must not store blocks past the new end
        remote.gate.set()
    remote.calls.clear()
    assert await c.read(1, 0, 4 * BS, size=4 * BS, fetch=remote.fetch(1)) == data[:BS] + bytes(
        3 * BS
    )


async def _prefetch_all(c, remote, n):
    await c.prefetch(1, 0, n, size=n, fetch=remote.fetch(1))
