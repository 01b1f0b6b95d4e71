"""New files reach the share under a temporary name and are renamed to their name without
replacing anything: a small file costs three calls (create, one Put Range, rename), and a
file another site created under the same name since this mount listed is kept."""

from __future__ import annotations

import datetime
import json
import os

import trio

from tests.mount.helpers import eventually, read, write


def test_small_new_files_cost_three_calls(mounter, share, share_url, emulator):
    """Written like `tar -x` does (create, write, chmod, utime, close), in a burst: the queue
    waits for the burst to end, then each file costs Create File + Put Range + Rename with
    its content, mode and mtime, and needs no upload of its own."""
    m = mounter(share_url, args=["--writeback-delay", "0.2"])
    before = emulator.stats()["by_op"]
    os.mkdir(m.mnt / "d")
    files = {f"d/f{i:02}.txt": os.urandom(100 + 37 * i) for i in range(20)}
    for i, (name, data) in enumerate(files.items()):
        write(m.mnt / name, data)
        os.chmod(m.mnt / name, 0o600 if i % 2 else 0o644)
        os.utime(m.mnt / name, (1_600_000_000 + len(data), 1_600_000_000 + len(data)))
    m.wait_drained(60)
    after = emulator.stats()["by_op"]
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert delta.get("CreateFile") == 20, delta
    assert delta.get("PutRange") == 20, delta
    assert delta.get("RenameFile") == 20, delta
    # an upload of its own (conflict check, properties, metadata): none expected; a stall of
    # this test mid-burst may let one create find its file still open
    extra = sum(delta.get(op, 0) for op in ("SetFileProperties", "SetFileMetadata"))
    assert extra <= 2 and delta.get("GetFileProperties", 0) <= 1, delta
    for i, (name, data) in enumerate(files.items()):
        assert share.get(name) == data
        p = share.props(name)
        assert int(p.last_write_time.timestamp()) == 1_600_000_000 + len(data)
        assert p.metadata.get("fsyncmode") == ("600" if i % 2 else None)
    # nothing temporary is left on the share
    assert sorted(share.walk()) == ["d", *sorted(files)]
    assert m.stop() == 0


def test_a_new_file_still_being_written_waits_to_go_out_whole(mounter, share, share_url, emulator):
    """Written in pieces further apart than a burst (so the queue runs meanwhile) but closer
    than the write-back delay: its queued create waits until the file is due and sends it
    whole in three calls, instead of creating it empty and uploading it after (with a
    lease, a conflict check, properties and metadata)."""
    m = mounter(share_url, args=["--writeback-delay", "1.5"])
    before = emulator.stats()["by_op"]
    data = os.urandom(5000)
    with open(m.mnt / "slow.log", "wb") as fh:
        for i in range(5):
            fh.write(data[i * 1000 : (i + 1) * 1000])
            fh.flush()
            os.fsync(fh.fileno())  # a durable close point each time, like a logger's
            trio.run(trio.sleep, 0.6)
    m.wait_drained(60)
    after = emulator.stats()["by_op"]
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert share.get("slow.log") == data
    calls = {op: delta.get(op, 0) for op in ("CreateFile", "PutRange", "RenameFile")}
    assert calls == {"CreateFile": 1, "PutRange": 1, "RenameFile": 1}, delta
    for op in ("LeaseFile", "SetFileProperties", "SetFileMetadata", "GetFileProperties"):
        assert delta.get(op, 0) == 0, delta
    assert m.stop() == 0


def _set_mtime(share, path: str, when: datetime.datetime) -> None:
    from azure.storage.fileshare import ContentSettings

    share.client.get_file_client(path).set_http_headers(
        ContentSettings(),
        file_last_write_time=when,
        file_creation_time="preserve",
        file_attributes="preserve",
    )


def test_create_keeps_a_file_created_elsewhere(mounter, share, share_url):
    # B does not poll and trusts its listings for a minute: it cannot know the names below
    # were taken on the share after it listed the root.
    b = mounter(
        share_url,
        "b",
        "cache-b",
        ["--poll-interval", "0", "--attr-timeout", "60", "--site-name", "siteB"],
    )
    assert os.listdir(b.mnt) == []
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    future = datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)
    share.put("old.txt", b"theirs, older")
    _set_mtime(share, "old.txt", past)
    share.put("new.txt", b"theirs, newer")
    _set_mtime(share, "new.txt", future)
    share.client.create_directory("dirname")

    write(b.mnt / "old.txt", b"ours")
    write(b.mnt / "new.txt", b"ours too")
    write(b.mnt / "dirname", b"ours, a file")
    b.wait_drained(60)

    # the newer version keeps the name, the other is kept beside it; nothing is lost
    assert share.get("old.txt") == b"ours"
    assert share.get("old-siteB.txt") == b"theirs, older"
    assert share.get("new.txt") == b"theirs, newer"
    assert share.get("new-siteB.txt") == b"ours too"
    assert share.walk("dirname") == {}  # the directory is untouched
    assert share.get("dirname-siteB") == b"ours, a file"
    st = json.loads(os.getxattr(b.mnt, "user.fsync.status"))
    assert st["conflicts"] == 3

    b.sync_now()
    assert sorted(os.listdir(b.mnt)) == [
        "dirname",
        "dirname-siteB",
        "new-siteB.txt",
        "new.txt",
        "old-siteB.txt",
        "old.txt",
    ]
    assert read(b.mnt / "new.txt") == b"theirs, newer"
    assert read(b.mnt / "new-siteB.txt") == b"ours too"
    assert read(b.mnt / "old.txt") == b"ours"
    assert os.path.isdir(b.mnt / "dirname")
    eventually(lambda: b.pending()["files"] == 0 and b.pending()["ops"] == 0, what="idle")
    assert b.stop() == 0


async def test_replayed_create_adopts_its_own_file(emulator, share_name, share, tmp_path):
    """A create applied before a crash, replayed at the next start, finds its own file under
    the name: it is taken as ours, not kept twice as a conflict."""
    from cache import BlockCache
    from fsync_fuse.attrs import FILE, Inode
    from fsync_fuse.conflicts import Conflicts
    from fsync_fuse.namespace import Namespace
    from remote.credentials import open_remote

    remote = await open_remote(emulator.share_url(share_name))
    cache = BlockCache.open(tmp_path / "c", max_bytes=1 << 26, share_id="t")
    try:
        ns = Namespace(cache.env)
        c = Conflicts(ns=ns, cache=cache, remote=remote, site="me")
        data = b"same content"
        rec = Inode(99, 1, "f.txt", FILE, size=len(data), mtime_ns=1_700_000_000_000_000_000)
        for where in ("f.txt", ".fsync-new-x-99"):
            await remote.create_file(where, len(data), last_write_ns=rec.mtime_ns)
            await remote.write(where, 0, data, keep_mtime=True)
        entry, path = await c.place(99, rec, ".fsync-new-x-99", "f.txt", movable=True)
        assert path == "f.txt" and c.count == 0
        names = await trio.to_thread.run_sync(share.walk)
        assert sorted(names) == ["f.txt"]
        # a different file under the name is a conflict: both are kept
        await remote.create_file(".fsync-new-x-99", len(data), last_write_ns=rec.mtime_ns)
        await remote.write(".fsync-new-x-99", 0, b"SAME CONTENT", keep_mtime=True)
        entry, path = await c.place(99, rec, ".fsync-new-x-99", "f.txt", movable=True)
        assert c.count == 1
        names = await trio.to_thread.run_sync(share.walk)
        assert sorted(names) == ["f-me.txt", "f.txt"]
    finally:
        cache.close()
        await remote.aclose()
