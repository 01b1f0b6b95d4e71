"""Share snapshots inside the mount (`.snapshots/`), through real mounts on the emulator: the
old tree byte for byte with its modes and links, read-only everywhere, hidden from the root's
listing, following snapshots made and deleted by another client, and read through the block
cache within its bound."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

from fsync_fuse import snapnames
from tests.mount.helpers import Share, eventually, read, write
from tests.mount.test_cache_bound import Sampler
from tests.mount.test_operator import cli, ok

pytestmark = pytest.mark.mount

MiB = 1 << 20


def tree_of(top) -> dict[str, tuple]:
    """path -> (kind, mode, content digest or link target) of everything under `top`."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(read(p)).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest)
    return out


def make_tree(mnt) -> None:
    os.makedirs(mnt / "proj/src/deep")
    write(mnt / "proj/README", b"hello\n")
    write(mnt / "proj/src/main.c", os.urandom(300_000))
    write(mnt / "proj/src/deep/data.bin", os.urandom(3 * MiB + 17))
    write(mnt / "proj/empty", b"")
    os.chmod(mnt / "proj/src/main.c", 0o600)
    os.chmod(mnt / "proj/src/deep", 0o700)
    os.symlink("src/main.c", mnt / "proj/link")


def snapshot_now(share: Share) -> str:
    """A snapshot made by another client (the SDK); its name in the mount."""
    sid = share.client.create_snapshot()["snapshot"]
    return snapnames.token(sid)


def test_a_snapshot_shows_the_old_tree_read_only(mounter, share, share_url):
    m = mounter(share_url, args=["--cache-size", "64M"])
    make_tree(m.mnt)
    before = tree_of(m.mnt / "proj")
    m.wait_drained()
    name = snapshot_now(share)
    # change and delete things after the snapshot
    write(m.mnt / "proj/README", b"changed\n")
    os.unlink(m.mnt / "proj/src/deep/data.bin")
    os.chmod(m.mnt / "proj/src/main.c", 0o644)
    write(m.mnt / "proj/new.txt", b"new")

    snaps = m.mnt / ".snapshots"
    assert ".snapshots" not in os.listdir(m.mnt)  # hidden from the root's listing (ls -a)
    assert os.path.isdir(snaps)  # reachable by name
    assert os.listdir(snaps) == [name]
    old = snaps / name / "proj"
    assert tree_of(old) == before
    assert read(old / "README") == b"hello\n"
    assert read(m.mnt / "proj/README") == b"changed\n"  # the live file is its own

    # every change inside fails with EROFS
    attempts = [
        lambda: open(old / "README", "r+b"),
        lambda: open(old / "README", "wb"),
        lambda: write(old / "created", b"x"),
        lambda: os.mkdir(old / "d"),
        lambda: os.unlink(old / "README"),
        lambda: os.rmdir(old / "src/deep"),
        lambda: os.rename(old / "README", old / "README2"),
        lambda: os.rename(old / "README", m.mnt / "moved-out"),
        lambda: os.rename(m.mnt / "proj/new.txt", old / "moved-in"),
        lambda: os.chmod(old / "README", 0o600),
        lambda: os.utime(old / "README", (1, 1)),
        lambda: os.truncate(old / "README", 0),
        lambda: os.symlink("x", old / "l2"),
        lambda: os.setxattr(old / "README", "user.x", b"1"),
        lambda: os.mkdir(snaps / "@GMT-2020.01.01-00.00.00"),
        lambda: os.rename(snaps, m.mnt / "elsewhere"),
        lambda: os.rmdir(snaps),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno == errno.EROFS, (i, exc.value)
    assert read(old / "README") == b"hello\n"
    assert os.path.exists(m.mnt / "proj/new.txt")
    with pytest.raises(FileExistsError):
        os.mkdir(snaps)
    with pytest.raises(IsADirectoryError):  # the kernel's own answer
        os.rename(m.mnt / "proj/new.txt", snaps)
    m.wait_drained()  # the live changes reach the share (before the share is deleted)
    assert share.get("proj/README") == b"changed\n"


def test_snapshots_made_and_deleted_elsewhere_follow_the_share(mounter, share, share_url):
    ids: list[str] = []

    def name(sid: str) -> str:  # two snapshots within a second: the later one is NAME~2
        return {v: k for k, v in snapnames.names(ids).items()}[sid]

    share.put("doc.txt", b"version one")
    ids.append(share.client.create_snapshot()["snapshot"])
    m = mounter(share_url, args=["--cache-size", "64M", "--poll-interval", "2"])
    snaps = m.mnt / ".snapshots"
    assert os.listdir(snaps) == [name(ids[0])]
    share.put("doc.txt", b"version two!")
    ids.append(share.client.create_snapshot()["snapshot"])
    eventually(lambda: len(os.listdir(snaps)) == 2, timeout=10, what="the new snapshot")
    assert sorted(os.listdir(snaps)) == sorted(map(name, ids))
    assert read(snaps / name(ids[1]) / "doc.txt") == b"version two!"
    assert read(snaps / name(ids[0]) / "doc.txt") == b"version one"

    big = os.urandom(4 * MiB)
    share.put("big.bin", big)
    ids.append(share.client.create_snapshot()["snapshot"])
    third = name(ids[2])
    path = snaps / third / "big.bin"
    eventually(lambda: os.path.exists(path), timeout=10, what="the third snapshot")
    with open(path, "rb", buffering=0) as fh:
        assert fh.read(MiB) == big[:MiB]
        # the kernel forgets its pages: the next reads reach the mount
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        share.delete_snapshot(ids[2])
        eventually(
            lambda: third not in os.listdir(snaps), timeout=10, what="the deleted snapshot leaving"
        )
        # what the cache holds still reads; the rest fails cleanly
        fh.seek(0)
        assert fh.read(MiB) == big[:MiB]
        fh.seek(3 * MiB)
        with pytest.raises(OSError) as exc:
            fh.read(MiB)
        assert exc.value.errno == errno.EIO
    assert not os.path.exists(path)


def test_a_big_snapshot_file_reads_within_the_cache_bound(mounter, share, share_url):
    data = os.urandom(100 * MiB)
    share.put("big.bin", data)
    name = snapshot_now(share)
    share.put("big.bin", b"small now")
    m = mounter(share_url, args=["--cache-size", "32M"])
    snap_file = m.mnt / ".snapshots" / name / "big.bin"
    h = hashlib.sha256()
    with Sampler(m.cache_dir) as s, open(snap_file, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            h.update(chunk)
            assert read(m.mnt / "big.bin") == b"small now"  # live and snapshot keys apart
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert s.peak <= 32 * MiB, f"cache directory peaked at {s.peak / MiB:.1f} MiB"


def test_the_snapshot_directory_can_be_renamed_or_turned_off(mounter, share, share_url):
    share.put("a.txt", b"a")
    name = snapshot_now(share)
    m = mounter(share_url, name="m1", cache="c1", args=["--snapshot-dir", ".previous"])
    assert read(m.mnt / ".previous" / name / "a.txt") == b"a"
    assert not os.path.exists(m.mnt / ".snapshots")
    m2 = mounter(share_url, name="m2", cache="c2", args=["--no-snapshot-dir"])
    assert not os.path.exists(m2.mnt / ".snapshots")
    assert os.listdir(m2.mnt) == ["a.txt"]


# ---------------------------------------------------------------------- the commands


def one_line_error(r: subprocess.CompletedProcess[str], word: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1, (r.returncode, r.stderr)
    assert lines[0].startswith("fsync-fuse: error:") and word in lines[0], lines


def test_create_waits_for_uploads_and_keep_prunes_only_ours(mounter, share, share_url):
    m = mounter(share_url, args=["--writeback-delay", "60", "--poll-interval", "0"])
    foreign = share.client.create_snapshot()["snapshot"]  # Azure Backup's, say
    write(m.mnt / "queued.txt", b"not on the share yet")
    assert m.pending()["files"] == 1
    name = ok("snapshot", "create", m.mnt).stdout.strip()
    assert snapnames.is_token(name)
    assert m.pending()["files"] == 0  # it waited for the upload
    assert read(m.mnt / ".snapshots" / name / "queued.txt") == b"not on the share yet"

    for _ in range(5):
        ok("snapshot", "create", m.mnt, "--keep", "3")
    snaps = json.loads(ok("snapshot", "list", m.mnt, "--json").stdout)
    ours = [s for s in snaps if s["ours"]]
    assert len(ours) == 3 and all(s["site"] for s in ours)
    assert [s["id"] for s in snaps if not s["ours"]] == [foreign]
    assert sorted(os.listdir(m.mnt / ".snapshots")) == sorted(s["name"] for s in snaps)

    one_line_error(cli("snapshot", "delete", "@GMT-1999.01.01-00.00.00", m.mnt), "no snapshot")
    fname = snapnames.token(foreign)
    one_line_error(cli("snapshot", "delete", fname, m.mnt), "--force")
    out = json.loads(ok("snapshot", "delete", ours[0]["name"], m.mnt, "--json").stdout)
    assert out["id"] == ours[0]["id"]
    ok("snapshot", "delete", fname, m.mnt, "--force")
    left = json.loads(ok("snapshot", "list", m.mnt, "--json").stdout)
    assert [s["id"] for s in left] == [s["id"] for s in ours[1:]]
    one_line_error(cli("snapshot", "create", m.mnt / "queued.txt"), "root")


def test_versions_and_restore(mounter, share, share_url, tmp_path):
    m = mounter(share_url, args=["--writeback-delay", "60", "--poll-interval", "0"])
    os.makedirs(m.mnt / "docs/sub")
    names = []
    for v in (b"one", b"two two", b"three 3 3"):
        write(m.mnt / "docs/report.txt", v)
        write(m.mnt / "docs/sub/other.txt", v * 2)
        names.append(ok("snapshot", "create", m.mnt).stdout.strip())
    ok("snapshot", "create", m.mnt)  # nothing changed: the same version again
    got = json.loads(ok("versions", m.mnt / "docs/report.txt", "--json").stdout)
    assert [v["size"] for v in got["versions"]] == [3, 7, 9]
    assert len(got["versions"][2]["snapshots"]) == 2  # identical versions collapsed
    assert got["current"]["same_as"] == got["versions"][2]["snapshots"][-1]
    human = ok("versions", m.mnt / "docs/report.txt").stdout
    assert human.count("\n") == 4 and names[1] in human

    # a clean file comes back on the share side (no byte through this machine), at once
    r = json.loads(ok("restore", m.mnt / "docs/sub/other.txt", "--from", names[0], "--json").stdout)
    assert (r["files"], r["share_side"]) == (1, 1)
    assert read(m.mnt / "docs/sub/other.txt") == b"oneone"
    assert share.get("docs/sub/other.txt") == b"oneone"

    # a local edit not on the share yet is kept as a conflict copy
    write(m.mnt / "docs/report.txt", b"local edit")
    r = json.loads(ok("restore", m.mnt / "docs/report.txt", "--from", names[1], "--json").stdout)
    assert read(m.mnt / "docs/report.txt") == b"two two"  # at once
    assert r["share_side"] == 0 and len(r["kept_local_edits"]) == 1
    kept = r["kept_local_edits"][0]
    assert read(kept) == b"local edit" and os.path.basename(kept).startswith("report-")

    # a deleted tree comes back, elsewhere too
    shutil.rmtree(m.mnt / "docs/sub")
    ok("restore", m.mnt / "docs/sub", "--from", names[0])
    assert read(m.mnt / "docs/sub/other.txt") == b"oneone"
    ok("restore", m.mnt / "docs", "--from", names[2], "--to", m.mnt / "copy")
    assert read(m.mnt / "copy/sub/other.txt") == b"three 3 3" * 2
    one_line_error(cli("restore", m.mnt / "nothere", "--from", names[0]), "not in snapshot")
    one_line_error(cli("restore", m.mnt / "docs", "--from", "@GMT-1999.01.01-00.00.00"), "no")

    # what a fresh mount on an empty cache shows
    assert m.stop() == 0
    fresh = mounter(share_url, name="m2", cache="c2")
    assert read(fresh.mnt / "docs/report.txt") == b"two two"
    assert read(fresh.mnt / "docs/sub/other.txt") == b"oneone"
    assert read(fresh.mnt / kept.replace(str(m.mnt), "").lstrip("/")) == b"local edit"


def test_a_share_sas_cannot_list_snapshots_and_says_so(mounter, share, share_name, share_url):
    from datetime import UTC, datetime, timedelta

    from azure.storage.fileshare import ShareSasPermissions, generate_share_sas

    from remote.credentials import DEV_ACCOUNT, DEV_KEY

    sas = generate_share_sas(
        DEV_ACCOUNT,
        share_name,
        DEV_KEY,
        permission=ShareSasPermissions(read=True, write=True, create=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    share.put("a.txt", b"a")
    m = mounter(f"{share_url}?{sas}")
    assert read(m.mnt / "a.txt") == b"a"
    for args in (("snapshot", "list", m.mnt), ("snapshot", "create", m.mnt)):
        one_line_error(cli(*args), "may not")
    with pytest.raises(PermissionError):
        os.listdir(m.mnt / ".snapshots")
    assert "may not list the share's snapshots" in m.log()


def test_known_snapshots_stay_while_the_share_does_not_answer(mounter, share, share_url, emulator):
    share.put("a.txt", b"a")
    name = snapshot_now(share)
    m = mounter(share_url, args=["--poll-interval", "1", "--io-timeout", "5"])
    assert os.listdir(m.mnt / ".snapshots") == [name]
    assert read(m.mnt / ".snapshots" / name / "a.txt") == b"a"  # now in the cache
    emulator.set_faults(outage_seconds=60)
    try:
        time.sleep(1.5)  # the list is due again
        t0 = time.monotonic()
        assert os.listdir(m.mnt / ".snapshots") == [name]
        waited = time.monotonic() - t0
        assert read(m.mnt / ".snapshots" / name / "a.txt") == b"a"
    finally:
        emulator.clear_faults()
    print(f"ls .snapshots with the share down: {waited:.1f}s")
