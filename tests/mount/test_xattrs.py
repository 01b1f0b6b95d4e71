"""Extended attributes (fsync_fuse/xattrs.py): `user.*` names kept in the share's metadata,
seen at every site and after a remount on an empty cache; the share's 8 KiB of metadata per
entry is never exceeded (E2BIG, ENOSPC); other namespaces are refused; rsync -X round-trips."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from fsync_fuse import dosattrib, xattrs
from remote import naming
from tests.mount.helpers import eventually

pytestmark = pytest.mark.mount

FAST = ["--writeback-delay", "0.2"]


def _user(path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path)}


def test_user_attributes_round_trip_across_sites(mounter, share, share_url):
    """Set on a file, a directory and a new directory's file; removed; changed: the share's
    metadata holds them, and a second mount with an empty cache shows exactly the same."""
    m = mounter(share_url, args=FAST)
    os.mkdir(m.mnt / "docs")
    (m.mnt / "docs/a.txt").write_bytes(b"content")
    os.setxattr(m.mnt / "docs/a.txt", "user.tag", b"red")
    os.setxattr(m.mnt / "docs/a.txt", "user.xdg.comment", "ünïcødé ✓".encode())
    os.setxattr(m.mnt / "docs/a.txt", "user.binary", bytes(range(256)))
    os.setxattr(m.mnt / "docs/a.txt", "user.empty", b"")
    os.setxattr(m.mnt / "docs", "user.Project", b"Apollo")
    os.setxattr(m.mnt / "docs", "user.project", b"lower case is another name")
    os.setxattr(m.mnt / "docs/a.txt", "user.gone", b"soon")
    os.removexattr(m.mnt / "docs/a.txt", "user.gone")
    with pytest.raises(OSError) as exc:
        os.removexattr(m.mnt / "docs/a.txt", "user.gone")
    assert exc.value.errno == errno.ENODATA
    want_file = {
        "user.binary": bytes(range(256)),
        "user.empty": b"",
        "user.tag": b"red",
        "user.xdg.comment": "ünïcødé ✓".encode(),
    }
    want_dir = {"user.Project": b"Apollo", "user.project": b"lower case is another name"}
    assert _user(m.mnt / "docs/a.txt") == want_file
    assert _user(m.mnt / "docs") == want_dir
    m.wait_drained(60)
    # on the share: one metadata key each, the entries marked for other mounts' listings
    meta = share.props("docs/a.txt").metadata
    assert {xattrs.name_of(k) for k in meta if xattrs.name_of(k)} == set(want_file), meta
    assert "NoScrubData" in str(share.props("docs/a.txt").file_attributes)

    m2 = mounter(share_url, name="site2", cache="cache2", args=FAST)
    assert _user(m2.mnt / "docs/a.txt") == want_file
    assert _user(m2.mnt / "docs") == want_dir
    assert (m2.mnt / "docs/a.txt").read_bytes() == b"content"
    # a change at the second site reaches the first (its poll, or its next listing)
    os.setxattr(m2.mnt / "docs/a.txt", "user.tag", b"green")
    m2.wait_drained(60)
    assert m2.stop() == 0
    assert m.stop() == 0
    m3 = mounter(share_url, name="site3", cache="cache3")
    assert os.getxattr(m3.mnt / "docs/a.txt", "user.tag") == b"green"
    assert m3.stop() == 0


def test_attributes_survive_chmod_rename_and_writes(mounter, share, share_url):
    m = mounter(share_url, args=FAST)
    p = m.mnt / "f.bin"
    p.write_bytes(b"one")
    os.setxattr(p, "user.k", b"v")
    os.chmod(p, 0o600)
    os.rename(p, m.mnt / "g.bin")
    with open(m.mnt / "g.bin", "ab") as fh:
        fh.write(b" two")
    m.wait_drained(60)
    assert share.get("g.bin") == b"one two"
    assert m.stop() == 0
    m2 = mounter(share_url, name="fresh", cache="fresh-cache")
    st = os.stat(m2.mnt / "g.bin")
    assert st.st_mode & 0o777 == 0o600
    assert os.getxattr(m2.mnt / "g.bin", "user.k") == b"v"
    assert m2.stop() == 0


def test_the_share_limit_is_refused_before_anything_is_kept(mounter, share, share_url):
    """A value that can never fit: E2BIG; values that together would pass the share's
    8 KiB: ENOSPC for the one that would; what was accepted is all on the share."""
    m = mounter(share_url, args=FAST)
    p = m.mnt / "full.txt"
    p.write_bytes(b"x")
    with pytest.raises(OSError) as exc:
        os.setxattr(p, "user.huge", os.urandom(naming.MAX_METADATA))
    assert exc.value.errno == errno.E2BIG
    kept = {}
    with pytest.raises(OSError) as exc:
        for i in range(20):
            name, value = f"user.part{i}", os.urandom(1000)
            os.setxattr(p, name, value)
            kept[name] = value
    assert exc.value.errno == errno.ENOSPC
    assert 4 <= len(kept) < 8, len(kept)
    assert _user(p) == kept
    m.wait_drained(60)
    meta = share.props("full.txt").metadata
    assert naming.metadata_size(meta) <= naming.MAX_METADATA
    assert m.stop() == 0
    m2 = mounter(share_url, name="fresh", cache="fresh-cache")
    assert _user(m2.mnt / "full.txt") == kept
    assert m2.stop() == 0


def test_other_namespaces_and_control_names(mounter, share_url):
    m = mounter(share_url, args=FAST)
    p = m.mnt / "n.txt"
    p.write_bytes(b"n")
    for name in ("trusted.x", "security.x"):
        with pytest.raises(OSError) as exc:
            os.setxattr(p, name, b"1")
        assert exc.value.errno == errno.ENOTSUP, name
        with pytest.raises(OSError) as exc:
            os.getxattr(p, name)
        assert exc.value.errno == errno.ENODATA, name
    # the control surface answers by name but is never listed (nor stored)
    state = os.getxattr(p, "user.fsync.state").decode().split(",")[0]
    assert state in ("dirty", "local"), state
    assert os.listxattr(p) == [] and os.listxattr(m.mnt) == []
    assert os.getxattr(m.mnt, "user.fsync.pid").decode() == str(m.proc.pid)
    with pytest.raises(OSError) as exc:
        os.setxattr(p, "user.fsync.anything", b"1")
    assert exc.value.errno == errno.ENOTSUP
    assert m.stop() == 0


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")
def test_rsync_X_into_the_mount_then_nothing_to_do(mounter, share_url, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(30):
        f = src / ("sub" if i % 2 else "") / f"f{i}.txt"
        f.write_bytes(os.urandom(100 + i))
        if i % 3 == 0:
            os.setxattr(f, "user.checksum", str(i).encode() * 5)
        if i % 5 == 0:
            os.setxattr(f, "user.mime_type", b"text/plain")
    os.setxattr(src / "sub", "user.dir", b"yes")
    m = mounter(share_url, args=FAST)
    r = subprocess.run(
        ["rsync", "-aX", f"{src}/", f"{m.mnt}/tree/"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    m.wait_drained(60)
    assert m.stop() == 0
    m2 = mounter(share_url, name="fresh", cache="fresh-cache")
    r = subprocess.run(
        ["rsync", "-anX", "--itemize-changes", f"{src}/", f"{m2.mnt}/tree/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", r.stdout
    assert m2.stop() == 0


def test_an_attribute_set_at_another_site_is_seen(mounter, share, share_url):
    """The second mount listed the file before the first set the attribute; once its poll
    sees the change, it reads the new metadata."""
    m1 = mounter(share_url, args=FAST)
    (m1.mnt / "shared.txt").write_bytes(b"s")
    m1.wait_drained(60)
    m2 = mounter(share_url, name="m2", cache="c2", args=[*FAST, "--poll-interval", "1"])
    assert os.listxattr(m2.mnt / "shared.txt") == []
    os.setxattr(m1.mnt / "shared.txt", "user.seen", b"by m2")
    m1.wait_drained(60)
    eventually(
        lambda: "user.seen" in os.listxattr(m2.mnt / "shared.txt"),
        timeout=30,
        what="the attribute at the other site",
    )
    assert os.getxattr(m2.mnt / "shared.txt", "user.seen") == b"by m2"
    assert m2.stop() == 0 and m1.stop() == 0


def test_a_file_read_only_on_the_share_takes_local_changes(mounter, share, share_url, emulator):
    """A client of the share made files read-only: the share refuses Put Range and Delete
    File on them (ReadOnlyAttribute). A local write and a local removal are not refused
    (ReadOnly is an attribute, which Samba enforces for its clients: dosattrib.py); the
    write-back clears it for the change and puts it back after the write, and the removal
    goes through. The branch's Samba sees the attribute meanwhile (user.DOSATTRIB)."""
    m = mounter(share_url, args=[*FAST, "--poll-interval", "1"])
    (m.mnt / "doc.txt").write_bytes(b"v1")
    (m.mnt / "old.txt").write_bytes(b"old")
    m.wait_drained(60)
    for name in ("doc.txt", "old.txt"):
        share.set_attributes(name, share.attributes(name) | {"ReadOnly"})

    def read_only_here(name: str) -> bool:
        try:
            blob = os.getxattr(m.mnt / name, "user.DOSATTRIB")
        except OSError:
            return False
        return bool(dosattrib.attrib_of(blob) or 0) & 1 == 1

    for name in ("doc.txt", "old.txt"):
        eventually(lambda n=name: read_only_here(n), timeout=30, what="the share's ReadOnly here")
    before = emulator.stats()["by_status"].get("409", 0)
    with open(m.mnt / "doc.txt", "r+b") as f:
        f.write(b"v2, longer")
    os.unlink(m.mnt / "old.txt")
    m.wait_drained(60)
    # the write cleared it first; the removal met the refusal once, then cleared it
    assert emulator.stats()["by_status"].get("409", 0) - before == 1
    assert share.get("doc.txt") == b"v2, longer"
    assert "ReadOnly" in share.attributes("doc.txt")
    assert not share.exists("old.txt")
    assert not [n for n in os.listdir(m.mnt) if n not in ("doc.txt",)]  # no conflict copy
    assert m.stop() == 0


def test_the_kernels_probe_before_every_write_is_answered_without_python(mounter, share_url):
    """Before each write(2) the kernel asks a FUSE filesystem for security.capability; the
    pyfuse3 build answers it in C (scripts/pyfuse3_patches.py, FS.no_file_capabilities),
    so the daemon's handler, which logs every request it gets with --debug, never sees it."""
    m = mounter(share_url, args=["--debug"])
    with open(m.mnt / "written.bin", "wb") as f:
        for _ in range(20):
            f.write(b"x" * 100)
            f.flush()  # (a write(2) each)
    with pytest.raises(OSError) as ei:
        os.getxattr(m.mnt / "written.bin", "security.capability")
    assert ei.value.errno == errno.ENODATA
    with pytest.raises(OSError):
        os.getxattr(m.mnt / "written.bin", "user.absent")
    assert m.stop() == 0
    log = m.log_path.read_text()
    assert "getxattr user.absent" in log  # the handler logs what reaches it
    assert "getxattr security.capability" not in log
