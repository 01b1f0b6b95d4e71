"""The filesystem's logic without the kernel: handlers called directly over the emulator."""

from __future__ import annotations

import errno
import os
import random

import pyfuse3
import pytest
import trio

from tests.mount.helpers import Share
from tests.mount.inproc import CTX, attrs, fields, filesystem

KiB, MiB = 1024, 1024 * 1024


@pytest.fixture
def share(emulator, share_name) -> Share:
    return Share(emulator.connection_string, share_name)


async def open_file(fs, parent: int, name: str, flags=os.O_RDWR):
    entry = await fs.lookup(parent, name.encode(), CTX)
    fi = await fs.open(entry.st_ino, flags, CTX)
    return entry.st_ino, fi.fh


async def test_fsx_inprocess(emulator, share_name, share, tmp_path):
    """Random writes/truncates/reads against a model, cache smaller than the file, uploads
    running all along (the in-process twin of test_fsx, without the kernel in between)."""
    seed = int(os.environ.get("FSX_SEED", "7"))
    rnd = random.Random(seed)
    model = bytearray(rnd.randbytes(3 * MiB + 99))
    await trio.to_thread.run_sync(share.put, "f.bin", bytes(model))
    async with filesystem(
        emulator.share_url(share_name),
        tmp_path / "c",
        cache_size=2 * MiB,
        block_size=64 * KiB,
        delay=0.02,
        read_ahead=256 * KiB,
    ) as fs:
        ino, fh = await open_file(fs, pyfuse3.ROOT_INODE, "f.bin")
        trail: list[str] = []
        for i in range(int(os.environ.get("FSX_OPS", "1500"))):
            r = rnd.random()
            if r < 0.4:
                off = rnd.randrange(0, 8 * MiB)
                n = rnd.randrange(1, 200 * KiB)
                data = rnd.randbytes(n)
                trail.append(f"{i} write {off} {n}")
                await fs.write(fh, off, data)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + n] = data
            elif r < 0.5:
                size = rnd.randrange(0, 8 * MiB)
                trail.append(f"{i} truncate {size}")
                await fs.setattr(ino, attrs(st_size=size), fields(size=True), fh, CTX)
                del model[size:]
                model.extend(bytes(size - len(model)))
            elif r < 0.97:
                off = rnd.randrange(0, len(model) + 10)
                n = rnd.randrange(1, 300 * KiB)
                trail.append(f"{i} read {off} {n}")
                got = await fs.read(fh, off, n)
                want = bytes(model[off : off + n])
                if got != want:
                    bad = [j for j in range(min(len(got), len(want))) if got[j] != want[j]]
                    b0 = off + bad[0] if bad else -1
                    st = fs.cache.blocks(ino) if hasattr(fs.cache, "blocks") else {}
                    (tmp_path / "trail.txt").write_text("\n".join(trail))
                    bs = fs.cache.block_size
                    raise AssertionError(
                        f"seed {seed} op {i}: read {off}+{n} -> {len(got)} bytes, want "
                        f"{len(want)}; bad {b0}..{off + bad[-1] if bad else -1}; block states "
                        f"{ {b: st.get(b) for b in range(b0 // bs - 1, b0 // bs + 3)} }; "
                        f"remote_valid {fs.cache.remote_valid(ino)}; trail {trail[-10:]}"
                    )
            else:
                trail.append(f"{i} pause")
                await trio.sleep(0.05)  # let uploads finish and evictions happen
        await fs.release(fh)
        with trio.fail_after(60):
            await fs.writeback.drain()
    data = await trio.to_thread.run_sync(share.get, "f.bin")
    assert data == bytes(model), f"seed {seed}: the share differs"


async def test_namespace_ops_reach_the_share_in_order(emulator, share_name, share, tmp_path):
    async with filesystem(emulator.share_url(share_name), tmp_path / "c", delay=0.05) as fs:
        root = pyfuse3.ROOT_INODE
        d = await fs.mkdir(root, b"d", 0o755, CTX)
        fi, e = await fs.create(d.st_ino, b"a", 0o644, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"content of a")
        await fs.release(fi.fh)
        # rename the directory before anything reached the share; then rename the file in it
        await fs.rename(root, b"d", root, b"e", 0, CTX)
        await fs.rename(d.st_ino, b"a", d.st_ino, b"b", 0, CTX)
        await fs.symlink(d.st_ino, b"l", b"b", CTX)
        await fs.mkdir(d.st_ino, b"sub", 0o700, CTX)
        await fs.rmdir(d.st_ino, b"sub", CTX)
        with pytest.raises(pyfuse3.FUSEError) as info:
            await fs.create(d.st_ino, b"B", 0o644, os.O_WRONLY, CTX)
        assert info.value.errno == errno.EEXIST
        with trio.fail_after(30):
            await fs.writeback.drain()
    tree = await trio.to_thread.run_sync(share.walk)
    assert tree == {"e": True, "e/b": False, "e/l": False}
    assert await trio.to_thread.run_sync(share.get, "e/b") == b"content of a"
    assert await trio.to_thread.run_sync(share.get, "e/l") == b"b"
    props = await trio.to_thread.run_sync(share.props, "e/l")
    assert props.metadata["fsynctype"] == "symlink"


async def test_unlink_while_open_defers_removal(emulator, share_name, share, tmp_path):
    await trio.to_thread.run_sync(share.put, "x", b"x" * 100)
    async with filesystem(emulator.share_url(share_name), tmp_path / "c", delay=0.05) as fs:
        ino, fh = await open_file(fs, pyfuse3.ROOT_INODE, "x")
        assert await fs.read(fh, 0, 10) == b"x" * 10
        await fs.unlink(pyfuse3.ROOT_INODE, b"x", CTX)
        # no such name (a negative entry: inode 0, which the kernel may keep a while)
        assert (await fs.lookup(pyfuse3.ROOT_INODE, b"x", CTX)).st_ino == 0
        # still readable through the open handle, and its attributes still answer
        assert await fs.read(fh, 90, 100) == b"x" * 10
        assert (await fs.getattr(ino, CTX)).st_size == 100
        await fs.release(fh)
        await fs.forget([(ino, 1)])
        assert fs.ns.get(ino) is None
        with trio.fail_after(30):
            await fs.writeback.drain()
    assert not await trio.to_thread.run_sync(share.exists, "x")


async def test_fsync_remote_returns_once_on_the_share(emulator, share_name, share, tmp_path):
    async with filesystem(
        emulator.share_url(share_name), tmp_path / "c", delay=3600, fsync_remote=True
    ) as fs:
        fi, _ = await fs.create(pyfuse3.ROOT_INODE, b"synced", 0o600, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"durable on the share")
        with trio.fail_after(30):
            await fs.fsync(fi.fh, False)
        # no drain, no delay: fsync alone put it there
        assert await trio.to_thread.run_sync(share.get, "synced") == b"durable on the share"
        props = await trio.to_thread.run_sync(share.props, "synced")
        assert props.metadata["fsyncmode"] == "600"
        await fs.release(fi.fh)


async def test_cache_full_of_dirty_data_gives_enospc(fresh_emulator, tmp_path):
    from azure.storage.fileshare import ShareServiceClient

    ShareServiceClient.from_connection_string(fresh_emulator.connection_string).create_share("full")
    from remote.azure import AzureOptions

    async with filesystem(
        fresh_emulator.share_url("full"),
        tmp_path / "c",
        cache_size=2 * MiB,
        block_size=64 * KiB,
        delay=0.01,
        full_timeout=1.0,
        options=AzureOptions(retry_total=0),
    ) as fs:
        await fs.opendir(pyfuse3.ROOT_INODE, CTX)  # listed while the share is there
        # nothing can be uploaded to free room
        await trio.to_thread.run_sync(lambda: fresh_emulator.set_faults(outage_seconds=30))
        fi, _ = await fs.create(pyfuse3.ROOT_INODE, b"big", 0o644, os.O_WRONLY, CTX)
        with pytest.raises(pyfuse3.FUSEError) as info:
            for off in range(0, 4 * MiB, 256 * KiB):
                await fs.write(fi.fh, off, b"z" * (256 * KiB))
        assert info.value.errno == errno.ENOSPC
        await fs.release(fi.fh)


async def test_a_listing_that_changes_nothing_commits_nothing(
    emulator, share_name, share, tmp_path
):
    """Re-listing an unchanged directory (polls, close-to-open) costs no synced transaction;
    one that finds a change commits it."""
    for i in range(5):
        await trio.to_thread.run_sync(share.put, f"d/f{i}", b"x" * i)
    async with filesystem(emulator.share_url(share_name), tmp_path / "c") as fs:
        root = pyfuse3.ROOT_INODE
        d = await fs.lookup(root, b"d", CTX)
        await fs.lister.refresh(d.st_ino)
        fs.ns.flush()
        txn0 = fs.ns.env.info()["last_txnid"]
        listed0 = fs.ns.get(d.st_ino).listed_ns
        await fs.lister.refresh(d.st_ino)
        assert fs.ns.env.info()["last_txnid"] == txn0
        assert fs.ns.get(d.st_ino).listed_ns > listed0  # the listing time is still kept
        await trio.to_thread.run_sync(share.put, "d/new", b"new")
        await fs.lister.refresh(d.st_ino)
        assert fs.ns.env.info()["last_txnid"] > txn0
        assert fs.ns.lookup(d.st_ino, "new") is not None


async def test_a_new_file_is_committed_with_its_close(emulator, share_name, share, tmp_path):
    """A file created open is staged (namespace/tables.py `_stage`): no transaction of its
    own; its entries reach LMDB with its close's commit, or sooner when something reads the
    directory or changes the namespace; nothing of it is lost or reordered meanwhile."""
    from fsync_fuse import names

    async with filesystem(emulator.share_url(share_name), tmp_path / "c", delay=0.05) as fs:
        ns, root = fs.ns, pyfuse3.ROOT_INODE

        def in_lmdb(name: str) -> bool:
            with ns.env.begin() as txn:
                return txn.get(names.dentry_key(root, name), db=ns.db_dentries) is not None

        before = ns.env.info()["last_txnid"]
        fi, e = await fs.create(root, b"a", 0o644, os.O_WRONLY, CTX)
        assert not in_lmdb("a") and ns.env.info()["last_txnid"] == before
        # (no await in between: nothing else ran). The file answers all the same.
        assert ns.get(e.st_ino) is not None
        await fs.write(fi.fh, 0, b"content of a")
        await fs.release(fi.fh)
        assert in_lmdb("a")

        # closed with nothing written: its close commits it all the same
        fi, e = await fs.create(root, b"e", 0o644, os.O_WRONLY, CTX)
        await fs.release(fi.fh)
        assert in_lmdb("e")

        # read before its close: the directory's entries settle first
        fi, e = await fs.create(root, b"b", 0o644, os.O_WRONLY, CTX)
        assert not in_lmdb("b")
        assert "b" in [name for _id, name, _rec in ns.children(root)]
        assert in_lmdb("b")
        await fs.release(fi.fh)

        # a namespace change before the close carries it, queued in order before its own
        fi, e = await fs.create(root, b"c", 0o644, os.O_WRONLY, CTX)
        await fs.mkdir(root, b"d", 0o755, CTX)
        assert in_lmdb("c")
        ops = [op for _seq, op in ns.outbox.peek(0, 100)]
        order = [op.get("path") for op in ops if op["op"] in ("create", "mkdir")]
        assert order.index("c") < order.index("d"), order
        await fs.release(fi.fh)

        # removed before its close: its queued create is withdrawn, nothing reaches the share
        fi, e = await fs.create(root, b"t", 0o644, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"temporary")
        await fs.unlink(root, b"t", CTX)
        await fs.release(fi.fh)
        await fs.forget([(e.st_ino, 1)])
        with trio.fail_after(30):
            await fs.writeback.drain()
    tree = await trio.to_thread.run_sync(share.walk)
    assert tree == {"a": False, "b": False, "c": False, "d": True, "e": False}
    assert await trio.to_thread.run_sync(share.get, "a") == b"content of a"
