"""Round trips through a real mount: the share and the mount agree, both ways, and a second
mount on an empty cache sees everything the first one wrote."""

from __future__ import annotations

import ctypes
import errno
import os
import random
import stat

import pytest

pytestmark = pytest.mark.mount

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
OLD_MTIME = 1_600_000_000_123_456_700  # on the share's 100 ns grid


def renameat2(src, dst, flags: int) -> None:
    at_fdcwd = -100
    if _libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def expect_errno(code: int, fn, *args) -> None:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == code, info.value


def snapshot(root) -> dict:
    """path -> ("d", mode) | ("f", bytes, mode, mtime_ns) | ("l", target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as fh:
                    out[rel] = ("f", fh.read(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def test_roundtrip(mounter, share, share_url):
    rnd = random.Random(4)
    pre = {
        "a.txt": b"hello\n",
        "empty": b"",
        "sub/deep/big.bin": rnd.randbytes(3 * 1024 * 1024 + 17),
        "sub/x.bin": rnd.randbytes(70_000),
    }
    for path, data in pre.items():
        share.put(path, data)

    m = mounter(share_url, args=["--writeback-delay", "0.2"])
    mnt = m.mnt
    # share -> mount
    assert sorted(os.listdir(mnt)) == ["a.txt", "empty", "sub"]
    for path, data in pre.items():
        assert (mnt / path).read_bytes() == data, path
    assert os.getxattr(mnt / "sub/x.bin", "user.fsync.state") == b"local"
    assert os.getxattr(mnt / "sub/deep/big.bin", "user.fsync.state") == b"local"
    vfs = os.statvfs(mnt)  # from the share's quota
    assert vfs.f_blocks > 0 and vfs.f_bavail <= vfs.f_blocks and vfs.f_namemax == 255

    # mount -> share: a tree of new files
    (mnt / "w/d1/inner").mkdir(parents=True)
    big = rnd.randbytes(5 * 1024 * 1024 + 123)
    (mnt / "w/big.bin").write_bytes(big)
    (mnt / "w/one").write_bytes(b"1")
    (mnt / "w/d1/f1").write_bytes(b"f1 data")
    (mnt / "w/d1/inner/f2").write_bytes(b"f2 data" * 1000)
    (mnt / "w/script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(mnt / "w/script.sh", 0o751)
    os.chmod(mnt / "w/d1", 0o750)
    (mnt / "w/old").write_bytes(b"old times")
    os.utime(mnt / "w/old", ns=(OLD_MTIME, OLD_MTIME))
    os.symlink("../a.txt", mnt / "w/link")
    os.symlink("/absolute/target/nowhere", mnt / "w/dangling")
    assert (mnt / "w/link").read_bytes() == b"hello\n"

    # renames: a file, a whole directory, over an existing file, RENAME_NOREPLACE
    (mnt / "w/tmp.txt").write_bytes(b"renamed me")
    os.rename(mnt / "w/tmp.txt", mnt / "w/renamed.txt")
    os.rename(mnt / "w/d1", mnt / "w/d2")
    (mnt / "w/target").write_bytes(b"to be replaced")
    (mnt / "w/src").write_bytes(b"replacement")
    os.rename(mnt / "w/src", mnt / "w/target")
    (mnt / "w/nr").write_bytes(b"noreplace")
    expect_errno(errno.EEXIST, renameat2, mnt / "w/nr", mnt / "w/one", RENAME_NOREPLACE)
    renameat2(mnt / "w/nr", mnt / "w/nr2", RENAME_NOREPLACE)
    (mnt / "w/emptydir").mkdir()
    (mnt / "w/gone").mkdir()
    os.rename(mnt / "w/emptydir", mnt / "w/gone")  # a directory over an empty directory

    # deletes
    (mnt / "w/del.txt").write_bytes(b"x")
    os.unlink(mnt / "w/del.txt")
    (mnt / "w/deldir").mkdir()
    os.rmdir(mnt / "w/deldir")

    # changes to files that came from the share (tiered blocks are read-modify-written)
    with open(mnt / "sub/x.bin", "r+b") as fh:
        fh.seek(5000)
        fh.write(b"PATCH")
    with open(mnt / "a.txt", "ab") as fh:
        fh.write(b"appended\n")
    os.truncate(mnt / "sub/deep/big.bin", 1024 * 1024 + 3)

    # what the share cannot hold fails clearly
    expect_errno(errno.EEXIST, open, mnt / "A.TXT", "xb")
    expect_errno(errno.EEXIST, os.mkdir, mnt / "W")
    expect_errno(errno.EINVAL, open, mnt / "w/bad:name", "wb")
    expect_errno(errno.EINVAL, os.mkdir, mnt / "w/what?")
    expect_errno(errno.EPERM, os.link, mnt / "w/one", mnt / "w/hardlink")
    expect_errno(errno.ENOTEMPTY, os.rmdir, mnt / "w")

    local = snapshot(mnt)
    m.wait_drained()

    # the share, through the SDK
    x = bytearray(pre["sub/x.bin"])
    x[5000:5005] = b"PATCH"
    want_files = {
        "a.txt": b"hello\nappended\n",
        "empty": b"",
        "sub/deep/big.bin": pre["sub/deep/big.bin"][: 1024 * 1024 + 3],
        "sub/x.bin": bytes(x),
        "w/big.bin": big,
        "w/one": b"1",
        "w/d2/f1": b"f1 data",
        "w/d2/inner/f2": b"f2 data" * 1000,
        "w/script.sh": b"#!/bin/sh\necho hi\n",
        "w/old": b"old times",
        "w/renamed.txt": b"renamed me",
        "w/target": b"replacement",
        "w/nr2": b"noreplace",
        "w/link": b"../a.txt",
        "w/dangling": b"/absolute/target/nowhere",
    }
    tree = share.walk()
    assert {p for p, d in tree.items() if not d} == set(want_files)
    assert {p for p, d in tree.items() if d} == {
        "sub",
        "sub/deep",
        "w",
        "w/d2",
        "w/d2/inner",
        "w/gone",
    }
    for path, data in want_files.items():
        assert share.get(path) == data, path
    assert share.props("w/script.sh").metadata["fsyncmode"] == "751"
    assert share.props("w/link").metadata["fsynctype"] == "symlink"
    assert share.dir_props("w/d2").metadata["fsyncmode"] == "750"
    lw = share.props("w/old").last_write_time
    assert int(lw.timestamp()) == OLD_MTIME // 10**9
    assert m.stop() == 0

    # a second mount on an empty cache sees the same tree, modes, times and links
    m2 = mounter(share_url, name="mnt2", cache="cache2")
    again = snapshot(m2.mnt)
    assert again.keys() == local.keys()
    for path, entry in local.items():
        assert again[path] == entry, path
    assert again["w/old"][3] == OLD_MTIME
    assert again["w/script.sh"][2] == 0o751
    assert m2.stop() == 0


def test_changes_on_the_share_show_up(mounter, share, share_url):
    share.put("dir/first", b"1")
    m = mounter(share_url, args=["--attr-timeout", "0.5", "--dir-cache-time", "0.5"])
    assert os.listdir(m.mnt / "dir") == ["first"]
    share.put("dir/second", b"22")
    share.put("dir/first", b"changed on the share")
    import time

    time.sleep(1.0)  # past the attribute timeout: the next access lists again
    assert sorted(os.listdir(m.mnt / "dir")) == ["first", "second"]
    assert (m.mnt / "dir/second").read_bytes() == b"22"
    assert (m.mnt / "dir/first").read_bytes() == b"changed on the share"
    share.client.get_file_client("dir/second").delete_file()
    time.sleep(1.0)
    assert os.listdir(m.mnt / "dir") == ["first"]
    assert m.stop() == 0
