"""Names and paths the share cannot hold are refused at the system call (ENAMETOOLONG), so
nothing is accepted locally that the share would refuse later: names over 255 bytes of UTF-8
on every call, paths over the share's 2,048 characters or 250 levels (remote/naming.py),
including a directory rename that would push something below it over."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from remote import naming

pytestmark = pytest.mark.mount

FAST = ["--writeback-delay", "0.1"]


def refused(call, *args) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def test_names_over_255_bytes(mounter, share, share_url):
    m = mounter(share_url, args=FAST)
    d = m.mnt
    ok = "n" * 255
    (d / ok).write_bytes(b"x")
    (d / "src").write_bytes(b"y")
    os.mkdir(d / "dir")
    for long in ("n" * 256, "é" * 128, "é" * 127 + "nn"):  # 256, 256 and 256 bytes
        assert len(long.encode()) == 256
        p = str(d / long)
        assert refused(os.stat, p) == errno.ENAMETOOLONG
        assert refused(os.open, p, os.O_CREAT | os.O_WRONLY, 0o644) == errno.ENAMETOOLONG
        assert refused(os.mkdir, p) == errno.ENAMETOOLONG
        assert refused(os.symlink, "target", p) == errno.ENAMETOOLONG
        assert refused(os.mknod, p, stat.S_IFREG | 0o644) == errno.ENAMETOOLONG
        assert refused(os.rename, d / "src", p) == errno.ENAMETOOLONG
        assert refused(os.link, d / "src", p) == errno.ENAMETOOLONG
        assert refused(os.unlink, p) == errno.ENAMETOOLONG
        assert refused(os.rmdir, p) == errno.ENAMETOOLONG
    # 255 bytes of two-byte characters plus one byte fit
    fits = "é" * 127 + "n"
    (d / "dir" / fits).write_bytes(b"z")
    m.wait_drained()
    assert share.get(ok) == b"x"
    assert share.get(f"dir/{fits}") == b"z"
    assert m.stop() == 0


def test_paths_the_share_cannot_hold(mounter, share, share_url):
    """Directories nested up to the path limit, files near it, a too-deep chain, and a
    directory rename that would push a file below it over the limit."""
    m = mounter(share_url, args=FAST)
    comp = "d" * 200
    parts: list[str] = []
    while True:  # nest until the share's limit says no
        p = m.mnt.joinpath(*parts, comp)
        try:
            os.mkdir(p)
        except OSError as exc:
            assert exc.errno == errno.ENAMETOOLONG
            break
        parts.append(comp)
    assert naming.path_units([*parts, comp]) > naming.MAX_PATH >= naming.path_units(parts)
    deep = m.mnt.joinpath(*parts)
    room = naming.MAX_PATH - naming.path_units(parts) - 1  # for one more name
    (deep / ("f" * room)).write_bytes(b"long name")  # exactly at the limit
    assert refused(open, deep / ("g" * (room + 1)), "wb") == errno.ENAMETOOLONG
    # a new file is created on the share under a temporary name (~27 characters) first: in a
    # directory with room for 20 more characters, even a one-letter file cannot be created
    # there, while a one-letter directory (created directly) can
    tight = deep / ("t" * (room - 21))
    os.mkdir(tight)
    assert refused(open, tight / "h", "wb") == errno.ENAMETOOLONG
    os.mkdir(tight / "h")
    # renaming the top directory to a longer name would push the file over
    top = m.mnt / comp
    assert refused(os.rename, top, m.mnt / ("e" * 250)) == errno.ENAMETOOLONG
    os.rename(top, m.mnt / ("e" * 200))  # same length: fine
    # depth: 250 levels at most
    chain = m.mnt / "c"
    os.mkdir(chain)
    level = 1
    while True:
        chain = chain / "c"
        try:
            os.mkdir(chain)
        except OSError as exc:
            assert exc.errno == errno.ENAMETOOLONG
            break
        level += 1
    assert level == naming.MAX_DEPTH
    r = m.cli_unmount(timeout=300)  # returns: nothing is stuck
    assert r.returncode == 0, r.stderr
    walked = share.walk()
    assert not [n for n in walked if n.rsplit("/", 1)[-1].startswith(".fsync-")]
    kept = "/".join(["e" * 200, *parts[1:], "f" * room])
    assert share.get(kept) == b"long name"
    assert ("c/" * level).rstrip("/") in walked
