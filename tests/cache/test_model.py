"""Random operation sequences against a simple model: a bytearray per file plus a model remote.

The model is what the filesystem would see: `content` (its view of each file), `remote` (what
the share holds) and `rv` (what it told the cache the remote can supply). Uploads follow the
write-back protocol: dirty_ranges -> snapshot_range -> (maybe a racing write) -> put the bytes
on the remote -> mark_clean -> set_remote_valid. Every read is compared byte for byte."""

from __future__ import annotations

import random
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache import BlockCache, CacheFull, PinTooLarge
from tests.cache.remote_model import ModelRemote, allocated

BS = 4096
MAX_BYTES = 10 * BS
KEYS = (1, 2, 3)
SHARE = "https://acct.file.core.windows.net/model"

keys = st.sampled_from(KEYS)
offsets = st.integers(0, 7 * BS)
lengths = st.integers(1, 3 * BS)
seeds = st.integers(0, 2**32)

ops = st.one_of(
    st.tuples(st.just("read"), keys, offsets, lengths),
    st.tuples(st.just("write"), keys, offsets, lengths, seeds),
    st.tuples(st.just("write"), keys, offsets, st.integers(1, 300), seeds),
    st.tuples(st.just("truncate"), keys, st.integers(0, 7 * BS)),
    st.tuples(st.just("evict"), st.none() | st.integers(0, 4 * BS)),
    st.tuples(st.just("tier"), keys),
    st.tuples(st.just("commit")),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("invalidate"), keys, st.integers(0, 6 * BS), seeds),
    st.tuples(st.just("upload"), keys, st.booleans(), st.booleans()),
    st.tuples(st.just("pin"), keys, st.booleans()),
)


class Model:
    def __init__(self, initial: dict[int, bytes]) -> None:
        self.remote = ModelRemote()
        self.content: dict[int, bytearray] = {}
        self.rv: dict[int, int] = {}
        self.written: dict[int, set[int]] = {k: set() for k in KEYS}
        for k, data in initial.items():
            self.remote.put(k, data)
            self.content[k] = bytearray(data)
            self.rv[k] = len(data)

    def write(self, k: int, off: int, data: bytes) -> None:
        c = self.content[k]
        if len(c) < off + len(data):
            c.extend(bytes(off + len(data) - len(c)))
        c[off : off + len(data)] = data
        self.written[k].update(range(off // BS, (off + len(data) - 1) // BS + 1))


def open_cache(directory: str) -> BlockCache:
    return BlockCache.open(
        directory,
        max_bytes=MAX_BYTES,
        share_id=SHARE,
        block_size=BS,
        full_timeout=0,
        bound="data",
    )


async def check_all(cache: BlockCache, m: Model) -> None:
    for k in KEYS:
        size = len(m.content[k])
        got = await cache.read(k, 0, size + BS, size=size, fetch=m.remote.fetch(k))
        assert got == m.content[k], f"file {k} differs"
        for off, n in cache.dirty_ranges(k):
            assert 0 < n <= 4 << 20 and off + n <= size
            assert off % BS == 0
        assert m.written[k] <= {b for b, s in cache.blocks(k).items() if s == "dirty"}
    s = cache.stats()
    assert s.used <= MAX_BYTES
    assert s.dirty == sum(cache.dirty_bytes(k) for k in KEYS)
    assert allocated(cache) <= s.used


async def upload(cache: BlockCache, m: Model, k: int, race: bool, partial: bool) -> None:
    ranges = cache.dirty_ranges(k)
    if partial:
        ranges = ranges[:1]
    snaps = []
    for off, n in ranges:
        data, token = cache.snapshot_range(k, off, n)
        assert data == m.content[k][off : off + n]
        snaps.append((off, data, token))
    written_after = set()
    if race and ranges:
        off = ranges[0][0]
        await cache.write(k, off, b"\xee", fetch=m.remote.fetch(k))  # a dirty block: no room needed
        m.write(k, off, b"\xee")
        written_after = {off // BS}
    # The share: truncated to what the cache was told it holds, then resized, then the ranges.
    size = len(m.content[k])
    remote = m.remote.files.setdefault(k, bytearray())
    del remote[min(m.rv[k], size) :]
    remote.extend(bytes(size - len(remote)))
    for off, data, token in snaps:
        remote[off : off + len(data)] = data
        cache.mark_clean(k, token)
    m.rv[k] = size
    cache.set_remote_valid(k, size)
    uploaded = {b for off, n in ranges for b in range(off // BS, (off + n - 1) // BS + 1)}
    m.written[k] = (m.written[k] - uploaded) | written_after
    still = {b for b, s in cache.blocks(k).items() if s == "dirty"}
    assert still & uploaded <= written_after


async def run_ops(directory: str, initial: dict[int, bytes], script) -> None:
    m = Model(initial)
    cache = open_cache(directory)
    try:
        for k in KEYS:
            cache.set_remote_valid(k, m.rv[k])
        for op in script:
            name = op[0]
            if name == "read":
                _, k, off, n = op
                size = len(m.content[k])
                got = await cache.read(k, off, n, size=size, fetch=m.remote.fetch(k))
                assert got == m.content[k][off : off + n]
            elif name == "write":
                _, k, off, n, seed = op
                data = random.Random(seed).randbytes(n)
                before = cache.dirty_ranges(k)
                try:
                    await cache.write(k, off, data, fetch=m.remote.fetch(k))
                except CacheFull:
                    assert cache.dirty_ranges(k) == before
                    continue
                m.write(k, off, data)
            elif name == "truncate":
                _, k, size = op
                cache.truncate(k, size)
                c = m.content[k]
                del c[size:]
                c.extend(bytes(size - len(c)))
                m.rv[k] = min(m.rv[k], size)
                m.written[k] = {b for b in m.written[k] if b * BS < size}
            elif name == "evict":
                cache.evict(op[1])
            elif name == "tier":
                cache.tier(op[1])
            elif name == "commit":
                cache.commit()
            elif name == "reopen":
                cache.close()
                cache = open_cache(directory)
            elif name == "invalidate":
                _, k, size, seed = op
                new = random.Random(seed).randbytes(size)
                dirty = {b for b, s in cache.blocks(k).items() if s == "dirty"}
                assert m.written[k] <= dirty
                m.remote.put(k, new)
                conflict = cache.invalidate(k, size)
                assert conflict == bool(dirty)
                if not conflict:
                    m.content[k] = bytearray(new)
                else:
                    c = m.content[k]
                    for b in range((len(c) + BS - 1) // BS):
                        if b not in dirty:
                            piece = new[b * BS : (b + 1) * BS]
                            end = min(len(c), (b + 1) * BS)
                            c[b * BS : end] = (piece + bytes(BS))[: end - b * BS]
                # remote_valid: the share's size, capped at the local length in a conflict.
                m.rv[k] = size if not conflict else min(size, len(m.content[k]))
            elif name == "upload":
                _, k, race, partial = op
                await upload(cache, m, k, race, partial)
            elif name == "pin":
                _, k, on = op
                if not on:
                    cache.unpin(k)
                    continue
                was = cache.state(k, len(m.content[k])).pinned
                try:
                    cache.pin(k, len(m.content[k]))
                except PinTooLarge:
                    assert cache.state(k, len(m.content[k])).pinned == was
                    continue
                assert cache.pinned_bytes() <= MAX_BYTES
        await check_all(cache, m)
        cache.close()
        cache = open_cache(directory)
        await check_all(cache, m)
        # Everything uploaded: the remote alone must now reproduce every file.
        for k in KEYS:
            await upload(cache, m, k, False, False)
            assert cache.dirty_ranges(k) == []
            assert m.remote.files[k] == m.content[k]
    finally:
        cache.close()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    sizes=st.tuples(*(st.integers(0, 6 * BS) for _ in KEYS)),
    script=st.lists(ops, max_size=40),
)
async def test_random_operations_match_the_model(sizes, script):
    initial = {
        k: random.Random(k * 1000 + n).randbytes(n) for k, n in zip(KEYS, sizes, strict=True)
    }
    directory = tempfile.mkdtemp(prefix="cache-model-")
    try:
        await run_ops(directory, initial, script)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
