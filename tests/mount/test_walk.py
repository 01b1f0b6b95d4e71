"""A tree walk's next directories are listed ahead (fsync_fuse/listing.py `open_dir`): opening a
directory never listed lists the next sibling directories in the background; opening one of
those lists the one after the window; a lookup lists only what it needs. Counted in the
emulator's requests, on a real mount."""

from __future__ import annotations

import os
import time

from tests.mount.helpers import eventually


def test_a_walk_lists_the_next_directories_ahead(mounter, share_url, share, emulator):
    for i in range(12):
        share.put(f"walk/d{i:02d}/f.txt", b"x")
    share.put("walk/a file.txt", b"y")
    # no polling, listings fresh for a minute: every listing below is one the test causes
    m = mounter(share_url, "a", "cache-a", ["--poll-interval", "0", "--attr-timeout", "60"])

    def listings() -> int:
        return emulator.stats()["by_op"].get("ListFilesAndDirectories", 0)

    assert len(os.listdir(m.mnt / "walk")) == 13
    base = listings()
    assert os.listdir(m.mnt / "walk" / "d00") == ["f.txt"]
    # d00 itself, then d01-d04 ahead
    eventually(lambda: listings() == base + 5, what="d01-d04 listed ahead")
    time.sleep(0.5)
    assert listings() == base + 5  # no further than the window
    for i in range(1, 5):
        assert os.listdir(m.mnt / "walk" / f"d{i:02d}") == ["f.txt"]
    # each of those moved the window by one (d05-d08); none was listed a second time
    eventually(lambda: listings() == base + 9, what="d05-d08 listed ahead")
    time.sleep(0.5)
    assert listings() == base + 9
    # a path looked up (no opendir) lists its own directory and nothing ahead
    assert os.stat(m.mnt / "walk" / "d11" / "f.txt").st_size == 1
    time.sleep(0.5)
    assert listings() == base + 10
    assert m.stop() == 0
