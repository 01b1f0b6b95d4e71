"""POSIX attributes on the share: stored (and marked) only where they differ from the defaults,
so a fresh mount lists a tree without a `stat` per entry (attrs.py)."""

from __future__ import annotations

import os
import stat
import subprocess

MARK = "NoScrubData"


def marked(props) -> bool:
    return MARK in str(props.file_attributes)


def props_calls(emulator) -> int:
    ops = emulator.stats()["by_op"]
    return ops.get("GetFileProperties", 0) + ops.get("GetDirectoryProperties", 0)


def test_posix_attributes_are_stored_only_where_needed(mounter, share, share_url, emulator):
    share.put("sdk/foreign.txt", b"from the sdk")
    share.client.get_file_client("sdk/foreign.txt").set_file_metadata({"origin": "sdk"})
    share.put("sdk/plain-sdk.txt", b"plain from the sdk")
    m = mounter(share_url)
    mnt = m.mnt
    for name, mode in (("plain.txt", 0o644), ("secret.txt", 0o600), ("tool.sh", 0o755)):
        (mnt / name).write_bytes(name.encode())
        os.chmod(mnt / name, mode)
    os.mkdir(mnt / "d")
    os.chmod(mnt / "d", 0o755)
    (mnt / "d/inner.txt").write_bytes(b"inner")
    os.chmod(mnt / "d/inner.txt", 0o644)
    os.mkdir(mnt / "private")
    os.chmod(mnt / "private", 0o700)
    os.symlink("plain.txt", mnt / "link")
    (mnt / "owned.txt").write_bytes(b"owned")
    os.chmod(mnt / "owned.txt", 0o644)
    os.chown(mnt / "owned.txt", 1234, 4321)
    os.chmod(mnt / "sdk/foreign.txt", 0o640)  # known here from a listing only
    m.wait_drained()

    for name in ("plain.txt", "d/inner.txt", "sdk/plain-sdk.txt"):
        p = share.props(name)
        assert not marked(p) and "fsyncmode" not in p.metadata, name
    assert not marked(share.dir_props("d")) and "fsyncmode" not in share.dir_props("d").metadata
    for name, mode in (("secret.txt", "600"), ("tool.sh", "755"), ("owned.txt", "644")):
        p = share.props(name)
        assert marked(p) and p.metadata["fsyncmode"] == mode, name
    assert share.props("owned.txt").metadata["fsyncuid"] == "1234"
    assert marked(share.dir_props("private"))
    assert share.dir_props("private").metadata["fsyncmode"] == "700"
    link = share.props("link")
    assert marked(link) and link.metadata["fsynctype"] == "symlink"
    foreign = share.props("sdk/foreign.txt")
    assert marked(foreign), "chmod of a listed-only file sets the marker"
    assert foreign.metadata["origin"] == "sdk", "other tools' metadata is kept"
    assert foreign.metadata["fsyncmode"] == "640"
    assert m.stop() == 0

    # A fresh mount reads the attributes of the marked entries only.
    before = props_calls(emulator)
    m2 = mounter(share_url, name="mnt2", cache="cache2")
    seen: dict[str, os.stat_result] = {}
    for root, dirs, files in os.walk(m2.mnt):
        for name in dirs + files:
            p = os.path.join(root, name)
            seen[os.path.relpath(p, m2.mnt)] = os.lstat(p)
    calls = props_calls(emulator) - before
    marked_entries = ["secret.txt", "tool.sh", "owned.txt", "private", "link", "sdk/foreign.txt"]
    # + the root, read twice at mount (the share check, then its metadata)
    assert calls == len(marked_entries) + 2, f"{calls} property reads for {len(seen)} entries"
    me = (os.getuid(), os.getgid())
    want = {
        "plain.txt": (stat.S_IFREG | 0o644, me),
        "secret.txt": (stat.S_IFREG | 0o600, me),
        "tool.sh": (stat.S_IFREG | 0o755, me),
        "d": (stat.S_IFDIR | 0o755, me),
        "d/inner.txt": (stat.S_IFREG | 0o644, me),
        "private": (stat.S_IFDIR | 0o700, me),
        "link": (stat.S_IFLNK | 0o777, me),
        "owned.txt": (stat.S_IFREG | 0o644, (1234, 4321)),
        "sdk": (stat.S_IFDIR | 0o755, me),
        "sdk/foreign.txt": (stat.S_IFREG | 0o640, me),
        "sdk/plain-sdk.txt": (stat.S_IFREG | 0o644, me),
    }
    assert {p: (s.st_mode, (s.st_uid, s.st_gid)) for p, s in seen.items()} == want
    assert os.readlink(m2.mnt / "link") == "plain.txt"

    # Back to the defaults: our keys and the marker go, other tools' keys stay.
    os.chmod(m2.mnt / "secret.txt", 0o644)
    os.chmod(m2.mnt / "private", 0o755)
    os.chmod(m2.mnt / "sdk/foreign.txt", 0o644)
    m2.wait_drained()
    p = share.props("secret.txt")
    assert not marked(p) and "fsyncmode" not in p.metadata
    d = share.dir_props("private")
    assert not marked(d) and "fsyncmode" not in d.metadata
    foreign = share.props("sdk/foreign.txt")
    assert not marked(foreign) and foreign.metadata == {"origin": "sdk"}
    assert m2.stop() == 0


def test_setattr_sends_only_what_the_share_does_not_have(mounter, share, share_url, emulator):
    """tar restores a directory's owner, mode and time one call each, moments after making
    it: the share gets only the properties it does not have yet (a time: Set Directory
    Properties alone; a mode: Set Directory Metadata alone; the same mode again: nothing)."""
    m = mounter(share_url, args=["--writeback-delay", "0.2"])
    d = m.mnt / "d"
    os.mkdir(d)
    os.chmod(d, 0o700)
    m.wait_drained(60)

    def calls_for(change) -> dict:
        before = emulator.stats()["by_op"]
        change()
        m.wait_drained(60)
        after = emulator.stats()["by_op"]
        return {
            k: after.get(k, 0) - before.get(k, 0)
            for k in ("SetDirectoryProperties", "SetDirectoryMetadata")
        }

    def touch_m() -> None:  # the mtime alone (an access time set is metadata: fsyncatime)
        subprocess.run(["touch", "-m", "-d", "@1600000000", str(d)], check=True)

    assert calls_for(touch_m) == {
        "SetDirectoryProperties": 1,
        "SetDirectoryMetadata": 0,
    }
    assert calls_for(lambda: os.chmod(d, 0o750)) == {
        "SetDirectoryProperties": 0,
        "SetDirectoryMetadata": 1,
    }
    assert calls_for(lambda: os.chown(d, 0, 0)) == {
        "SetDirectoryProperties": 0,
        "SetDirectoryMetadata": 0,
    }
    p = share.dir_props("d")
    assert p.metadata.get("fsyncmode") == "750"
    assert int(p.last_write_time.timestamp()) == 1_600_000_000
    assert m.stop() == 0
