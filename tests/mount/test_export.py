"""Exporting the mount (NFS, and anything else that keeps file handles): a handle the
kernel gave out still opens its file after the kernel forgot the inode (FUSE then looks up
"." and ".." by node id: fs.py `_dot`), goes stale once the file is removed, and a handle
from another cache directory is stale rather than another file (inode generation). This is
the path the kernel NFS server takes (exportfs), and userspace servers such as
nfs-ganesha's VFS layer call these same system calls."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

pytestmark = pytest.mark.mount

AT_FDCWD = -100
MAX_HANDLE = 128


class _Handle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE),
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def handle_of(path) -> _Handle:
    h = _Handle()
    h.handle_bytes = MAX_HANDLE
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(
        AT_FDCWD, os.fsencode(path), ctypes.byref(h), ctypes.byref(mount_id), 0
    ):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    return h


def open_by_handle(mount_fd: int, h: _Handle, flags: int = os.O_RDONLY) -> int:
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(h), flags)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def forget_everything() -> None:
    """The kernel drops every unused dentry and inode (and tells the mount: FORGET)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


def test_file_handles_outlive_the_kernels_inodes(mounter, share_url):
    m = mounter(share_url)
    d = m.mnt / "exports" / "deep"
    d.mkdir(parents=True)
    (d / "a.txt").write_bytes(b"exported")
    (d / "gone.txt").write_bytes(b"soon removed")
    handles = {name: handle_of(d / name) for name in ("a.txt", "gone.txt")}
    dir_handle = handle_of(d)
    want_ino = os.stat(d).st_ino
    mount_fd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        forget_everything()
        fd = open_by_handle(mount_fd, handles["a.txt"])
        try:
            assert os.read(fd, 100) == b"exported"
        finally:
            os.close(fd)
        forget_everything()
        fd = open_by_handle(mount_fd, dir_handle, os.O_RDONLY | os.O_DIRECTORY)
        try:  # a directory's handle is reconnected to its path through ".." lookups
            assert os.fstat(fd).st_ino == want_ino
            assert sorted(os.listdir(fd)) == ["a.txt", "gone.txt"]
        finally:
            os.close(fd)
        fd = open_by_handle(mount_fd, handles["gone.txt"], os.O_RDWR)
        os.write(fd, b"written through a handle")
        os.close(fd)
        assert (d / "gone.txt").read_bytes() == b"written through a handle"
        os.unlink(d / "gone.txt")
        forget_everything()
        with pytest.raises(OSError) as ei:
            os.close(open_by_handle(mount_fd, handles["gone.txt"]))
        assert ei.value.errno == errno.ESTALE
    finally:
        os.close(mount_fd)
    m.wait_drained(60)
    assert m.stop() == 0

    # another cache directory numbers the same entries anew: the old handles are stale
    m2 = mounter(share_url, name="mnt2", cache="cache2")
    os.listdir(m2.mnt / "exports" / "deep")
    mount_fd = os.open(m2.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for h in (handles["a.txt"], dir_handle):
            with pytest.raises(OSError) as ei:
                os.close(open_by_handle(mount_fd, h))
            assert ei.value.errno == errno.ESTALE
    finally:
        os.close(mount_fd)
    assert m2.stop() == 0
