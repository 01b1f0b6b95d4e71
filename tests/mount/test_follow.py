"""Files with local changes follow renames made on the share (issue 6): renamed in place, moved
to another directory, or inside a renamed directory, they are uploaded where the share has them
now, not re-created under the old name."""

from __future__ import annotations

import json
import os

from tests.mount.helpers import eventually, read, write

# polls every second; uploads only when asked (the changes stay dirty while the share moves)
SLOW = ["--poll-interval", "1", "--attr-timeout", "1", "--writeback-delay", "60"]


def drain(m) -> None:
    os.setxattr(m.mnt, "user.fsync.control", b"drain")
    m.wait_drained(60)


def status(m) -> dict:
    return json.loads(os.getxattr(m.mnt, "user.fsync.status"))


def test_dirty_files_follow_renames_made_on_the_share(mounter, share, share_url):
    share.put("d/f.txt", b"base f")
    share.put("d/sub/y.txt", b"base y")
    share.put("a/moved.txt", b"base m")
    share.client.create_directory("b")
    m = mounter(share_url, args=SLOW)
    B = m.mnt
    for p in ("d/f.txt", "d/sub/y.txt", "a/moved.txt"):
        assert read(B / p).startswith(b"base")
    assert os.listdir(B / "b") == []
    write(B / "d/f.txt", b"edited here, f")
    write(B / "d/sub/y.txt", b"edited here, y", "ab")
    write(B / "a/moved.txt", b"edited here, m")
    assert m.pending()["files"] == 3

    # elsewhere: a file renamed in place, a directory renamed, a file moved across directories
    share.client.get_file_client("d/f.txt").rename_file("d/g.txt")
    share.client.get_directory_client("d/sub").rename_directory("d/sub2")
    share.client.get_file_client("a/moved.txt").rename_file("b/moved.txt")

    eventually(lambda: sorted(os.listdir(B / "d")) == ["g.txt", "sub2"], what="renames seen")
    eventually(lambda: os.listdir(B / "b") == ["moved.txt"], what="move seen")
    assert os.listdir(B / "a") == []
    assert read(B / "d/g.txt") == b"edited here, f"
    assert read(B / "d/sub2/y.txt") == b"base yedited here, y"
    assert read(B / "b/moved.txt") == b"edited here, m"

    drain(m)
    assert share.get("d/g.txt") == b"edited here, f"
    assert share.get("d/sub2/y.txt") == b"base yedited here, y"
    assert share.get("b/moved.txt") == b"edited here, m"
    assert sorted(share.walk()) == [
        "a",
        "b",
        "b/moved.txt",
        "d",
        "d/g.txt",
        "d/sub2",
        "d/sub2/y.txt",
    ]
    assert status(m)["conflicts"] == 0
    assert m.stop() == 0


def test_a_renamed_file_changed_elsewhere_too_is_a_conflict(mounter, share, share_url):
    """Following a rename keeps the base version only if nothing but the name changed."""
    share.put("d/f.txt", b"base")
    m = mounter(share_url, args=[*SLOW, "--site-name", "here"])
    assert read(m.mnt / "d/f.txt") == b"base"
    write(m.mnt / "d/f.txt", b"ours")
    share.put("d/f.txt", b"theirs, longer")
    share.client.get_file_client("d/f.txt").rename_file("d/g.txt")
    eventually(lambda: os.listdir(m.mnt / "d") == ["g.txt"], what="rename seen")
    drain(m)
    got = {p: share.get(p) for p, is_dir in share.walk("d").items() if not is_dir}
    assert sorted(got.values()) == [b"ours", b"theirs, longer"], got
    assert status(m)["conflicts"] == 1
    assert m.stop() == 0
