"""Heat (cache/heat.py): the formula, eviction by heat rather than by last access, its
persistence across a reopen, the migration of a cache written before it existed, and the
lazy heap that keeps files in order without touching it on every access."""

from __future__ import annotations

import struct

import lmdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import ACCESS_GAP, HALF_LIFE, CacheMismatch
from cache.heat import Order
from cache.index import FileRecord
from tests.cache.conftest import KiB, put, read_all

BS = 64 * KiB
DAY = 86400.0


async def test_heat_halves_every_half_life_and_close_accesses_count_as_their_share(
    open_cache, remote, clock
):
    c = open_cache(clock=clock)
    put(c, remote, 1, BS)
    assert c.heat(1) == 0.0 and c.last_access(1) is None
    await read_all(c, remote, 1, BS)  # a miss
    assert c.heat(1) == 1.0 and c.last_access(1) == clock.now
    clock.advance(HALF_LIFE)
    assert c.heat(1) == pytest.approx(0.5)
    clock.advance(ACCESS_GAP / 4)
    await read_all(c, remote, 1, BS)  # a hit, long after the last access: one more use
    decay = 2 ** (-ACCESS_GAP / 4 / HALF_LIFE)
    assert c.heat(1) == pytest.approx(0.5 * decay + 1)
    clock.advance(ACCESS_GAP / 4)
    await read_all(c, remote, 1, BS)  # a quarter of ACCESS_GAP later: a quarter of one
    assert c.heat(1) == pytest.approx((0.5 * decay + 1) * decay + 0.25)
    await c.write(1, 0, b"w", fetch=remote.fetch(1))  # at the same moment: adds nothing
    assert c.heat(1) == pytest.approx((0.5 * decay + 1) * decay + 0.25)
    last = clock.now
    clock.advance(0.5)  # within a second: counted with the next access
    await c.read(1, 0, 10, size=BS, fetch=remote.fetch(1))
    assert c.last_access(1) == last
    clock.advance(ACCESS_GAP)
    await c.prefetch(1, 0, BS, size=BS, fetch=remote.fetch(1))  # read-ahead is an access too
    assert c.last_access(1) == clock.now
    assert c.heat(1) > 2.5


async def test_a_file_read_daily_outranks_one_read_once_this_morning(open_cache, remote, clock):
    """Plain LRU evicts the daily file (its last read was yesterday); heat keeps it. File 1
    is read every morning for a week until yesterday, file 2 once this morning; in the
    afternoon file 3 needs room."""
    c = open_cache(clock=clock, max_bytes=8 * BS)
    for key in (1, 2, 3):
        put(c, remote, key, 4 * BS if key < 3 else BS)
    for _day in range(7):
        await read_all(c, remote, 1, 4 * BS)
        clock.advance(DAY)
    await read_all(c, remote, 2, 4 * BS)
    clock.advance(8 * 3600)
    assert c.last_access(1) < c.last_access(2)
    assert c.heat(1) > 2 * c.heat(2)
    await read_all(c, remote, 3, BS)  # needs room: the coldest file gives it
    assert c.cached_bytes(1) == 4 * BS
    assert 0 < c.cached_bytes(2) < 4 * BS
    assert [t.key for t in c.next_to_tier(5)] == [2, 3, 1]
    size = c.stats().evicted_by["size"]
    assert size.blocks == 4 - c.cached_bytes(2) // BS and size.bytes == 4 * BS - c.cached_bytes(2)
    # Old use fades: a week later a file read once is hotter than the daily one.
    clock.advance(7 * DAY)
    await read_all(c, remote, 2, 4 * BS)
    assert c.heat(2) > c.heat(1)
    assert c.next_to_tier(1)[0].key == 1


async def test_heat_and_last_access_survive_a_reopen(open_cache, remote, clock):
    """Heat lives in memory (a hit writes no index) and reaches the file record with the
    next commit; after a reopen it is the same and orders eviction the same."""
    c = open_cache(clock=clock)
    for key in (1, 2, 3):
        put(c, remote, key, BS)
    for key, reads in ((1, 1), (2, 3), (3, 2)):
        for _ in range(reads):
            clock.advance(ACCESS_GAP)
            await read_all(c, remote, key, BS)
    assert [t.key for t in c.next_to_tier(3)] == [1, 3, 2]
    c.commit()
    txn_before = c.env.info()["last_txnid"]
    clock.advance(ACCESS_GAP)
    await read_all(c, remote, 3, BS)  # a hit: heat changes in memory only
    assert c.env.info()["last_txnid"] == txn_before
    assert [t.key for t in c.next_to_tier(3)] == [1, 2, 3]
    before = {k: (c.heat(k), c.last_access(k)) for k in (1, 2, 3)}
    c.close()
    c = open_cache(clock=clock)
    assert {k: (c.heat(k), c.last_access(k)) for k in (1, 2, 3)} == before
    assert [t.key for t in c.next_to_tier(3)] == [1, 2, 3]
    assert c.evict(BS) == BS and c.cached_bytes(1) == 0
    assert c.cached_bytes(2) == c.cached_bytes(3) == BS


#: what schema 1 stored per file (data_id, remote_valid, length, used, dirty, atime, flags)
V1_FILE = struct.Struct("<QQQQQdB")


def downgrade_to_schema_1(directory, *, crashed: bool) -> None:
    """Rewrite a closed cache's index as the previous version left it."""
    env = lmdb.open(str(directory / "index.lmdb"), max_dbs=64, subdir=True)
    try:
        files = env.open_db(b"cache.files")
        meta = env.open_db(b"cache.meta")
        with env.begin(write=True) as txn:
            for k, v in list(txn.cursor(db=files)):
                r = FileRecord.unpack(bytes(v))
                old = (r.data_id, r.remote_valid, r.length, r.used, r.dirty, r.atime, r.pinned)
                txn.put(k, V1_FILE.pack(*old), db=files)
            txn.put(b"schema", b"1", db=meta)
            if crashed:
                txn.put(b"clean", b"0", db=meta)
    finally:
        env.close()


@pytest.mark.parametrize("crashed", [False, True])
async def test_a_cache_written_before_heat_is_migrated(open_cache, remote, clock, crashed):
    """Records without heat get heat 1 at their last access (the old least-recently-used
    order holds until files are used again), pins keep holding, nothing is fetched again;
    after a crash the reconcile runs on the migrated records."""
    c = open_cache(clock=clock)
    for key in (1, 2, 3, 4):
        put(c, remote, key, 2 * BS)
    atimes = {}
    for key in (3, 1, 4, 2):  # 3 is the least recently used
        clock.advance(60)
        await read_all(c, remote, key, 2 * BS)
        atimes[key] = clock.now
    c.pin(4, 2 * BS)
    directory = c.directory
    c.close()
    downgrade_to_schema_1(directory, crashed=crashed)
    fetched = len(remote.calls)
    clock.advance(DAY)
    c = open_cache(clock=clock)
    with c.env.begin(db=c.env.open_db(b"cache.meta")) as txn:
        assert txn.get(b"schema") == b"2"
    for key in (1, 2, 3, 4):
        assert c.last_access(key) == atimes[key]
        assert c.heat(key) == pytest.approx(2 ** (-(clock.now - atimes[key]) / HALF_LIFE))
        await read_all(c, remote, key, 2 * BS)
    assert len(remote.calls) == fetched  # every block still cached
    assert c.state(4, 2 * BS).pinned and c.pinned_bytes() == 2 * BS
    clock.advance(60)
    assert [t.key for t in c.next_to_tier(3)] == [3, 1, 2]
    c.close()
    c = open_cache(clock=clock)  # the migrated records were written in the new layout
    assert [t.key for t in c.next_to_tier(3)] == [3, 1, 2]


async def test_an_unknown_schema_is_refused(open_cache):
    c = open_cache()
    directory = c.directory
    c.close()
    env = lmdb.open(str(directory / "index.lmdb"), max_dbs=64, subdir=True)
    with env.begin(write=True, db=env.open_db(b"cache.meta")) as txn:
        txn.put(b"schema", b"3")
    env.close()
    with pytest.raises(CacheMismatch, match="schema version 3"):
        open_cache()


class Item:
    """A file as Order sees it: a key that only grows (here its last access), and whether
    it may be taken."""

    def __init__(self, i: int) -> None:
        self.heat = 1.0
        self.atime = i / 100  # keys never tie: each item keeps its own fraction
        self.usable = True


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "grow", "take", "discard", "flip"]),
        st.integers(0, 9),
        st.integers(0, 20),
    ),
    max_size=120,
)


@given(ops)
def test_order_takes_the_member_with_the_smallest_current_key(script):
    """Against a brute-force model: whatever the accesses (keys grown while in the heap),
    `take` returns the usable member with the smallest key below the bound, and the
    unusable ones it passes on the way leave."""
    items = [Item(i) for i in range(10)]
    order: Order[Item] = Order(lambda it: it.atime)
    members: set[Item] = set()
    for op, i, x in script:
        it = items[i]
        if op == "add":
            order.add(it)
            members.add(it)
        elif op == "grow":
            it.atime += x
        elif op == "discard":
            order.discard(it)
            members.discard(it)
        elif op == "flip":
            it.usable = not it.usable
        else:
            below = x if x < 20 else float("inf")
            got = order.take(lambda it: it.usable, below=below)
            candidates = [m for m in members if m.usable and m.atime < below]
            want = min(candidates, key=lambda m: m.atime) if candidates else None
            assert got is want
            limit = want.atime if want is not None else below
            members -= {m for m in members if m.atime < limit and not m.usable}
            members.discard(want)
        assert len(order) == len(members)
        assert all(m in order for m in members)


def test_order_stays_small_under_churn():
    """Entries of files that left or were pushed again are dropped in bulk, so the heap stays
    within twice its members (plus a constant) however many accesses and re-adds it saw."""
    items = [Item(i) for i in range(10)]
    order: Order[Item] = Order(lambda it: it.atime)
    for round_ in range(5000):
        it = items[round_ % 10]
        order.discard(it)
        it.atime += 1
        order.add(it)
        assert len(order._heap) <= 2 * 10 + 1025
    taken = [order.take(lambda it: True) for _ in range(11)]
    assert taken == [*sorted(items, key=lambda it: it.atime), None]
