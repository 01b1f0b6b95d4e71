"""The pure rules behind snapshots: GMT names (unique within a second) and --keep pruning."""

from __future__ import annotations

from fsync_fuse import snapnames
from fsync_fuse.snapadmin import Keep, to_prune
from fsync_fuse.snaptree import snapshot_ns


def test_gmt_names_are_unique_and_resolve_both_ways():
    ids = [
        "2026-12-06T13:45:00.0000000Z",
        "2026-12-06T13:45:00.5000000Z",
        "2026-12-06T13:45:00.2500000Z",
        "2026-12-07T01:02:03.0000000Z",
        "garbage",
    ]
    names = snapnames.names(ids)
    assert names == {
        "@GMT-2026.12.06-13.45.00": ids[0],
        "@GMT-2026.12.06-13.45.00~2": ids[2],
        "@GMT-2026.12.06-13.45.00~3": ids[1],
        "@GMT-2026.12.07-01.02.03": ids[3],
    }
    assert all(snapnames.is_token(n) for n in names)
    assert snapnames.resolve("@GMT-2026.12.06-13.45.00~2", ids) == ids[2]
    assert snapnames.resolve(ids[3], ids) == ids[3]
    assert snapnames.resolve("@GMT-2020.01.01-00.00.00", ids) is None
    assert snapshot_ns(ids[1]) - snapshot_ns(ids[0]) == 500_000_000


def _ids(*stamps: str) -> list[str]:
    return [f"2026-12-{s}.0000000Z" for s in stamps]


def test_keep_last_n():
    ids = _ids("01T10:00:00", "02T10:00:00", "03T10:00:00", "04T10:00:00")
    assert to_prune(ids, Keep(last=2)) == ids[:2]
    assert to_prune(ids, Keep(last=10)) == []


def test_keep_daily_and_hourly_keep_the_newest_of_each_period():
    ids = _ids(
        "01T10:00:00",
        "01T23:00:00",  # day 1: the 23:00 one is its newest
        "02T08:00:00",
        "02T08:30:00",
        "02T09:15:00",
        "03T00:05:00",
    )
    assert to_prune(ids, Keep(daily=2)) == ids[:4]  # days 3 and 2 (newest of each)
    assert to_prune(ids, Keep(daily=3)) == [ids[0], ids[2], ids[3]]
    # hourly: 03T00, 02T09, 02T08 (its 08:30) -> the rest go
    assert to_prune(ids, Keep(hourly=3)) == [ids[0], ids[1], ids[2]]
    # rules add up
    assert to_prune(ids, Keep(last=1, daily=3)) == [ids[0], ids[2], ids[3]]
    assert to_prune(ids, Keep()) == ids


def test_the_snapshot_just_made_counts_first_whatever_its_id():
    # the service gave the new snapshot the id of one deleted earlier in the same second
    ids = _ids("01T10:00:00", "01T10:00:05", "01T10:00:07")
    new = "2026-12-01T10:00:00.0000000Z"
    assert to_prune([*ids[1:], new], Keep(last=2), newest=new) == [ids[1]]
    assert to_prune(ids[1:], Keep(last=1), newest=new) == ids[1:]
    assert to_prune(ids, Keep(hourly=1), newest=new) == ids[1:]
