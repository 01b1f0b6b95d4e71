"""An answer lost on the way back: the share did it, the mount does not know, and retries.

Every call that is not idempotent by itself (create and take a name, a user's rename, mkdir,
delete, rmdir) must recognise its own earlier success when it is resent, by the SDK inside
one remote call (`SDK`) or by the write-back retrying the whole operation after the call
failed (`WHOLE`: no SDK retries, so the lost answer fails the call), and never take its own
file for another site's: the share ends exactly as the local tree, without conflict copies,
leftover temporary files or a conflict counted.

The emulator executes the chosen request, then cuts its connection before the answer
(faults.py `drop_ops`, with a glob on the request's path so only the intended one is hit).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pyfuse3
import pytest
import trio
from azure.storage.fileshare import ShareServiceClient

from remote.azure import AzureOptions
from tests.emulator_proc import Emulator
from tests.mount.helpers import REPO, Share, env, file_sha
from tests.mount.inproc import CTX, filesystem

ROOT = pyfuse3.ROOT_INODE
MiB = 1 << 20
BIG = 5 * MiB + 12345  # above the size a create carries inline: filled by the uploader
SDK = AzureOptions(
    retry_total=3,
    retry_backoff=0.05,
    retry_backoff_base=0.2,
    retry_jitter=0.01,
    connect_timeout=2.0,
    read_timeout=10.0,
)
WHOLE = AzureOptions(retry_total=0, connect_timeout=2.0, read_timeout=10.0)
LEVELS = pytest.mark.parametrize("options", [SDK, WHOLE], ids=["sdk-retry", "whole-op-retry"])


@pytest.fixture(scope="module")
def drop_emulator(tmp_path_factory):
    with Emulator(data_dir=tmp_path_factory.mktemp("idem-emulator") / "data") as emu:
        yield emu


@pytest.fixture
def share_name(drop_emulator):
    name = "i" + uuid_hex()
    svc = ShareServiceClient.from_connection_string(drop_emulator.connection_string)
    svc.create_share(name)
    try:
        yield name
    finally:
        drop_emulator.clear_faults()
        svc.get_share_client(name).delete_share(delete_snapshots=True)


@pytest.fixture
def share(drop_emulator, share_name) -> Share:
    return Share(drop_emulator.connection_string, share_name)


def uuid_hex() -> str:
    return os.urandom(10).hex()


def drop(emu: Emulator, op: str, path: str) -> None:
    """Cut the answer of the next successful `op` on `path` (a glob)."""
    emu.set_faults(drop_ops={f"{op}:{path}": 1})


def assert_dropped(emu: Emulator) -> None:
    assert emu.set_faults()["drop_ops"] == {}, "the answer was never dropped: test setup"


async def new_file(fs, parent: int, name: bytes, data: bytes) -> int:
    fi, entry = await fs.create(parent, name, 0o644, os.O_WRONLY, CTX)
    for off in range(0, len(data), MiB):
        await fs.write(fi.fh, off, data[off : off + MiB])
    await fs.release(fi.fh)
    return entry.st_ino


async def settle(fs, timeout: float = 60.0) -> dict:
    """Drain, then the status the mount shows (`getfattr -n user.fsync.status`)."""
    with trio.fail_after(timeout):
        await fs.writeback.drain()
    return json.loads(await fs.getxattr(ROOT, b"user.fsync.status", CTX))


async def share_tree(share: Share) -> dict[str, bool]:
    return await trio.to_thread.run_sync(share.walk)


def clean(status: dict) -> None:
    assert status["conflicts"] == 0, status
    assert status["stuck"]["count"] == 0, status
    assert status["ops"] == 0 and status["files"] == 0, status


@LEVELS
async def test_big_new_file_renamed_into_place(drop_emulator, share_name, share, tmp_path, options):
    """The reported bug: the temporary file's rename worked, its answer was lost, the retry
    found the name taken by our own (not yet filled) file and kept it as a conflict copy."""
    data = random.Random(1).randbytes(BIG)
    async with filesystem(
        drop_emulator.share_url(share_name), tmp_path / "c", options=options, delay=0.1
    ) as fs:
        d = (await fs.mkdir(ROOT, b"tree", 0o755, CTX)).st_ino
        with trio.fail_after(30):
            await fs.writeback.drain()
        drop(drop_emulator, "RenameFile", "tree/b5.bin")
        await new_file(fs, d, b"b5.bin", data)
        status = await settle(fs)
        assert_dropped(drop_emulator)
        clean(status)
    assert await share_tree(share) == {"tree": True, "tree/b5.bin": False}
    assert await trio.to_thread.run_sync(share.get, "tree/b5.bin") == data


@LEVELS
@pytest.mark.parametrize("op", ["CreateFile", "RenameFile"])
async def test_small_new_file(drop_emulator, share_name, share, tmp_path, options, op):
    """A small file is created with its content and renamed into place in one call: the
    answer of its create, or of its rename, lost."""
    target = "*.fsync-new-*" if op == "CreateFile" else "small.txt"
    async with filesystem(
        drop_emulator.share_url(share_name), tmp_path / "c", options=options, delay=0.1
    ) as fs:
        drop(drop_emulator, op, target)
        await new_file(fs, ROOT, b"small.txt", b"small content")
        status = await settle(fs)
        assert_dropped(drop_emulator)
        clean(status)
    assert await share_tree(share) == {"small.txt": False}
    assert await trio.to_thread.run_sync(share.get, "small.txt") == b"small content"


@LEVELS
async def test_mkdir_delete_rmdir(drop_emulator, share_name, share, tmp_path, options):
    await trio.to_thread.run_sync(share.put, "old/f.txt", b"old file")
    await trio.to_thread.run_sync(share.put, "gone.txt", b"to delete")
    async with filesystem(
        drop_emulator.share_url(share_name), tmp_path / "c", options=options, delay=0.1
    ) as fs:
        drop(drop_emulator, "CreateDirectory", "new")
        d = (await fs.mkdir(ROOT, b"new", 0o750, CTX)).st_ino
        await new_file(fs, d, b"inside.txt", b"inside")
        clean(await settle(fs))
        assert_dropped(drop_emulator)

        drop(drop_emulator, "DeleteFile", "gone.txt")
        await fs.lookup(ROOT, b"gone.txt", CTX)
        await fs.unlink(ROOT, b"gone.txt", CTX)
        clean(await settle(fs))
        assert_dropped(drop_emulator)

        old = (await fs.lookup(ROOT, b"old", CTX)).st_ino
        await fs.lookup(old, b"f.txt", CTX)
        await fs.unlink(old, b"f.txt", CTX)
        drop(drop_emulator, "DeleteDirectory", "old")
        await fs.rmdir(ROOT, b"old", CTX)
        clean(await settle(fs))
        assert_dropped(drop_emulator)
    assert await share_tree(share) == {"new": True, "new/inside.txt": False}
    props = await trio.to_thread.run_sync(share.dir_props, "new")
    assert props.metadata.get("fsyncmode") == "750"


@LEVELS
async def test_user_renames(drop_emulator, share_name, share, tmp_path, options):
    """A user's rename of a file and of a directory, and one replacing a file."""
    await trio.to_thread.run_sync(share.put, "a.txt", b"file a")
    await trio.to_thread.run_sync(share.put, "victim.txt", b"replaced")
    await trio.to_thread.run_sync(share.put, "dir/x.txt", b"x")
    async with filesystem(
        drop_emulator.share_url(share_name), tmp_path / "c", options=options, delay=0.1
    ) as fs:
        for name in (b"a.txt", b"victim.txt", b"dir"):
            await fs.lookup(ROOT, name, CTX)
        drop(drop_emulator, "RenameFile", "b.txt")
        await fs.rename(ROOT, b"a.txt", ROOT, b"b.txt", 0, CTX)
        clean(await settle(fs))
        assert_dropped(drop_emulator)
        drop(drop_emulator, "RenameDirectory", "dir2")
        await fs.rename(ROOT, b"dir", ROOT, b"dir2", 0, CTX)
        clean(await settle(fs))
        assert_dropped(drop_emulator)
        drop(drop_emulator, "RenameFile", "victim.txt")
        await fs.rename(ROOT, b"b.txt", ROOT, b"victim.txt", 0, CTX)
        clean(await settle(fs))
        assert_dropped(drop_emulator)
    assert await share_tree(share) == {"victim.txt": False, "dir2": True, "dir2/x.txt": False}
    assert await trio.to_thread.run_sync(share.get, "victim.txt") == b"file a"


@LEVELS
async def test_upload_of_a_file_the_share_lost(drop_emulator, share_name, share, tmp_path, options):
    """A file changed here and deleted on the share is uploaded as a new file: created
    under a temporary name, filled, then renamed into place; that rename's answer lost."""
    await trio.to_thread.run_sync(share.put, "lost.bin", b"v1")
    data = random.Random(2).randbytes(BIG)
    async with filesystem(
        drop_emulator.share_url(share_name), tmp_path / "c", options=options, delay=30.0
    ) as fs:
        ino = (await fs.lookup(ROOT, b"lost.bin", CTX)).st_ino
        fi = await fs.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)
        for off in range(0, len(data), MiB):
            await fs.write(fi.fh, off, data[off : off + MiB])
        await fs.release(fi.fh)
        await trio.to_thread.run_sync(
            lambda: share.client.get_file_client("lost.bin").delete_file()
        )
        drop(drop_emulator, "RenameFile", "lost.bin")
        status = await settle(fs)
        assert_dropped(drop_emulator)
        assert status["conflicts"] == 1  # the deletion on the share, nothing more
        assert status["stuck"]["count"] == 0 and status["files"] == 0
    assert await share_tree(share) == {"lost.bin": False}
    assert await trio.to_thread.run_sync(share.get, "lost.bin") == data


@LEVELS
async def test_conflict_moving_theirs_aside(drop_emulator, share_name, share, tmp_path, options):
    """A real conflict (changed here and on the share, ours newer): the share's version is
    renamed aside and that rename's answer lost. The retried upload must not take the empty
    name for another site's deletion: one conflict, both versions kept once."""
    await trio.to_thread.run_sync(share.put, "c.txt", b"v1")
    async with filesystem(
        drop_emulator.share_url(share_name), tmp_path / "c", options=options, delay=30.0
    ) as fs:
        ino = (await fs.lookup(ROOT, b"c.txt", CTX)).st_ino  # based on v1
        await trio.to_thread.run_sync(share.put, "c.txt", b"theirs, older")
        fi = await fs.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)
        await fs.write(fi.fh, 0, b"ours, newer")
        await fs.release(fi.fh)
        drop(drop_emulator, "RenameFile", "c-inproc.txt")
        status = await settle(fs)
        assert_dropped(drop_emulator)
        assert status["conflicts"] == 1, status
        assert status["stuck"]["count"] == 0 and status["files"] == 0
    assert await share_tree(share) == {"c.txt": False, "c-inproc.txt": False}
    assert await trio.to_thread.run_sync(share.get, "c.txt") == b"ours, newer"
    assert await trio.to_thread.run_sync(share.get, "c-inproc.txt") == b"theirs, older"


def test_copy_a_tree_through_errors_and_dropped_answers(mounter, tmp_path):
    """A tree copied into a mount while a tenth of the requests fail (503) and one in
    twenty answers is cut, with a single SDK retry so whole operations are retried too:
    the share ends equal to the source, without conflict copies or temporary files."""
    rnd = random.Random(int(os.environ.get("IDEM_SEED", "5")))
    src = tmp_path / "src"
    expected: dict[str, bool] = {}
    for d in ("", "a", "a/b", "big", "c"):
        (src / d).mkdir(parents=True, exist_ok=True)
        if d:
            expected[d] = True
    for i in range(48):  # 10 of them bigger than a create carries inline
        d = rnd.choice(["", "a", "a/b", "big", "c"])
        size = rnd.choice([0, 100, 5000, 70_000, 300_000]) if i % 5 else rnd.randrange(5, 8) * MiB
        name = f"{d}/f{i}.bin" if d else f"f{i}.bin"
        (src / name).write_bytes(rnd.randbytes(size))
        expected[name] = False
    with Emulator(data_dir=tmp_path / "emu") as emu:
        ShareServiceClient.from_connection_string(emu.connection_string).create_share("tree")
        m = mounter(
            emu.share_url("tree"),
            args=["--writeback-delay", "0.2", "--remote-retries", "1", "--poll-interval", "0"],
        )
        emu.set_faults(error_rate=0.1, error_status=503, drop_rate=0.05)
        try:
            shutil.copytree(src, m.mnt / "tree")
            m.wait_drained(timeout=600)
            status = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
        finally:
            emu.clear_faults()
        assert status["conflicts"] == 0, (status, m.log())
        assert status["stuck"]["count"] == 0, status
        r = subprocess.run(
            [sys.executable, "-m", "fsync_fuse", "unmount", str(m.mnt)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env(),
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        share = Share(emu.connection_string, "tree")
        tree = share.walk("tree")
        assert tree == {f"tree/{k}": v for k, v in expected.items()}, m.log()
        for name, is_dir in expected.items():
            if not is_dir:
                got = share.get(f"tree/{name}")
                assert len(got) == (src / name).stat().st_size, name
                assert file_sha_bytes(got) == file_sha(src / name), name


def file_sha_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
