"""Every Remote operation of AzureFilesRemote, through the real SDK, against the emulator."""

from __future__ import annotations

import os
import uuid

import pytest
import trio

from remote.base import (
    AlreadyExists,
    LeaseConflict,
    NotEmpty,
    NotFound,
    PermissionDenied,
    RemoteEntry,
)

MiB = 1024 * 1024
NS_2020 = 1_600_000_000_123_456_700  # a time with 100 ns precision (the service's tick)


def _names(entries: list[RemoteEntry]) -> set[str]:
    return {e.name for e in entries}


# ----------------------------------------------------------------------------- stat / list


async def test_stat_root_and_missing(remote):
    root = await remote.stat("")
    assert root.is_dir and root.name == ""
    assert root.etag and root.etag.startswith('"0x')
    with pytest.raises(NotFound):
        await remote.stat("nope")
    with pytest.raises(NotFound):
        await remote.stat("no/such/parent")


async def test_create_file_and_stat_with_metadata(remote, sdk_share):
    created = await remote.create_file(
        "a.bin", 1234, metadata={"mode": "0644", "uid": "1000"}, last_write_ns=NS_2020
    )
    assert not created.is_dir and created.size == 1234
    assert created.file_id and created.etag
    assert created.last_write_ns == NS_2020

    st = await remote.stat("a.bin")
    assert st.name == "a.bin" and not st.is_dir and st.size == 1234
    assert st.metadata == {"mode": "0644", "uid": "1000"}
    assert st.last_write_ns == NS_2020  # exact, 100 ns ticks kept
    assert st.file_id == created.file_id
    assert st.creation_ns and st.change_ns
    assert st.attributes
    # The independent SDK agrees.
    props = sdk_share.get_file_client("a.bin").get_file_properties()
    assert props.size == 1234 and props.metadata == {"mode": "0644", "uid": "1000"}


async def test_stat_directory_has_metadata(remote):
    made = await remote.mkdir("d", metadata={"mode": "0755"})
    assert made.is_dir and made.file_id
    st = await remote.stat("d")
    assert st.is_dir and st.name == "d"
    assert st.metadata == {"mode": "0755"}
    assert st.file_id == made.file_id
    assert "Directory" in (st.attributes or "")


async def test_list_dir_fields(remote):
    await remote.mkdir("top")
    await remote.mkdir("top/sub")
    await remote.create_file("top/f1", 10, last_write_ns=NS_2020)
    await remote.create_file("top/f2", 0)
    entries = await remote.list_dir("top")
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {"sub", "f1", "f2"}
    assert by_name["sub"].is_dir and not by_name["f1"].is_dir
    assert by_name["f1"].size == 10
    for e in entries:
        assert e.file_id, e
        assert e.etag and e.etag.startswith('"0x'), e
        assert e.last_write_ns and e.change_ns and e.creation_ns, e
        assert e.attributes, e
        assert e.metadata is None  # listings do not carry metadata
    assert by_name["f1"].last_write_ns == NS_2020
    st = await remote.stat("top/f1")
    assert by_name["f1"].file_id == st.file_id and by_name["f1"].etag == st.etag
    # root listing
    assert "top" in _names(await remote.list_dir(""))


async def test_list_dir_missing(remote):
    with pytest.raises(NotFound):
        await remote.list_dir("missing")


async def test_public_listing_fallback_agrees(remote):
    await remote.mkdir("p")
    await remote.create_file("p/x", 3, last_write_ns=NS_2020)
    await remote.mkdir("p/y")
    fast = sorted(await remote.list_dir("p"), key=lambda e: e.name)
    remote.use_public_listing = True
    slow = sorted(await remote.list_dir("p"), key=lambda e: e.name)
    assert [(e.name, e.is_dir, e.size, e.file_id, e.etag) for e in fast] == [
        (e.name, e.is_dir, e.size, e.file_id, e.etag) for e in slow
    ]
    # depending on the SDK version, the public API keeps 100 ns ticks or microseconds
    assert slow[0].last_write_ns in (NS_2020, NS_2020 // 1000 * 1000)


@pytest.mark.slow
async def test_list_more_than_5000_entries(remote, emulator):
    """The service pages at 5000; list_dir must follow NextMarker to the end."""
    await remote.mkdir("big")
    n = 5100
    limiter = trio.CapacityLimiter(16)

    async def make(i: int) -> None:
        async with limiter:
            if i % 50 == 0:
                await remote.mkdir(f"big/dir{i:05d}")
            else:
                await remote.create_file(f"big/f{i:05d}", i % 7)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(make, i)
    before = remote.stats["calls"].get("list_directory", 0)
    entries = await remote.list_dir("big")
    assert len(entries) == n
    assert len(_names(entries)) == n
    assert sum(e.is_dir for e in entries) == n // 50
    assert remote.stats["calls"]["list_directory"] - before >= 2  # really paged


# ----------------------------------------------------------------------------- read / write


async def test_write_read_roundtrip_multi_range(remote, sdk_share):
    size = 9 * MiB + 123  # > 2 Put Range calls of 4 MiB
    data = os.urandom(size)
    await remote.create_file("big.bin", size)
    before = remote.stats["calls"].get("upload_range", 0)
    etag = await remote.write("big.bin", 0, data)
    assert etag.startswith('"0x')
    assert remote.stats["calls"]["upload_range"] - before == 3
    assert (await remote.stat("big.bin")).etag == etag
    assert await remote.read("big.bin", 0, size) == data
    assert await remote.read("big.bin", 5 * MiB - 7, 1000) == data[5 * MiB - 7 : 5 * MiB + 993]
    # short read at the end, empty read past the end
    assert await remote.read("big.bin", size - 10, 100) == data[-10:]
    assert await remote.read("big.bin", size, 100) == b""
    assert await remote.read("big.bin", size + 5000, 100) == b""
    assert sdk_share.get_file_client("big.bin").download_file().readall() == data


async def test_read_is_one_get_request(remote, emulator):
    data = os.urandom(3 * MiB)
    await remote.create_file("one.bin", len(data))
    await remote.write("one.bin", 0, data)
    before = remote.stats["http_requests"]
    emu_before = emulator.stats()
    got = await remote.read("one.bin", MiB, 2 * MiB)
    emu_after = emulator.stats()
    assert got == data[MiB:]
    assert remote.stats["http_requests"] - before == 1
    assert emu_after["total"] - emu_before["total"] == 1


async def test_read_empty_file_and_missing(remote):
    await remote.create_file("empty", 0)
    assert await remote.read("empty", 0, 4096) == b""
    with pytest.raises(NotFound):
        await remote.read("missing", 0, 10)


async def test_public_read_fallback(remote):
    data = os.urandom(100_000)
    await remote.create_file("f", len(data))
    await remote.write("f", 0, data)
    remote.use_public_download = True
    assert await remote.read("f", 10, 5000) == data[10:5010]
    assert await remote.read("f", len(data), 10) == b""


async def test_write_at_offset_and_clear_range(remote):
    await remote.create_file("c.bin", 10_000)
    blob = bytes(range(256)) * 39  # 9984 bytes
    await remote.write("c.bin", 7, blob)
    expect = bytearray(10_000)
    expect[7 : 7 + len(blob)] = blob
    assert await remote.read("c.bin", 0, 10_000) == bytes(expect)
    # unaligned clear: head and tail zero-filled, aligned middle cleared
    etag = await remote.clear_range("c.bin", 100, 3000)
    expect[100:3100] = bytes(3000)
    assert etag == (await remote.stat("c.bin")).etag
    assert await remote.read("c.bin", 0, 10_000) == bytes(expect)
    # tiny clear inside one 512-byte block
    await remote.clear_range("c.bin", 5000, 10)
    expect[5000:5010] = bytes(10)
    assert await remote.read("c.bin", 0, 10_000) == bytes(expect)


async def test_resize(remote):
    await remote.create_file("r", 0)
    etag = await remote.resize("r", 5000)
    st = await remote.stat("r")
    assert st.size == 5000 and st.etag == etag
    await remote.write("r", 0, b"x" * 5000)
    await remote.resize("r", 10)
    assert (await remote.stat("r")).size == 10
    assert await remote.read("r", 0, 100) == b"x" * 10
    await remote.resize("r", 20)
    assert await remote.read("r", 0, 100) == b"x" * 10 + bytes(10)


async def test_resize_keeps_smb_properties_but_moves_last_write(remote):
    """The real service sets the last-write time to "now" when the length changes, even with
    x-ms-file-last-write-time: preserve (recording test_resize_file); creation time and
    attributes are kept. So the write-back must set mtime after a truncate, and that sticks."""
    await remote.create_file("keep", 10, last_write_ns=NS_2020)
    before = await remote.stat("keep")
    await remote.resize("keep", 3)
    after = await remote.stat("keep")
    assert after.size == 3
    assert after.last_write_ns != NS_2020
    assert after.creation_ns == before.creation_ns and after.attributes == before.attributes
    await remote.set_properties("keep", last_write_ns=NS_2020)
    assert (await remote.stat("keep")).last_write_ns == NS_2020


async def test_set_properties_file_and_dir(remote):
    await remote.create_file("p.txt", 5, metadata={"a": "1"})
    before = await remote.stat("p.txt")
    etag = await remote.set_properties("p.txt", last_write_ns=NS_2020)
    st = await remote.stat("p.txt")
    assert st.last_write_ns == NS_2020 and st.etag == etag
    assert st.metadata == {"a": "1"}  # untouched
    assert st.creation_ns == before.creation_ns and st.attributes == before.attributes
    etag = await remote.set_properties("p.txt", metadata={"b": "2"})
    st = await remote.stat("p.txt")
    assert st.metadata == {"b": "2"} and st.last_write_ns == NS_2020 and st.etag == etag

    await remote.mkdir("dd")
    dbefore = await remote.stat("dd")
    await remote.set_properties("dd", last_write_ns=NS_2020 + 100, metadata={"mode": "0700"})
    dst = await remote.stat("dd")
    assert dst.last_write_ns == NS_2020 + 100 and dst.metadata == {"mode": "0700"}
    assert dst.creation_ns == dbefore.creation_ns and dst.attributes == dbefore.attributes
    # root directory
    await remote.set_properties("", metadata={"root": "yes"})
    assert (await remote.stat("")).metadata == {"root": "yes"}
    with pytest.raises(NotFound):
        await remote.set_properties("ghost", metadata={"x": "y"})


async def test_delete_file(remote):
    await remote.create_file("gone", 1)
    await remote.delete_file("gone")
    with pytest.raises(NotFound):
        await remote.stat("gone")
    with pytest.raises(NotFound):
        await remote.delete_file("gone")


async def test_create_file_replaces(remote):
    await remote.create_file("rep", 100)
    await remote.write("rep", 0, b"y" * 100)
    await remote.create_file("rep", 3)
    assert await remote.read("rep", 0, 100) == bytes(3)


# ----------------------------------------------------------------------------- directories


async def test_mkdir_rmdir(remote):
    await remote.mkdir("m")
    with pytest.raises(AlreadyExists):
        await remote.mkdir("m")
    with pytest.raises(NotFound):
        await remote.mkdir("no/parent")
    await remote.create_file("m/f", 0)
    with pytest.raises(NotEmpty):
        await remote.rmdir("m")
    await remote.delete_file("m/f")
    await remote.rmdir("m")
    with pytest.raises(NotFound):
        await remote.stat("m")
    with pytest.raises(NotFound):
        await remote.rmdir("m")


# ----------------------------------------------------------------------------- rename


async def test_rename_file(remote):
    await remote.create_file("src.txt", 4)
    await remote.write("src.txt", 0, b"abcd")
    fid = (await remote.stat("src.txt")).file_id
    await remote.mkdir("into")
    await remote.rename("src.txt", "into/dst.txt")
    with pytest.raises(NotFound):
        await remote.stat("src.txt")
    st = await remote.stat("into/dst.txt")
    assert await remote.read("into/dst.txt", 0, 10) == b"abcd"
    assert st.file_id == fid  # x-ms-file-id survives renames


async def test_rename_file_replace_flag(remote):
    await remote.create_file("one", 1)
    await remote.write("one", 0, b"1")
    await remote.create_file("two", 1)
    await remote.write("two", 0, b"2")
    with pytest.raises(AlreadyExists):
        await remote.rename("one", "two")
    assert await remote.read("two", 0, 1) == b"2"
    await remote.rename("one", "two", replace=True)
    assert await remote.read("two", 0, 1) == b"1"
    with pytest.raises(NotFound):
        await remote.stat("one")
    with pytest.raises(NotFound):
        await remote.rename("one", "three")


async def test_rename_directory_with_contents(remote):
    await remote.mkdir("olddir")
    await remote.mkdir("olddir/inner")
    await remote.create_file("olddir/inner/f", 2)
    fid = (await remote.stat("olddir")).file_id
    await remote.rename("olddir", "newdir")
    with pytest.raises(NotFound):
        await remote.stat("olddir")
    st = await remote.stat("newdir")
    assert st.is_dir and st.file_id == fid
    assert (await remote.stat("newdir/inner/f")).size == 2
    await remote.mkdir("taken")
    await remote.mkdir("other")
    with pytest.raises(AlreadyExists):
        await remote.rename("other", "taken")


# ----------------------------------------------------------------------------- leases


async def test_leases(remote):
    await remote.create_file("leased", 10)
    lid = str(uuid.uuid4())
    assert await remote.acquire_lease("leased", lid) == lid
    # writes and deletes without the lease fail; with it they work
    with pytest.raises(LeaseConflict):
        await remote.write("leased", 0, b"no")
    with pytest.raises(LeaseConflict):
        await remote.delete_file("leased")
    await remote.write("leased", 0, b"ok", lease_id=lid)
    with pytest.raises(LeaseConflict):
        await remote.write("leased", 0, b"no", lease_id=str(uuid.uuid4()))
    # someone else cannot take it
    with pytest.raises(LeaseConflict):
        await remote.acquire_lease("leased", str(uuid.uuid4()))
    await remote.release_lease("leased", lid)
    await remote.write("leased", 0, b"free")
    # break: a lease we lost track of
    lid2 = str(uuid.uuid4())
    await remote.acquire_lease("leased", lid2)
    await remote.break_lease("leased")
    await remote.write("leased", 0, b"brk")
    assert await remote.read("leased", 0, 3) == b"brk"
    await remote.delete_file("leased")


async def test_set_properties_under_lease(remote):
    await remote.create_file("lp", 1)
    lid = str(uuid.uuid4())
    await remote.acquire_lease("lp", lid)
    with pytest.raises(LeaseConflict):
        await remote.set_properties("lp", last_write_ns=NS_2020)
    await remote.resize("lp", 100, lease_id=lid)
    await remote.clear_range("lp", 0, 1, lease_id=lid)
    await remote.set_properties("lp", last_write_ns=NS_2020, metadata={"k": "v"}, lease_id=lid)
    st = await remote.stat("lp")
    assert st.size == 100 and st.last_write_ns == NS_2020 and st.metadata == {"k": "v"}
    await remote.delete_file("lp", lease_id=lid)


# ----------------------------------------------------------------------------- the share


async def test_usage(remote):
    u0 = await remote.usage()
    assert u0.quota_bytes > 0
    await remote.create_file("u.bin", 2 * MiB)
    await remote.write("u.bin", 0, os.urandom(2 * MiB))
    u1 = await remote.usage()
    assert u1.quota_bytes == u0.quota_bytes
    assert u1.used_bytes >= u0.used_bytes


async def test_snapshots(remote):
    await remote.create_file("s.txt", 5)
    await remote.write("s.txt", 0, b"old!!")
    await remote.mkdir("sd")
    snap = await remote.create_snapshot(metadata={"why": "test"})
    assert snap.snapshot.endswith("Z")
    # change the live share
    await remote.write("s.txt", 0, b"new!!")
    await remote.create_file("later", 1)
    await remote.rmdir("sd")

    view = remote.at_snapshot(snap.snapshot)
    assert view.read_only
    assert await view.read("s.txt", 0, 5) == b"old!!"
    assert _names(await view.list_dir("")) == {"s.txt", "sd"}
    assert (await view.stat("sd")).is_dir
    with pytest.raises(NotFound):
        await view.stat("later")
    assert await remote.read("s.txt", 0, 5) == b"new!!"
    # every mutation is refused locally
    for call in (
        view.create_file("x", 0),
        view.write("s.txt", 0, b"zz"),
        view.clear_range("s.txt", 0, 1),
        view.resize("s.txt", 1),
        view.set_properties("s.txt", metadata={}),
        view.delete_file("s.txt"),
        view.mkdir("y"),
        view.rmdir("sd"),
        view.rename("s.txt", "t.txt"),
        view.acquire_lease("s.txt", str(uuid.uuid4())),
        view.release_lease("s.txt", str(uuid.uuid4())),
        view.break_lease("s.txt"),
        view.create_snapshot(),
    ):
        with pytest.raises(PermissionDenied):
            await call
    await view.aclose()  # a view's aclose leaves the share's session open
    assert await remote.read("s.txt", 0, 5) == b"new!!"

    snaps = await remote.list_snapshots()
    assert [s.snapshot for s in snaps] == [snap.snapshot]
    assert snaps[0].metadata == {"why": "test"}
    await remote.delete_snapshot(snap.snapshot)
    assert await remote.list_snapshots() == []
    with pytest.raises(NotFound):
        await remote.delete_snapshot(snap.snapshot)


async def test_snapshot_mutation_refused_by_service(emulator, share_name, remote):
    """Even bypassing the read-only guard, the service refuses writes to a snapshot."""
    await remote.create_file("z", 1)
    snap = await remote.create_snapshot()
    view = remote.at_snapshot(snap.snapshot)
    view.read_only = False
    with pytest.raises(PermissionDenied):
        await view.write("z", 0, b"q")
    await remote.delete_snapshot(snap.snapshot)


async def test_stats_counters(remote):
    s0 = remote.stats
    await remote.create_file("st", 0)
    await remote.stat("st")
    with pytest.raises(NotFound):
        await remote.stat("st-missing")
    s1 = remote.stats
    assert s1["calls"]["create_file"] == s0["calls"].get("create_file", 0) + 1
    assert s1["calls"]["get_file_properties"] >= s0["calls"].get("get_file_properties", 0) + 2
    assert s1["errors"].get("NotFound", 0) >= s0["errors"].get("NotFound", 0) + 1
    assert s1["http_requests"] > s0["http_requests"]


async def test_aclose_twice(emulator, share_name):
    from remote.credentials import open_remote
    from tests.remote.conftest import FAST

    r = await open_remote(emulator.share_url(share_name), options=FAST, env={})
    await r.aclose()
    await r.aclose()


async def test_parallel_reads_use_the_pool(remote, caplog):
    """32 concurrent ranged reads (limiter 16): right bytes, and urllib3 never has to throw
    connections away because the pool is smaller than the parallelism."""
    data = os.urandom(4 * MiB)
    await remote.create_file("par.bin", len(data))
    await remote.write("par.bin", 0, data)
    results: dict[int, bytes] = {}
    caplog.set_level("WARNING", logger="urllib3")

    async def one(i: int) -> None:
        results[i] = await remote.read("par.bin", i * 128 * 1024, 128 * 1024)

    async with trio.open_nursery() as nursery:
        for i in range(32):
            nursery.start_soon(one, i)
    assert all(results[i] == data[i * 131072 : (i + 1) * 131072] for i in range(32))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


async def test_copy_from_snapshot_restores_content_metadata_and_times(remote):
    await remote.create_file("r.txt", 5, metadata={"fsyncmode": "600"})
    await remote.write("r.txt", 0, b"older")
    before = await remote.stat("r.txt")
    snap = await remote.create_snapshot()
    await remote.resize("r.txt", 9)
    await remote.write("r.txt", 0, b"newer!!!!")
    await remote.set_properties("r.txt", metadata={"fsyncmode": "644"})
    await remote.copy_from_snapshot(snap.snapshot, "r.txt", "r.txt")
    after = await remote.stat("r.txt")
    assert await remote.read("r.txt", 0, 100) == b"older"
    assert after.metadata == {"fsyncmode": "600"}
    assert after.last_write_ns == before.last_write_ns
    # into another name, and again (a resent copy does the same)
    for _ in range(2):
        await remote.copy_from_snapshot(snap.snapshot, "r.txt", "elsewhere.txt")
    assert await remote.read("elsewhere.txt", 0, 100) == b"older"
    with pytest.raises(NotFound):
        await remote.copy_from_snapshot(snap.snapshot, "not-there.txt", "x.txt")
