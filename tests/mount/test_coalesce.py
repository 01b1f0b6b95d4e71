"""The queue coalesces what never reached the share (fsync_fuse/outbox.py, "Coalescing"): an
editor's save (a temporary file renamed over its file) costs one create of the final
content, a file or directory made and removed again costs nothing, and chown, chmod and
utimens of an entry whose create has not begun go with that create. Order, crash safety and
the never-overwrite rule stay as they are."""

from __future__ import annotations

import os

import pytest

from tests.mount.helpers import eventually

pytestmark = pytest.mark.mount

SLOW = ["--writeback-delay", "60"]  # nothing goes out by itself while the test looks


def _delta(emulator, before: dict) -> dict:
    after = emulator.stats()["by_op"]
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _save(d, name: str, data: bytes, i: int) -> None:
    """What an editor does: write a temporary file, fsync it, rename it over the file."""
    tmp = d / f".{name}.swp{i}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, d / name)


def test_atomic_saves_leave_one_create_per_file(mounter, share, share_url, emulator):
    """200 saves of 5 files, two of which were on the share before: once quiet, the queue
    holds one create per file, and the share receives each file's last version in three
    calls, replacing the old file where there was one, with no temporary name left."""
    share.put("proj/old0.txt", b"the share's version 0")
    share.put("proj/old1.txt", b"the share's version 1")
    m = mounter(share_url, args=SLOW)
    d = m.mnt / "proj"
    assert sorted(os.listdir(d)) == ["old0.txt", "old1.txt"]
    before = emulator.stats()["by_op"]
    names = ["old0.txt", "old1.txt", "new0.txt", "new1.txt", "new2.txt"]
    last = {}
    for i in range(200):
        name = names[i % len(names)]
        last[name] = f"version {i} of {name}\n".encode() * (1 + i % 7)
        _save(d, name, last[name], i)
    assert m.pending()["ops"] == len(names), m.pending()
    r = m.cli_unmount()  # draining sends it now
    assert r.returncode == 0, r.stderr
    delta = _delta(emulator, before)
    calls = {op: delta.get(op, 0) for op in ("CreateFile", "PutRange", "RenameFile")}
    assert calls == {"CreateFile": 5, "PutRange": 5, "RenameFile": 5}, delta
    assert not delta.get("DeleteFile"), delta
    for name, data in last.items():
        assert share.get(f"proj/{name}") == data, name
    assert sorted(share.walk()) == ["proj", *sorted(f"proj/{n}" for n in names)]


def test_made_and_removed_before_the_share_saw_it_costs_nothing(
    mounter, share, share_url, emulator
):
    """A temporary file, a scratch directory with a file in it, a symlink: made and
    removed again while their creates wait. The share hears nothing of them."""
    m = mounter(share_url, args=SLOW)
    os.mkdir(m.mnt / "keep")
    eventually(lambda: share.exists("keep"), what="the directory on the share")
    before = emulator.stats()["by_op"]
    for i in range(20):
        (m.mnt / f"keep/scratch{i}").write_bytes(b"x" * 1000)
        os.unlink(m.mnt / f"keep/scratch{i}")
    os.makedirs(m.mnt / "keep/build/obj")
    (m.mnt / "keep/build/obj/a.o").write_bytes(b"\x7fELF")
    os.chmod(m.mnt / "keep/build/obj", 0o700)
    os.unlink(m.mnt / "keep/build/obj/a.o")
    os.rmdir(m.mnt / "keep/build/obj")
    os.rmdir(m.mnt / "keep/build")
    os.symlink("nowhere", m.mnt / "keep/link")
    os.unlink(m.mnt / "keep/link")
    assert m.pending()["ops"] == 0, m.pending()
    r = m.cli_unmount()
    assert r.returncode == 0, r.stderr
    delta = _delta(emulator, before)
    made = ("CreateFile", "CreateDirectory", "DeleteFile", "DeleteDirectory", "RenameFile")
    assert not any(delta.get(op) for op in made), delta
    assert sorted(share.walk()) == ["keep"]


def test_attribute_changes_go_with_a_create_not_begun(mounter, share, share_url, emulator):
    """tar restores a directory's and a symlink's owner, mode and times right after making
    them: those changes ride on the create (no Set Properties of their own), and the share
    shows them."""
    m = mounter(share_url, args=SLOW)
    before = emulator.stats()["by_op"]
    os.mkdir(m.mnt / "t")
    os.chown(m.mnt / "t", 1234, 5678)
    os.chmod(m.mnt / "t", 0o750)
    os.symlink("target/of/link", m.mnt / "t/ln")
    os.chown(m.mnt / "t/ln", 42, 43, follow_symlinks=False)
    os.utime(m.mnt / "t/ln", ns=(1_500_000_000 * 10**9,) * 2, follow_symlinks=False)
    os.utime(m.mnt / "t", ns=(1_600_000_000 * 10**9,) * 2)
    assert m.pending()["ops"] == 2, m.pending()
    r = m.cli_unmount()
    assert r.returncode == 0, r.stderr
    delta = _delta(emulator, before)
    assert delta.get("CreateDirectory") == 1 and delta.get("CreateFile") == 1, delta
    # one Set Directory Properties: the root's mtime (an entry was added to it); none for
    # t, made with its last mtime, owner and mode
    assert delta.get("SetDirectoryProperties", 0) <= 1, delta
    for op in ("SetDirectoryMetadata", "SetFileProperties", "SetFileMetadata"):
        assert not delta.get(op), delta
    dp = share.dir_props("t")
    assert dp.metadata.get("fsyncmode") == "750", dp.metadata
    assert (dp.metadata.get("fsyncuid"), dp.metadata.get("fsyncgid")) == ("1234", "5678")
    assert int(dp.last_write_time.timestamp()) == 1_600_000_000
    lp = share.props("t/ln")
    assert (lp.metadata.get("fsyncuid"), lp.metadata.get("fsyncgid")) == ("42", "43")
    assert int(lp.last_write_time.timestamp()) == 1_500_000_000

    m2 = mounter(share_url, name="fresh", cache="fresh-cache")
    st = os.lstat(m2.mnt / "t/ln")
    assert os.readlink(m2.mnt / "t/ln") == "target/of/link"
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (42, 43, 1_500_000_000 * 10**9)
    st = os.stat(m2.mnt / "t")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o750)
    assert m2.stop() == 0


def test_a_save_under_a_name_taken_elsewhere_keeps_both(mounter, share, share_url, emulator):
    """A new file renamed to a name this mount believes free, while another site put a file
    there: the coalesced create does not replace it (never-overwrite), both are kept."""
    m = mounter(share_url, args=SLOW)
    os.mkdir(m.mnt / "w")
    eventually(lambda: share.exists("w"), what="the directory on the share")
    assert os.listdir(m.mnt / "w") == []
    share.put("w/report.txt", b"written at the other site")
    _save(m.mnt / "w", "report.txt", b"written here", 1)
    r = m.cli_unmount()
    assert r.returncode == 0, r.stderr
    got = {p: share.get(p) for p, is_dir in share.walk("w").items() if not is_dir}
    # both kept (the newer, ours, keeps the name: conflicts.py)
    assert sorted(got.values()) == [b"written at the other site", b"written here"], got
    assert len(got) == 2 and "w/report.txt" in got, got


def test_coalesced_saves_survive_sigkill(mounter, share, share_url):
    """Killed with the coalesced creates queued (and some files written after them): the
    next mount sends the last version of each, nothing else."""
    share.put("s/kept.txt", b"old")
    m = mounter(share_url, args=SLOW)
    d = m.mnt / "s"
    assert os.listdir(d) == ["kept.txt"]
    last = {}
    for i in range(60):
        name = ("kept.txt", "a.txt", "b.txt")[i % 3]
        last[name] = f"{name} {i}\n".encode() * 40
        _save(d, name, last[name], i)
    (d / "scratch").write_bytes(b"gone")
    os.unlink(d / "scratch")
    m.kill9()
    m2 = mounter(share_url, name="after", cache="cache", args=["--writeback-delay", "0.1"])
    m2.wait_drained()
    for name, data in last.items():
        assert share.get(f"s/{name}") == data, name
        assert (m2.mnt / "s" / name).read_bytes() == data
    assert sorted(share.walk("s")) == ["s/a.txt", "s/b.txt", "s/kept.txt"]
    assert m2.stop() == 0


def test_a_rename_onto_a_name_taken_elsewhere_keeps_both(mounter, share, share_url):
    """The same for a file already on the share, renamed here to a name another site took
    since this mount listed: both kept, and the queue goes on (it used to retry forever)."""
    m = mounter(share_url, args=["--writeback-delay", "0.2"])
    os.mkdir(m.mnt / "r")
    (m.mnt / "r/mine.txt").write_bytes(b"mine")
    m.wait_drained(60)
    share.put("r/name.txt", b"theirs")
    os.rename(m.mnt / "r/mine.txt", m.mnt / "r/name.txt")
    (m.mnt / "r/after.txt").write_bytes(b"queued after it")
    m.wait_drained(60)
    got = {p: share.get(p) for p, is_dir in share.walk("r").items() if not is_dir}
    assert sorted(got.values()) == [b"mine", b"queued after it", b"theirs"], got
    assert "r/mine.txt" not in got and got["r/after.txt"] == b"queued after it", got
    assert m.stop() == 0
