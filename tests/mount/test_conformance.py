"""POSIX conformance the project checks itself, on a real mount: link counts, times, special
files, fallocate (names and paths: test_posix_names.py; random operations against a model:
test_fsx.py). Each part also checks what a fresh mount on an empty cache shows, where the
share must keep it."""

from __future__ import annotations

import errno
import os

import pytest

pytestmark = pytest.mark.mount

FAST = ["--writeback-delay", "0.1"]


def test_link_counts(mounter, share_url):
    m = mounter(share_url, args=FAST)
    d = m.mnt / "d"
    os.mkdir(d)
    assert os.stat(d).st_nlink == 2
    for name in ("a", "b", "c"):
        os.mkdir(d / name)
    (d / "f").write_bytes(b"file")
    assert os.stat(d).st_nlink == 5  # 2 + three subdirectories; files do not count
    os.rmdir(d / "c")
    os.rename(d / "b", m.mnt / "b")
    assert os.stat(d).st_nlink == 3
    assert os.stat(m.mnt).st_nlink == 4  # the root: 2 + d and b
    assert os.stat(d / "f").st_nlink == 1
    fh = open(d / "f", "rb")
    try:
        os.unlink(d / "f")
        assert os.fstat(fh.fileno()).st_nlink == 0  # open, no name left
        assert fh.read() == b"file"
    finally:
        fh.close()
    m.wait_drained()
    fresh = mounter(share_url, name="fresh", cache="cache-fresh", args=FAST)
    os.listdir(fresh.mnt / "d")  # subdirectories are known once a directory is listed
    assert os.stat(fresh.mnt / "d").st_nlink == 3
    assert fresh.stop() == 0
    assert m.stop() == 0


def test_explicit_access_time_is_kept(mounter, share, share_url):
    """Reads never change atime (noatime); one set explicitly stays, alone or with mtime,
    across a remount, and reaches the share's metadata."""
    m = mounter(share_url, args=FAST)
    f = m.mnt / "f"
    f.write_bytes(b"data")
    before = os.stat(f)
    assert before.st_atime_ns == before.st_mtime_ns  # never set: the mtime stands in
    then = 1_000_000_000 * 10**9  # 2001-09-09
    os.utime(f, ns=(then, before.st_mtime_ns))  # like `touch -a -d`: mtime kept
    st = os.stat(f)
    assert st.st_atime_ns == then and st.st_mtime_ns == before.st_mtime_ns
    assert f.read_bytes() == b"data"
    assert os.stat(f).st_atime_ns == then  # reading does not move it
    os.utime(f, ns=(then + 100, then + 200))  # both, like cp -p
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (then + 100, then + 200)
    os.mkdir(m.mnt / "d")
    os.utime(m.mnt / "d", ns=(then, then + 300))
    m.wait_drained()
    assert share.props("f").metadata.get("fsyncatime") == str(then + 100)
    assert m.stop() == 0
    again = mounter(share_url, name="again", cache="cache", args=FAST)
    st = os.stat(again.mnt / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (then + 100, then + 200)
    assert os.stat(again.mnt / "d").st_atime_ns == then
    assert again.stop() == 0


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE = 0x01, 0x02, 0x08, 0x10, 0x20


def test_fallocate_modes(mounter, share, share_url):
    """Mode 0 extends, KEEP_SIZE keeps the size, PUNCH_HOLE and ZERO_RANGE read back as zeros
    here and on the share (also in a fresh mount), COLLAPSE/INSERT are not supported."""
    m = mounter(share_url, args=FAST)
    data = bytes(range(256)) * 8192  # 2 MiB
    (m.mnt / "f").write_bytes(data)
    model = bytearray(data)
    fd = os.open(m.mnt / "f", os.O_RDWR)
    try:
        os.posix_fallocate(fd, len(model) - 10, 1000)  # mode 0: grows by 990 zero bytes
        model += bytes(990)
        fallocate(fd, KEEP_SIZE, len(model), 1 << 20)  # beyond EOF, size kept
        assert os.fstat(fd).st_size == len(model)
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 100_000, 600_000)  # partial and whole blocks
        model[100_000:700_000] = bytes(600_000)
        fallocate(fd, ZERO_RANGE, 1_500_000, 800_000)  # past EOF: grows
        model[1_500_000:2_300_000] = bytes(800_000)
        fallocate(fd, ZERO_RANGE | KEEP_SIZE, 10, 20)
        model[10:30] = bytes(20)
        for mode in (COLLAPSE_RANGE, INSERT_RANGE):
            with pytest.raises(OSError) as info:
                fallocate(fd, mode, 0, 4096)
            assert info.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as info:
            fallocate(fd, PUNCH_HOLE, 0, 4096)  # without KEEP_SIZE
        assert info.value.errno == errno.EOPNOTSUPP
        assert os.fstat(fd).st_size == len(model)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(model) + 10, 0) == bytes(model)
    finally:
        os.close(fd)
    m.wait_drained()
    assert share.get("f") == bytes(model)
    fresh = mounter(share_url, name="fresh", cache="cache-fresh", args=FAST)
    assert (fresh.mnt / "f").read_bytes() == bytes(model)
    assert fresh.stop() == 0
    assert m.stop() == 0


def test_special_files(mounter, share, share_url):
    """Fifos, sockets and device nodes are kept as marked empty files: every mount shows them
    with their type, mode, owner and device number; the kernel serves the fifo itself."""
    import socket
    import stat
    import threading

    m = mounter(share_url, args=FAST)
    d = m.mnt
    os.mkfifo(d / "fifo", 0o640)
    os.mknod(d / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(d / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(d / "fifo2", stat.S_IFIFO | 0o600)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    sock.close()
    os.chown(d / "fifo", 1234, 5678)
    want = {
        "fifo": (stat.S_IFIFO | 0o640, 0),
        "fifo2": (stat.S_IFIFO | 0o600, 0),
        "chr": (stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        "blk": (stat.S_IFBLK | 0o600, os.makedev(7, 0)),
    }

    def check(root) -> None:
        for name, (mode, rdev) in want.items():
            st = os.lstat(root / name)
            assert (st.st_mode, st.st_rdev, st.st_size) == (mode, rdev, 0), name
        assert stat.S_ISSOCK(os.lstat(root / "sock").st_mode)
        assert (os.lstat(root / "fifo").st_uid, os.lstat(root / "fifo").st_gid) == (1234, 5678)

    check(d)
    # the fifo is a fifo: what one end writes the other reads (the kernel's pipe)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(open(d / "fifo2", "rb").read()))
    reader.start()
    with open(d / "fifo2", "wb") as w:
        w.write(b"through the pipe")
    reader.join(30)
    assert got == [b"through the pipe"]
    m.wait_drained()
    assert share.props("fifo").metadata["fsynctype"] == "fifo"
    assert share.props("chr").metadata["fsyncrdev"] == str(os.makedev(1, 3))
    fresh = mounter(share_url, name="fresh", cache="cache-fresh", args=FAST)
    check(fresh.mnt)
    os.unlink(fresh.mnt / "chr")
    fresh.wait_drained()
    assert not share.exists("chr")
    assert fresh.stop() == 0
    assert m.stop() == 0


def test_directory_times(mounter, share_url):
    """A directory's mtime and ctime move forward when entries are added or removed, never
    back, and a fresh mount on an empty cache shows the same mtime (the share keeps it)."""
    import time

    m = mounter(share_url, args=FAST)
    d = m.mnt / "d"
    os.mkdir(d)
    made = os.stat(d)
    time.sleep(0.05)
    (d / "a").write_bytes(b"a")
    added = os.stat(d)
    assert added.st_mtime_ns > made.st_mtime_ns and added.st_ctime_ns > made.st_ctime_ns
    os.mkdir(m.mnt / "e")
    e_made = os.stat(m.mnt / "e").st_mtime_ns
    m.wait_drained()
    m.sync_now()  # a listing from the share must not take the times back
    assert os.stat(d).st_mtime_ns == added.st_mtime_ns
    time.sleep(0.05)
    os.unlink(d / "a")
    removed = os.stat(d).st_mtime_ns
    assert removed > added.st_mtime_ns
    m.wait_drained()
    fresh = mounter(share_url, name="fresh", cache="cache-fresh", args=FAST)
    assert os.stat(fresh.mnt / "d").st_mtime_ns == removed
    assert os.stat(fresh.mnt / "e").st_mtime_ns == e_made
    assert fresh.stop() == 0
    assert m.stop() == 0
