"""The write-back queue across unmounts and crashes: `unmount` drains, `--lazy` resumes at
the next mount, and SIGKILL loses nothing that was closed or fsync'ed."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import lmdb
import pytest

from cache.index import key_int
from tests.mount.helpers import eventually

pytestmark = pytest.mark.mount

SLOW = ["--writeback-delay", "60"]  # nothing uploads by itself while the test looks


def test_unmount_drains(mounter, share, share_url):
    m = mounter(share_url, args=SLOW)
    rnd = random.Random(1)
    files = {f"d/f{i}": rnd.randbytes(rnd.randrange(1, 300_000)) for i in range(20)}
    (m.mnt / "d").mkdir()
    for p, data in files.items():
        (m.mnt / p).write_bytes(data)
    st = m.pending()
    assert st["files"] == 20 and st["bytes"] >= sum(map(len, files.values()))
    assert not share.exists("d/f0") or share.get("d/f0") != files["d/f0"]
    r = m.cli_unmount()
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(m.mnt)
    assert m.proc.wait(30) == 0
    for p, data in files.items():
        assert share.get(p) == data, p


def test_new_files_wait_for_the_writeback_delay(mounter, share, share_url):
    """A new small file, closed at once, is created on the share when the queue reaches its
    create, but its content waits for --writeback-delay like any other write (it used to go
    out with the create as soon as the mount was quiet for 0.3 s)."""
    m = mounter(share_url, args=SLOW)
    (m.mnt / "w").mkdir()
    (m.mnt / "w/new.txt").write_bytes(b"content" * 100)
    eventually(lambda: share.exists("w/new.txt"), what="the create on the share")
    assert share.get("w/new.txt") != b"content" * 100
    assert m.pending()["files"] == 1
    r = m.cli_unmount()  # draining sends it now
    assert r.returncode == 0, r.stderr
    assert share.get("w/new.txt") == b"content" * 100


def test_lazy_unmount_resumes_at_next_mount(mounter, share, share_url):
    m = mounter(share_url, args=SLOW)
    rnd = random.Random(2)
    files = {f"lazy/f{i}": rnd.randbytes(rnd.randrange(1, 200_000)) for i in range(10)}
    (m.mnt / "lazy").mkdir()
    for p, data in files.items():
        (m.mnt / p).write_bytes(data)
    os.rename(m.mnt / "lazy/f9", m.mnt / "lazy/renamed")
    files["lazy/renamed"] = files.pop("lazy/f9")
    r = m.cli_unmount("--lazy")
    assert r.returncode == 0, r.stderr
    assert m.proc.wait(30) == 0
    # Nothing was drained: content is still queued locally.
    assert not share.exists("lazy/f0") or share.get("lazy/f0") != files["lazy/f0"]

    m2 = mounter(share_url, name="again", cache="cache", args=["--writeback-delay", "0.1"])
    m2.wait_drained()
    for p, data in files.items():
        assert share.get(p) == data, p
    assert not share.exists("lazy/f9")
    assert m2.stop() == 0


def test_sigkill_loses_nothing_closed_or_fsynced(mounter, share, share_url):
    m = mounter(share_url, args=SLOW)
    rnd = random.Random(3)
    (m.mnt / "k").mkdir()
    closed = {}
    for i in range(150):
        data = rnd.randbytes(rnd.randrange(0, 64_000))
        (m.mnt / f"k/c{i}").write_bytes(data)
        closed[f"k/c{i}"] = data
    # a file fsync'ed but still open, and one being written (may or may not survive)
    synced = rnd.randbytes(3_000_000)
    fs = open(m.mnt / "k/synced", "wb")
    fs.write(synced)
    fs.flush()
    os.fsync(fs.fileno())
    fo = open(m.mnt / "k/open", "wb")
    fo.write(b"partial" * 1000)
    fo.flush()
    # and namespace changes after the writes
    os.rename(m.mnt / "k/c0", m.mnt / "k/c0-renamed")
    closed["k/c0-renamed"] = closed.pop("k/c0")
    os.unlink(m.mnt / "k/c1")
    del closed["k/c1"]
    # created and closed without a write, last: only its own close can have made it durable
    (m.mnt / "k/empty").write_bytes(b"")
    closed["k/empty"] = b""
    m.kill9()
    for f in (fs, fo):
        try:
            f.close()
        except OSError:
            pass

    m2 = mounter(share_url, name="after", cache="cache", args=["--writeback-delay", "0.1"])
    m2.wait_drained()
    for p, data in closed.items():
        assert share.get(p) == data, p
    assert share.get("k/synced") == synced
    assert not share.exists("k/c0") and not share.exists("k/c1")
    # the mount shows the same
    assert (m2.mnt / "k/c0-renamed").read_bytes() == closed["k/c0-renamed"]
    assert m2.stop() == 0


def test_sigkill_after_deletes_leaks_no_content(mounter, share, share_url):
    """Deleting files ends with the namespace purging their inodes and the cache dropping
    their content, in two transactions; a SIGKILL between them leaves cache records no inode
    owns, which the next mount deletes: no content leaks, nothing else is lost."""
    m = mounter(share_url, args=SLOW)
    (m.mnt / "g").mkdir()
    for i in range(5):
        with open(m.mnt / f"g/x{i}", "wb") as fh:
            fh.write(os.urandom(100_000))
            fh.flush()
            os.fsync(fh.fileno())  # durable claims: the delete must withdraw them first
    kept = os.urandom(50_000)
    (m.mnt / "g/kept").write_bytes(kept)
    for i in range(5):
        os.unlink(m.mnt / f"g/x{i}")
    Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel forgets the inodes now
    time.sleep(0.3)
    m.kill9()

    m2 = mounter(share_url, name="after", cache="cache", args=["--writeback-delay", "0.1"])
    m2.wait_drained()
    assert sorted(os.listdir(m2.mnt / "g")) == ["kept"]
    assert (m2.mnt / "g/kept").read_bytes() == kept
    kept_ino = os.stat(m2.mnt / "g/kept").st_ino
    assert m2.stop() == 0
    data = [p for p in (m2.cache_dir / "data").rglob("*") if p.is_file()]
    assert len(data) == 1, data  # kept's alone
    env = lmdb.open(str(m2.cache_dir / "index.lmdb"), max_dbs=64, subdir=True, readonly=True)
    try:
        with env.begin(db=env.open_db(b"cache.files", create=False)) as txn:
            records = [key_int(k) for k, _ in txn.cursor()]
    finally:
        env.close()
    assert records == [kept_ino]  # no record of a deleted file outlived the restart
    assert share.get("g/kept") == kept and not share.exists("g/x0")


def test_sigterm_drains_then_unmounts(mounter, share, share_url):
    import signal

    m = mounter(share_url, args=SLOW)
    (m.mnt / "t").mkdir()
    for i in range(5):
        (m.mnt / f"t/f{i}").write_bytes(b"term %d" % i)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(60) == 0
    assert not os.path.ismount(m.mnt)
    for i in range(5):
        assert share.get(f"t/f{i}") == b"term %d" % i
