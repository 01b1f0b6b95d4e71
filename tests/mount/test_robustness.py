"""Failures that must not kill the mount, lose queued work or leave it stuck, against the real
filesystem objects over the emulator."""

from __future__ import annotations

import base64
import json
import os
import time

import pyfuse3
import pytest
import trio

from cache import BlockCache
from remote.azure import AzureOptions
from remote.base import RemoteError
from tests.mount.helpers import Share
from tests.mount.inproc import CTX, attrs, fields, filesystem

ROOT = pyfuse3.ROOT_INODE
NO_RETRY = AzureOptions(retry_total=0, connect_timeout=2.0, read_timeout=5.0)


@pytest.fixture
def share(emulator, share_name) -> Share:
    return Share(emulator.connection_string, share_name)


async def wait_for(pred, timeout: float = 30.0, what: str = "condition") -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.05)
    assert pred(), f"{what} not reached within {timeout}s"


async def new_file(fs, parent: int, name: bytes, data: bytes) -> int:
    fi, entry = await fs.create(parent, name, 0o644, os.O_WRONLY, CTX)
    await fs.write(fi.fh, 0, data)
    await fs.release(fi.fh)
    return entry.st_ino


async def drained(fs, timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        await fs.writeback.drain()


async def test_failed_stats_in_a_listing_are_remote_errors(emulator, share_name, share, tmp_path):
    """A listing whose `stat`s fail serves the cached listing (no ExceptionGroup to
    lookups), and background refreshes failing that way leave the mount running."""
    for i in range(30):
        await trio.to_thread.run_sync(share.put, f"d/f{i}", b"v1")
    async with filesystem(emulator.share_url(share_name), tmp_path / "c", options=NO_RETRY) as fs:
        d = (await fs.lookup(ROOT, b"d", CTX)).st_ino
        await fs.lister.ensure(d, refresh_stale=True)
        for i in range(30):  # new ETags: the next listing must stat every entry again
            await trio.to_thread.run_sync(share.put, f"d/f{i}", b"version 2")
        fs.lister.ttl_ns = 0  # always stale
        emulator.set_faults(error_rate=0.5, error_status=503)
        try:
            for _ in range(20):
                # a cached listing exists: a failed refresh (list or stat) is served from it
                await fs.lister.ensure(d, refresh_stale=True)
                entry = await fs.lookup(d, b"f3", CTX)
                assert entry.st_ino
                fs.lister.refresh_later(d)
                await wait_for(lambda: d not in fs.lister._rounds, what="background listing")
            with pytest.raises(RemoteError):  # the helper's error, not an ExceptionGroup
                for _ in range(20):
                    entries = await fs.remote.list_dir("d")
                    await fs.lister._stat_all("d", entries)
        finally:
            emulator.clear_faults()
        # the mount's nursery survived every background failure (else leaving raises)


async def test_failed_put_range_backs_off_and_reports(emulator, share_name, share, tmp_path):
    """A Put Range failing inside the upload's nursery is a remote failure (status
    shows why, backoff applies), not an 'unexpected' error with a fixed retry."""
    async with filesystem(
        emulator.share_url(share_name), tmp_path / "c", options=NO_RETRY, delay=0.1
    ) as fs:
        ino = await new_file(fs, ROOT, b"f", b"A" * 100_000)
        await drained(fs)
        emulator.set_faults(outage_seconds=600)
        try:
            fh = (await fs.open(ino, os.O_WRONLY, CTX)).fh
            await fs.write(fh, 0, b"B" * 1000)  # same size: the upload's first call is a PUT
            await fs.release(fh)
            await wait_for(
                lambda: fs.writeback.uploader.last_error is not None, what="upload error in status"
            )
            assert "unreachable" in fs.writeback.uploader.last_error
            pending = json.loads(await fs.getxattr(ROOT, b"user.fsync.pending", CTX))
            assert pending["error"] and pending["files"] == 1
        finally:
            emulator.clear_faults()
        fs.dirty.due[ino] = 0.0  # retry now rather than after the backoff
        fs.dirty.poke()
        await drained(fs)
    got = await trio.to_thread.run_sync(share.get, "f")
    assert got == b"B" * 1000 + b"A" * 99_000


async def test_refused_ops_are_retried_not_dropped(fresh_emulator, tmp_path):
    """While the share refuses us (the account key changed: 403), queued operations
    stay queued with the error in status; nothing is dropped or recorded as present; once
    the credentials work again everything reaches the share."""
    from azure.storage.fileshare import ShareServiceClient

    emu = fresh_emulator
    ShareServiceClient.from_connection_string(emu.connection_string).create_share("robust")
    key = emu.key
    async with filesystem(
        emu.share_url("robust"), tmp_path / "c", options=NO_RETRY, delay=0.1
    ) as fs:
        await fs.lister.ensure(ROOT, refresh_stale=True)
        await trio.to_thread.run_sync(emu.stop)
        emu.key = base64.b64encode(os.urandom(64)).decode()  # our key no longer works
        await trio.to_thread.run_sync(emu.start)
        try:
            d = (await fs.mkdir(ROOT, b"dir", 0o755, CTX)).st_ino
            f = await new_file(fs, d, b"f", b"payload" * 1000)
            await wait_for(lambda: fs.writeback.status().error is not None, what="error in status")
            st = json.loads(await fs.getxattr(ROOT, b"user.fsync.pending", CTX))
            assert "refused" in st["error"]
            assert st["ops"] == 2  # mkdir and create: both still queued
            assert fs.ns.get(d).remote_size is None and fs.ns.get(f).remote_size is None
        finally:
            await trio.to_thread.run_sync(emu.stop)
            emu.key = key
            await trio.to_thread.run_sync(emu.start)
        await drained(fs, timeout=120)
        assert fs.writeback.status().error is None
    share = Share(emu.connection_string, "robust")
    assert await trio.to_thread.run_sync(share.get, "dir/f") == b"payload" * 1000


async def test_truncate_persists_low_mark_before_cache_drops_data(emulator, share_name, tmp_path):
    """When the cache destroys the data above a truncate, the low-water mark that makes
    the share drop it too is already durable."""
    async with filesystem(emulator.share_url(share_name), tmp_path / "c", delay=0.1) as fs:
        ino = await new_file(fs, ROOT, b"t", b"x" * 300_000)
        await drained(fs)
        seen: list = []
        real = fs.cache.truncate

        def observed(key: int, size: int) -> None:
            with fs.ns.env.begin(db=fs.dirty.db) as txn:  # what a crash right now leaves
                raw = txn.get(key.to_bytes(8, "big"))
            seen.append(json.loads(raw)["low"] if raw else None)
            real(key, size)

        fs.cache.truncate = observed
        try:
            await fs.setattr(ino, attrs(st_size=10), fields(size=True), None, CTX)
        finally:
            fs.cache.truncate = real
        assert seen == [10]
        await drained(fs)


async def test_dirty_blocks_beyond_size_after_crash(emulator, share_name, share, tmp_path):
    """The cache committed writes the namespace never recorded the size of (a SIGKILL
    between the cache's commit and the namespace's flush): start-up cuts them off, so the
    file uploads once and the queue drains instead of re-uploading it forever."""
    url, cdir = emulator.share_url(share_name), tmp_path / "c"
    async with filesystem(url, cdir, delay=0.1) as fs:
        ino = await new_file(fs, ROOT, b"g", b"y" * 1000)
        await drained(fs)
    # the crashed run: the cache holds (and committed) a write above the recorded size
    cache = BlockCache.open(cdir, max_bytes=64 << 20, share_id="inproc", block_size=1 << 20)
    try:

        async def no_fetch(*_a, **_k):
            raise AssertionError("nothing to fetch beyond the share's size")

        await cache.write(ino, 2 << 20, b"z" * 5000, fetch=no_fetch)
        cache.commit()
    finally:
        cache.close()
    async with filesystem(url, cdir, delay=0.1) as fs:
        assert fs.ns.get(ino).size == 1000
        await drained(fs, timeout=30)
        assert ino not in fs.cache.dirty_keys()
    assert await trio.to_thread.run_sync(share.get, "g") == b"y" * 1000


async def test_drain_request_ends(emulator, share_name, tmp_path):
    """`user.fsync.control=drain` runs in the mount's nursery with a deadline pushed
    by whoever polls `user.fsync.pending`; when nobody does (unmount gave up), drain mode
    ends and writes get their quiet delay again."""
    async with filesystem(
        emulator.share_url(share_name), tmp_path / "c", options=NO_RETRY, delay=0.1
    ) as fs:
        ino = await new_file(fs, ROOT, b"h", b"a" * 1000)
        await drained(fs)
        fs.control.drain_grace = 1.0
        emulator.set_faults(outage_seconds=600)
        try:
            fh = (await fs.open(ino, os.O_WRONLY, CTX)).fh
            await fs.write(fh, 0, b"b")
            await fs.release(fh)
            await fs.setxattr(ROOT, b"user.fsync.control", b"drain", CTX)
            await fs.setxattr(ROOT, b"user.fsync.control", b"drain", CTX)  # replaces the first
            await wait_for(lambda: fs.writeback.pacing.draining, what="drain mode")
            await trio.sleep(0.1)
            assert fs.writeback.pacing._drains == 1  # the replaced request no longer counts
            await wait_for(lambda: not fs.writeback.pacing.draining, what="end of drain mode")
        finally:
            emulator.clear_faults()
        fs.dirty.due[ino] = 0.0
        fs.dirty.poke()
        await drained(fs)


async def test_writes_do_not_wake_the_scheduler(emulator, share_name, share, tmp_path):
    """With many files waiting, a write that only pushes its file's deadline back costs
    no scheduler round (it used to wake it and scan every queued file)."""
    async with filesystem(emulator.share_url(share_name), tmp_path / "c", delay=3600) as fs:
        for i in range(50):
            await new_file(fs, ROOT, f"q{i}".encode(), b"q")
        fi, entry = await fs.create(ROOT, b"hot", 0o644, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"0")
        await trio.sleep(0.1)
        rounds = fs.writeback.uploader.scheduler_rounds
        for i in range(500):
            await fs.write(fi.fh, i, b"x")
            await trio.sleep(0)  # let the scheduler run if it was woken
        assert fs.writeback.uploader.scheduler_rounds - rounds < 10
        await fs.release(fi.fh)
        # deadlines still work: an earlier one wakes it, and everything uploads
        await drained(fs)
    assert await trio.to_thread.run_sync(share.get, "hot") == b"x" * 500
    assert await trio.to_thread.run_sync(share.get, "q7") == b"q"


@pytest.mark.mount
def test_listed_tree_stays_usable_during_an_outage(mounter, fresh_emulator):
    """While the share is unreachable, `ls` of listed directories, `stat`s, reads of
    cached files and a create in a listed directory answer from the cache without waiting
    the remote's retry budget (~20-95 s); the new file reaches the share once it is back."""
    from azure.storage.fileshare import ShareServiceClient

    emu = fresh_emulator
    ShareServiceClient.from_connection_string(emu.connection_string).create_share("s23")
    share = Share(emu.connection_string, "s23")
    share.put("top.txt", b"top")
    share.put("a/x.txt", b"x" * 5000)
    share.put("a/b/y.txt", b"y" * 7000)
    m = mounter(
        emu.share_url("s23"),
        args=["--attr-timeout", "1", "--dir-cache-time", "1", "--writeback-delay", "0.2"],
    )
    mnt = m.mnt
    assert sorted(os.listdir(mnt)) == ["a", "top.txt"]
    assert sorted(os.listdir(mnt / "a")) == ["b", "x.txt"]
    assert os.listdir(mnt / "a/b") == ["y.txt"]
    assert (mnt / "a/x.txt").read_bytes() == b"x" * 5000
    assert (mnt / "a/b/y.txt").read_bytes() == b"y" * 7000
    time.sleep(1.5)  # every listing is stale now: opendir would refresh first

    emu.set_faults(outage_seconds=60)
    try:

        def quick(what, op):
            t0 = time.monotonic()
            got = op()
            took = time.monotonic() - t0
            assert took < 10, f"{what} took {took:.1f}s during the outage"
            return got

        for _ in range(2):  # the first round meets the outage, the second knows about it
            assert sorted(quick("ls /", lambda: os.listdir(mnt))) == ["a", "top.txt"]
            assert sorted(quick("ls a", lambda: os.listdir(mnt / "a"))) == ["b", "x.txt"]
            assert quick("ls a/b", lambda: os.listdir(mnt / "a/b")) == ["y.txt"]
            assert quick("stat", lambda: os.stat(mnt / "a/x.txt")).st_size == 5000
            assert quick("read", lambda: (mnt / "a/b/y.txt").read_bytes()) == b"y" * 7000
        quick("create", lambda: (mnt / "a/b/new.txt").write_bytes(b"made offline"))
        quick("create at the root", lambda: (mnt / "root-new.txt").write_bytes(b"r"))
        assert sorted(quick("ls a/b", lambda: os.listdir(mnt / "a/b"))) == ["new.txt", "y.txt"]
    finally:
        emu.clear_faults()
    m.wait_drained(timeout=120)
    assert share.get("a/b/new.txt") == b"made offline"
    assert share.get("root-new.txt") == b"r"
    assert m.stop() == 0


@pytest.mark.mount
def test_unlinked_open_file_stays_readable(mounter, share, share_url):
    """A file larger than the cache, removed (unlink, and replaced by a rename) while
    open, is read whole through the open handle after the removal reached the share; once
    closed and forgotten its name and the hidden copy are gone from the share."""
    import random

    rnd = random.Random(21)
    big = rnd.randbytes(12 * 1024 * 1024 + 4321)
    other = rnd.randbytes(12 * 1024 * 1024 + 1234)
    share.put("d/big.bin", big)  # renamed aside across directories
    share.put("other.bin", other)
    m = mounter(share_url, args=["--cache-size", "4M", "--writeback-delay", "0.2"])
    mnt = m.mnt

    def hidden_names() -> list[str]:
        return [
            e["name"]
            for e in share.client.list_directories_and_files()
            if e["name"].startswith(".fsync-unlinked-")
        ]

    with open(mnt / "d/big.bin", "rb") as fb, open(mnt / "other.bin", "rb") as fo:
        assert fb.read(4096) == big[:4096]
        assert fo.read(4096) == other[:4096]
        os.unlink(mnt / "d/big.bin")
        (mnt / "new.bin").write_bytes(b"replacement")
        os.rename(mnt / "new.bin", mnt / "other.bin")
        m.wait_drained(timeout=120)
        assert not share.exists("d/big.bin")
        assert share.get("other.bin") == b"replacement"
        assert sorted(os.listdir(mnt)) == ["d", "other.bin"]  # the hidden copies are not listed
        assert os.listdir(mnt / "d") == []
        assert fb.read() == big[4096:]
        assert fo.read() == other[4096:]
    deadline = time.monotonic() + 60
    while hidden_names() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hidden_names() == []
    assert not share.exists("d/big.bin")
    assert sorted(os.listdir(mnt)) == ["d", "other.bin"]
    assert m.stop() == 0
