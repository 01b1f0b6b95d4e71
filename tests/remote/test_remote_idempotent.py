"""A call whose answer is lost is resent by the SDK; the resent request finds the first one's
work done. Every call that is not idempotent by itself (rename without replace, create and
take a name, mkdir, delete, rmdir, a lease release) must take that for success, and never
for someone else's file.

The emulator executes the chosen operation, then cuts the connection before its answer
(`drop_ops`); these tests get an emulator of their own, since faults apply to every request.
"""

from __future__ import annotations

import os
import uuid

import pytest
from azure.storage.fileshare import ShareServiceClient

from remote.azure import AzureOptions
from remote.base import AlreadyExists, NotFound, RemoteEntry, Transient
from remote.credentials import open_remote
from tests.emulator_proc import Emulator

QUICK = AzureOptions(
    retry_total=3,
    retry_backoff=0.02,
    retry_backoff_base=0.1,
    retry_jitter=0.01,
    connect_timeout=2.0,
    read_timeout=10.0,
)
#: no retry at all: neither the SDK's nor the short path's fallback to the SDK (azure_short)
NO_RETRY = AzureOptions(retry_total=0, connect_timeout=2.0, read_timeout=10.0, short_path=False)


@pytest.fixture(scope="module")
def drop_emulator(tmp_path_factory):
    with Emulator(data_dir=tmp_path_factory.mktemp("drop-emulator") / "data") as emu:
        yield emu


@pytest.fixture
async def remote(drop_emulator):
    name = "i" + uuid.uuid4().hex[:20]
    svc = ShareServiceClient.from_connection_string(drop_emulator.connection_string)
    svc.create_share(name)
    r = await open_remote(drop_emulator.share_url(name), options=QUICK, env={})
    try:
        yield r
    finally:
        drop_emulator.clear_faults()
        await r.aclose()
        svc.get_share_client(name).delete_share(delete_snapshots=True)


def drop(emu: Emulator, op: str, n: int = 1) -> None:
    emu.set_faults(drop_ops={op: n})


def dropped_all(emu: Emulator) -> None:
    assert emu.set_faults()["drop_ops"] == {}, "the fault did not happen"


async def names(r, path: str = "") -> list[str]:
    return sorted(e.name for e in await r.list_dir(path))


@pytest.mark.parametrize("size", [1000, 5 << 20])  # one worker-thread hop / the generic path
async def test_create_filled_recognises_its_resent_rename(remote, drop_emulator, size):
    data = os.urandom(size)
    drop(drop_emulator, "RenameFile")
    made: list[RemoteEntry] = []
    entry = await remote.create_filled(".tmp-1", "f.bin", size, [(0, data)], made=made)
    dropped_all(drop_emulator)
    assert [e.file_id for e in made] == [entry.file_id]
    assert await names(remote) == ["f.bin"]
    assert (await remote.stat("f.bin")).file_id == entry.file_id
    assert await remote.read("f.bin", 0, size) == data
    if size < 4 << 20:  # create and fill went the short way; the lost rename was resent by the SDK
        assert remote._short.stats == {"fast": 4, "fallbacks": 1}  # and the listing, the read


async def test_create_filled_still_refuses_a_name_taken_by_another_file(remote, drop_emulator):
    theirs = await remote.create_file("f", 3)
    drop(drop_emulator, "CreateFile")  # a resent create of the temporary file: harmless
    made: list[RemoteEntry] = []
    with pytest.raises(AlreadyExists):
        await remote.create_filled(".tmp-2", "f", 5, [(0, b"ours!")], made=made)
    dropped_all(drop_emulator)
    assert made and made[0].file_id != theirs.file_id
    assert (await remote.stat("f")).file_id == theirs.file_id
    assert await names(remote) == [".tmp-2", "f"]  # ours is left, filled


async def test_made_names_the_file_of_a_call_that_failed(drop_emulator, remote):
    """Without SDK retries the lost answer fails the call; `made` still tells the caller
    which file it created, so its own later retry can recognise it under the name."""
    r = await open_remote(remote.account_url + "/" + remote.share_name, options=NO_RETRY, env={})
    try:
        drop(drop_emulator, "RenameFile")
        made: list[RemoteEntry] = []
        with pytest.raises(Transient):
            await r.create_filled(".tmp-3", "g", 4, [(0, b"data")], made=made)
        dropped_all(drop_emulator)
        assert [e.file_id for e in made] == [(await r.stat("g")).file_id]
    finally:
        await r.aclose()


async def test_resent_renames(remote, drop_emulator):
    await remote.create_file("a", 1)
    fid = (await remote.stat("a")).file_id
    drop(drop_emulator, "RenameFile")
    entry = await remote.rename("a", "b")
    dropped_all(drop_emulator)
    assert entry is not None and entry.file_id == fid and await names(remote) == ["b"]
    await remote.create_file("c", 1)
    drop(drop_emulator, "RenameFile")
    await remote.rename("b", "c", replace=True)
    dropped_all(drop_emulator)
    assert await names(remote) == ["c"] and (await remote.stat("c")).file_id == fid
    assert (await remote.rename_new("c", "d", fid)).file_id == fid
    await remote.mkdir("dir")
    await remote.create_file("dir/x", 1)
    drop(drop_emulator, "RenameDirectory")
    entry = await remote.rename("dir", "dir2")
    dropped_all(drop_emulator)
    assert entry is not None and entry.is_dir and await names(remote) == ["d", "dir2"]
    assert await names(remote, "dir2") == ["x"]
    with pytest.raises(NotFound):  # a source that never was is still an error
        await remote.rename("nothing", "e")


async def test_resent_mkdir_delete_rmdir_and_lease_release(remote, drop_emulator):
    drop(drop_emulator, "CreateDirectory")
    entry = await remote.mkdir("d", metadata={"k": "v"})
    dropped_all(drop_emulator)
    assert entry.is_dir and entry.file_id
    await remote.create_file("d/f", 1)
    drop(drop_emulator, "DeleteFile")
    await remote.delete_file("d/f")
    dropped_all(drop_emulator)
    drop(drop_emulator, "DeleteDirectory")
    await remote.rmdir("d")
    dropped_all(drop_emulator)
    assert await names(remote) == []
    await remote.create_file("leased", 1)
    lease = str(uuid.uuid4())
    drop(drop_emulator, "LeaseFile")  # acquiring again with the same id is accepted
    await remote.acquire_lease("leased", lease)
    drop(drop_emulator, "LeaseFile")
    await remote.release_lease("leased", lease)
    dropped_all(drop_emulator)
    await remote.delete_file("leased")  # no lease left behind
    with pytest.raises(NotFound):
        await remote.delete_file("leased")
