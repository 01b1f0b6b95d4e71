"""What the share refuses for good is set aside as *stuck*: never dropped (the local data
stays, readable, and is retried at the next mount), never blocking the queue or `fsync-fuse
unmount`, listed with its reason in `user.fsync.status`, and resolved by renaming or
removing the entry here.

The emulator refuses chosen names like the service refuses a name it cannot hold (faults.py
`refuse_names`: 400 InvalidResourceName), although the mount's own name check accepts them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

import pyfuse3
import pytest
import trio
from azure.storage.fileshare import ShareServiceClient

from fsync_fuse.writeback.fold import fold
from tests.emulator_proc import Emulator
from tests.mount.helpers import REPO, Share, env, eventually, read, write
from tests.mount.inproc import CTX, filesystem

ROOT = pyfuse3.ROOT_INODE
ARGS = ["--writeback-delay", "0.2", "--poll-interval", "0"]


def status(mnt) -> dict:
    return json.loads(os.getxattr(mnt, "user.fsync.status"))


def unmount(m, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """`fsync-fuse unmount`: it must return (and succeed) although items are stuck."""
    r = subprocess.run(
        [sys.executable, "-m", "fsync_fuse", "unmount", str(m.mnt)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=timeout,
    )
    assert r.returncode == 0, (r.stderr, m.log())
    m.proc.wait(30)
    return r


def stuck_items(st: dict) -> dict[str, tuple[str, str]]:
    return {i["path"]: (i["op"], i["reason"]) for i in st["stuck"]["items"]}


@pytest.fixture
def emu(tmp_path):
    with Emulator(data_dir=tmp_path / "emu") as e:
        ShareServiceClient.from_connection_string(e.connection_string).create_share("stuck")
        yield e


def test_refused_directory_stays_local_and_does_not_block(mounter, emu, tmp_path):
    """A directory whose name the share refuses, and a file in it: stuck, listed with their
    reason, readable here; everything else reaches the share; `fsync-fuse unmount` returns;
    still stuck at the next mount; applied at a mount after the share accepts the name."""
    emu.set_faults(refuse_names=["bad*"])
    share = Share(emu.connection_string, "stuck")
    payload = os.urandom(300_000)
    m = mounter(emu.share_url("stuck"), args=ARGS)
    os.mkdir(m.mnt / "bad")
    write(m.mnt / "bad" / "x.bin", payload)
    os.mkdir(m.mnt / "good")
    write(m.mnt / "good" / "y.txt", b"independent")
    write(m.mnt / "top.txt", b"top")
    m.wait_drained(timeout=60)  # stuck items are not pending
    st = status(m.mnt)
    items = stuck_items(st)
    assert st["stuck"]["count"] == 2, st
    assert items["bad"][0] == "mkdir" and "InvalidResourceName" in items["bad"][1]
    assert items["bad/x.bin"] == ("create", "waits for stuck mkdir 'bad'")
    assert st["ops"] == 0 and st["files"] == 0 and st["error"] is None
    assert share.walk() == {"good": True, "good/y.txt": False, "top.txt": False}
    assert read(m.mnt / "bad" / "x.bin") == payload
    assert m.log().count("refuses mkdir 'bad' for good") == 1
    unmount(m)

    m2 = mounter(emu.share_url("stuck"), name="mnt", args=ARGS)  # same cache
    eventually(lambda: status(m2.mnt)["stuck"]["count"] == 2, what="stuck again", timeout=30)
    assert read(m2.mnt / "bad" / "x.bin") == payload
    assert sorted(os.listdir(m2.mnt)) == ["bad", "good", "top.txt"]
    assert re.search(r"still stuck \(since [^)]*\): mkdir 'bad'", m2.log()), m2.log()
    unmount(m2)
    assert "bad" not in share.walk()

    emu.clear_faults()  # the share takes the name now
    m3 = mounter(emu.share_url("stuck"), name="mnt", args=ARGS)
    m3.wait_drained(timeout=60)
    assert status(m3.mnt)["stuck"]["count"] == 0
    unmount(m3)
    assert share.get("bad/x.bin") == payload
    assert share.walk() == {
        "bad": True,
        "bad/x.bin": False,
        "good": True,
        "good/y.txt": False,
        "top.txt": False,
    }


def test_refused_upload_is_set_aside(mounter, emu):
    """A file on the share whose new content the share refuses: its upload is stuck (the
    data stays here), unmount returns, and the next mount uploads it once accepted."""
    share = Share(emu.connection_string, "stuck")
    m = mounter(emu.share_url("stuck"), args=ARGS)
    write(m.mnt / "later.bin", b"first version")
    m.wait_drained(timeout=60)
    assert share.get("later.bin") == b"first version"
    emu.set_faults(refuse_names=["later.bin"])
    write(m.mnt / "later.bin", b"second version, refused")
    write(m.mnt / "other.txt", b"still goes out")
    eventually(lambda: status(m.mnt)["stuck"]["count"] == 1, what="upload stuck", timeout=30)
    m.wait_drained(timeout=60)
    (item,) = status(m.mnt)["stuck"]["items"]
    assert item["op"] == "upload" and item["path"] == "later.bin"
    assert "InvalidResourceName" in item["reason"]
    assert read(m.mnt / "later.bin") == b"second version, refused"
    assert share.get("other.txt") == b"still goes out"
    unmount(m)
    emu.clear_faults()
    m2 = mounter(emu.share_url("stuck"), name="mnt", args=ARGS)
    m2.wait_drained(timeout=60)
    assert status(m2.mnt)["stuck"]["count"] == 0
    unmount(m2)
    assert share.get("later.bin") == b"second version, refused"


# ---------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    """An emulator that refuses names starting with "bad"."""
    with Emulator(data_dir=tmp_path_factory.mktemp("stuck-emulator") / "data") as e:
        e.set_faults(refuse_names=["bad*"])
        yield e


@pytest.fixture
def fresh_share(refusing):
    name = "s" + os.urandom(8).hex()
    ShareServiceClient.from_connection_string(refusing.connection_string).create_share(name)
    return name


async def new_file(fs, parent: int, name: bytes, data: bytes) -> int:
    fi, entry = await fs.create(parent, name, 0o644, os.O_WRONLY, CTX)
    await fs.write(fi.fh, 0, data)
    await fs.release(fi.fh)
    return entry.st_ino


async def settle(fs) -> dict:
    with trio.fail_after(60):
        await fs.writeback.drain()
    return json.loads(await fs.getxattr(ROOT, b"user.fsync.status", CTX))


async def walk(share: Share) -> dict[str, bool]:
    return await trio.to_thread.run_sync(share.walk)


async def test_renaming_a_stuck_directory_resolves_it(refusing, fresh_share, tmp_path):
    """More operations wait for a stuck directory than the worker's window holds; work
    queued after them still reaches the share; renaming the directory here (after moving
    a file of the share into it) applies all of it, in order, under the new name."""
    share = Share(refusing.connection_string, fresh_share)
    await trio.to_thread.run_sync(share.put, "moved.txt", b"was at the root")
    async with filesystem(refusing.share_url(fresh_share), tmp_path / "c", delay=0.05) as fs:
        await fs.lookup(ROOT, b"moved.txt", CTX)
        bad = (await fs.mkdir(ROOT, b"bad", 0o755, CTX)).st_ino
        for i in range(80):
            await new_file(fs, bad, f"f{i}".encode(), f"file {i}".encode())
        await fs.rename(ROOT, b"moved.txt", bad, b"moved.txt", 0, CTX)
        await new_file(fs, ROOT, b"after.txt", b"queued after them")
        st = await settle(fs)
        assert st["stuck"]["count"] == 82 and st["ops"] == 0 and st["files"] == 0
        assert await walk(share) == {"moved.txt": False, "after.txt": False}
        f42 = (await fs.lookup(bad, b"f42", CTX)).st_ino
        fh = (await fs.open(f42, os.O_RDONLY, CTX)).fh
        assert await fs.read(fh, 0, 100) == b"file 42"  # kept here, readable
        await fs.release(fh)
        await fs.rename(ROOT, b"bad", ROOT, b"fine", 0, CTX)
        st = await settle(fs)
        assert st["stuck"]["count"] == 0, st["stuck"]
    tree = await walk(share)
    assert tree == {
        "after.txt": False,
        "fine": True,
        "fine/moved.txt": False,
        **{f"fine/f{i}": False for i in range(80)},
    }
    assert await trio.to_thread.run_sync(share.get, "fine/f42") == b"file 42"
    assert await trio.to_thread.run_sync(share.get, "fine/moved.txt") == b"was at the root"


async def test_removing_stuck_entries_resolves_them(refusing, fresh_share, tmp_path):
    """A stuck file and a stuck directory removed here: nothing is left to do, nothing
    reaches the share, nothing stays stuck or pending."""
    share = Share(refusing.connection_string, fresh_share)
    async with filesystem(refusing.share_url(fresh_share), tmp_path / "c", delay=0.05) as fs:
        await new_file(fs, ROOT, b"bad.txt", b"refused name")
        bad = (await fs.mkdir(ROOT, b"bad-dir", 0o755, CTX)).st_ino
        await new_file(fs, bad, b"inner", b"inner file")
        await new_file(fs, ROOT, b"keep.txt", b"kept")
        st = await settle(fs)
        assert st["stuck"]["count"] == 3
        await fs.unlink(ROOT, b"bad.txt", CTX)
        await fs.unlink(bad, b"inner", CTX)
        await fs.rmdir(ROOT, b"bad-dir", CTX)
        st = await settle(fs)
        assert st["stuck"]["count"] == 0 and st["ops"] == 0 and st["files"] == 0, st
        assert len(fs.ns.outbox) == 0
    assert await walk(share) == {"keep.txt": False}


async def test_a_refused_rename_keeps_the_share_version_until_resolved(
    refusing, fresh_share, tmp_path
):
    """A rename to a name the share refuses: the share keeps the file under its old name;
    a write to it meanwhile waits (its share path is the old one); renaming it again here
    renames it once on the share, and the write follows."""
    share = Share(refusing.connection_string, fresh_share)
    await trio.to_thread.run_sync(share.put, "a.txt", b"version 1")
    async with filesystem(refusing.share_url(fresh_share), tmp_path / "c", delay=0.05) as fs:
        ino = (await fs.lookup(ROOT, b"a.txt", CTX)).st_ino
        await fs.rename(ROOT, b"a.txt", ROOT, b"bad.txt", 0, CTX)
        fh = (await fs.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)).fh
        await fs.write(fh, 0, b"version 2")
        await fs.release(fh)
        st = await settle(fs)
        assert {i["op"] for i in st["stuck"]["items"]} == {"rename"}, st["stuck"]
        assert st["stuck"]["count"] == 1 and st["files"] == 0  # the upload waits with it
        assert await walk(share) == {"a.txt": False}
        await fs.rename(ROOT, b"bad.txt", ROOT, b"c.txt", 0, CTX)
        st = await settle(fs)
        assert st["stuck"]["count"] == 0
    assert await walk(share) == {"c.txt": False}
    assert await trio.to_thread.run_sync(share.get, "c.txt") == b"version 2"


async def test_renaming_a_directory_above_resolves_a_path_refused(refusing, fresh_share, tmp_path):
    """The share refuses paths below a/deep (as it refuses a path too long); a file created
    there is stuck. Renaming `deep` (something above the stuck entry, not the entry itself)
    moves it on the share first, then the file follows under the new path."""
    share = Share(refusing.connection_string, fresh_share)
    async with filesystem(refusing.share_url(fresh_share), tmp_path / "c", delay=0.05) as fs:
        a = (await fs.mkdir(ROOT, b"a", 0o755, CTX)).st_ino
        deep = (await fs.mkdir(a, b"deep", 0o755, CTX)).st_ino
        await new_file(fs, deep, b"old.txt", b"before")
        await settle(fs)
        refusing.set_faults(refuse_paths=["a/deep/*"])
        try:
            await new_file(fs, deep, b"f.txt", b"refused there")
            st = await settle(fs)
            assert st["stuck"]["count"] == 1
            await fs.rename(a, b"deep", a, b"s", 0, CTX)
            st = await settle(fs)
            assert st["stuck"]["count"] == 0, st["stuck"]
        finally:
            refusing.set_faults(refuse_paths=[])
    assert await walk(share) == {
        "a": True,
        "a/s": True,
        "a/s/old.txt": False,
        "a/s/f.txt": False,
    }
    assert await trio.to_thread.run_sync(share.get, "a/s/f.txt") == b"refused there"


async def test_fsync_remote_of_a_stuck_file_fails_at_once(refusing, fresh_share, tmp_path, caplog):
    """`fsync` with --fsync remote of a file whose create is stuck answers EIO because it is
    stuck (said in the log), instead of waiting out the I/O timeout."""
    async with filesystem(
        refusing.share_url(fresh_share), tmp_path / "c", delay=0.05, fsync_remote=True
    ) as fs:
        fi, entry = await fs.create(ROOT, b"bad.txt", 0o644, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"data")
        with pytest.raises(pyfuse3.FUSEError) as info:
            await fs.fsync(fi.fh, False)
        assert info.value.errno == errno.EIO
        said = [r.getMessage() for r in caplog.records if r.name == "fsync_fuse.fs"]
        assert any("waits for stuck create 'bad.txt'" in m for m in said), said
        await fs.release(fi.fh)
        fh = (await fs.open(entry.st_ino, os.O_RDONLY, CTX)).fh
        assert await fs.read(fh, 0, 10) == b"data"  # kept here
        await fs.release(fh)


# ---------------------------------------------------------------------- fold


def mk(op: str, ino: int, **kw) -> dict:
    return {"op": op, "ino": ino, "dirs": [1], **kw}


def test_fold_pairs():
    create = mk("create", 5, path="d/bad")
    assert fold([create, mk("rename", 5, src="d/bad", dst="d/ok", replace=False)]) == [
        mk("create", 5, path="d/ok")
    ]
    assert fold([create, mk("setattr", 5, path="d/bad"), mk("unlink", 5, path="d/bad")]) == []
    moved = mk("rename", 5, src="a", dst="bad", replace=False, victim=None)
    assert fold([moved, mk("rename", 5, src="bad", dst="c", replace=False, victim=None)]) == [
        mk("rename", 5, src="a", dst="c", replace=False, victim=None)
    ]
    assert fold([moved, mk("rename", 5, src="bad", dst="a", replace=False, victim=None)]) == []
    assert fold([moved, mk("unlink", 5, path="bad")]) == [mk("unlink", 5, path="a")]
    # replacing a file: the victim goes first
    assert fold([create, mk("rename", 5, src="d/bad", dst="d/v", replace=True, victim=9)]) == [
        mk("unlink", 9, path="d/v"),
        mk("create", 5, path="d/v"),
    ]
    assert fold([create]) is None


def test_fold_a_directory_with_its_subtree():
    ops = [
        mk("mkdir", 2, path="bad"),
        mk("create", 3, path="bad/f"),
        mk("rename", 4, src="top", dst="bad/top", replace=False, victim=None),
        mk("setattr", 1, path=""),  # attributes of the root: commute
        mk("rename", 2, src="bad", dst="x/ok", replace=False, victim=None),
        mk("create", 6, path="x/ok/g"),
    ]
    assert fold(ops) == [
        mk("setattr", 1, path=""),
        mk("mkdir", 2, path="x/ok"),
        mk("create", 3, path="x/ok/f"),
        mk("rename", 4, src="top", dst="x/ok/top", replace=False, victim=None),
        mk("create", 6, path="x/ok/g"),
    ]
    # removed here, children first: everything goes
    gone = [
        mk("mkdir", 2, path="bad"),
        mk("create", 3, path="bad/f"),
        mk("unlink", 3, path="bad/f"),
        mk("rmdir", 2, path="bad"),
    ]
    assert fold(gone) == []
    # a share entry moved into it and the directory removed: the entry is deleted where it is
    assert fold(
        [
            mk("mkdir", 2, path="bad"),
            mk("rename", 4, src="top", dst="bad/top", replace=False, victim=None),
            mk("unlink", 4, path="bad/top"),
            mk("rmdir", 2, path="bad"),
        ]
    ) == [mk("unlink", 4, path="top")]


def test_fold_moves_a_rename_above_stuck_entries_before_them():
    """A create refused under a/long (a path too long, say) and the user renames `a` to
    something shorter: `a` moves first, then the create follows under the new name."""
    ops = [
        mk("create", 5, path="a/long/f"),
        mk("create", 6, path="elsewhere/g"),  # unrelated: stays where it is
        mk("rename", 2, src="a/long", dst="a/s", replace=False, victim=None),
    ]
    assert fold(ops) == [
        mk("rename", 2, src="a/long", dst="a/s", replace=False, victim=None),
        mk("create", 5, path="a/s/f"),
        mk("create", 6, path="elsewhere/g"),
    ]


def test_fold_a_big_stuck_tree_removed():
    """`rm -r` of a stuck directory of many files folds to nothing (in one pass for the
    files, so it stays linear)."""
    n = 5000
    ops = [mk("mkdir", 2, path="bad")]
    ops += [mk("create", 10 + i, path=f"bad/f{i}") for i in range(n)]
    ops += [mk("unlink", 10 + i, path=f"bad/f{i}") for i in range(n)]
    ops += [mk("rmdir", 2, path="bad")]
    assert fold(ops) == []


def test_fold_leaves_what_it_cannot_reorder():
    # the old place of a stuck rename is taken by something created after it moved away:
    # folding would create that before the entry leaves
    ops = [
        mk("rename", 5, src="a", dst="bad", replace=False, victim=None),
        mk("create", 6, path="a"),
        mk("rename", 5, src="bad", dst="c", replace=False, victim=None),
    ]
    assert fold(ops) is None
