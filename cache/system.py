"""Every operating-system call the project makes that is not plain POSIX file I/O.

The cache and the filesystem run on Linux today; macOS (macFUSE) and Windows (WinFsp) would be
future ports. Keeping these calls here means a port changes one module, and the rest of
`cache/` can rely on the behaviour each function documents. The variant is chosen once, at
import, from `sys.platform` and `hasattr(os, ...)`; nothing probes per call. Every variant is
a plain private function (`_punch_zeros`, `_extents_whole`, ...), so tests exercise the
fallbacks on Linux too.

``punch_hole(fd, offset, length) -> None``
    Afterwards the range reads as zeros (the file keeps its size). Linux:
    ``fallocate(PUNCH_HOLE | KEEP_SIZE)`` frees the range; an error raises OSError. Elsewhere:
    zeros are written over the part inside the file, so the range still reads as zeros (every
    caller needs that: a dropped block must read as zeros, see INVARIANTS.md 1) but stays
    allocated until the data file is deleted. ``HOLES`` says which; `BlockCache.open` warns
    that the size bound is then only approximate. (macOS has ``fcntl(F_PUNCHHOLE)`` and Windows
    ``FSCTL_SET_ZERO_DATA``: a port should use them.)

``extents(fd) -> list[(start, end)]``
    Allocated ranges of a sparse file. Where ``SEEK_DATA``/``SEEK_HOLE`` exist (Linux, macOS):
    asks the filesystem. Elsewhere: the whole file, as if nothing were a hole (recovery then
    punches every unclaimed block and over-counts claimed ones, which is safe).

``datasync(fd) -> None``
    ``os.fdatasync`` where it exists (Linux); ``os.fsync`` elsewhere (macOS has no
    fdatasync; its fsync does not flush the drive's cache, F_FULLFSYNC would).

``copy_range(src_fd, dst_fd, offset, length) -> int``
    Copy [offset, offset+length) of one file to the same offset of another; returns the bytes
    copied (fewer at the source's end). Linux: ``copy_file_range``, which shares the extents
    (a reflink) where the filesystem can (XFS, Btrfs) and copies inside the kernel elsewhere;
    across filesystems the kernel may refuse (EXDEV) and the copy goes through a buffer.
    Elsewhere: through a buffer (``_copy_buffered``). An I/O error raises OSError.

``mapping(path) -> Mapping | None``, ``mapped_bytes(path) -> int``
    The process's mapping of a file (``path`` as the kernel shows it: a realpath) and its
    resident bytes, from one pass over ``/proc/self/smaps``. Elsewhere: None / 0.

``unmap(start, length) -> bool``
    ``madvise(MADV_DONTNEED)`` on a shared file mapping: its pages leave the process (they stay
    in the page cache) and come back on the next access. False when it failed. Elsewhere: a
    no-op returning False.

``disk_space(path) -> DiskSpace(free, total)``
    Bytes available to an unprivileged user and the filesystem's size: ``os.statvfs`` where it
    exists (POSIX, macOS too); ``shutil.disk_usage`` elsewhere (Windows), which computes the
    same two numbers. Bytes, not a fraction: the free-space floor (eviction.py) is computed in
    bytes, and free / total is the free fraction.

``set_mount_readahead(mountpoint, nbytes) -> None``
    For the filesystem layer: let the kernel read ahead `nbytes` on a FUSE mount. Linux: finds
    the mount's device in ``/proc/self/mountinfo`` and writes ``max(128, nbytes // 1024)`` to
    ``/sys/class/bdi/<major:minor>/read_ahead_kb`` (root only); best effort, OSError is logged
    at debug. It never stat()s the mountpoint: the daemon would wait on itself. Elsewhere: a
    no-op.

``process_alive(pid) -> bool``
    For the unmount command, which waits for the daemon to close its cache. Linux: the process
    exists and is not a zombie (``/proc/<pid>/stat``). Elsewhere: ``os.kill(pid, 0)`` succeeds
    (a zombie counts as alive there; the wait is bounded anyway).

Not here: plain POSIX I/O (pread, pwrite, preadv, ftruncate, O_CLOEXEC), which macOS has too.
Python offers none of those on Windows, so a WinFsp port needs more than this module. The
control surface (fsync_fuse/control.py) uses ``os.getxattr``/``os.setxattr``, which Python
has on Linux only: a macOS port would answer there through its own xattr calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
import shutil
import sys
from typing import NamedTuple

log = logging.getLogger(__name__)

LINUX = sys.platform.startswith("linux")
#: whether punch_hole frees space (True) or only writes zeros (False)
HOLES = LINUX

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_MADV_DONTNEED = 4

if LINUX:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _fallocate = _libc.fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int
    _madvise = _libc.madvise
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _madvise.restype = ctypes.c_int


class Mapping(NamedTuple):
    start: int
    end: int
    resident: int  # bytes of the mapping in the process's RSS


class DiskSpace(NamedTuple):
    free: int  # bytes available to an unprivileged user
    total: int


# --- holes


def _punch_fallocate(fd: int, offset: int, length: int) -> None:
    """Free [offset, offset+length) of a file, keeping its size; it then reads zeros."""
    if length <= 0:
        return
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(PUNCH_HOLE): {os.strerror(err)}")


def _punch_zeros(fd: int, offset: int, length: int) -> None:
    """Zero [offset, offset+length) inside the file (never past its end); stays allocated."""
    end = min(offset + length, os.fstat(fd).st_size)
    zeros = memoryview(bytes(min(max(end - offset, 0), 1 << 20)))
    while offset < end:
        offset += os.pwrite(fd, zeros[: min(len(zeros), end - offset)], offset)


punch_hole = _punch_fallocate if HOLES else _punch_zeros


def _extents_seek(fd: int) -> list[tuple[int, int]]:
    """Allocated (offset, end) ranges of a sparse file, via SEEK_DATA/SEEK_HOLE."""
    out: list[tuple[int, int]] = []
    pos = 0
    while True:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return out
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        pos = end


def _extents_whole(fd: int) -> list[tuple[int, int]]:
    """No way to find holes: the whole file counts as allocated."""
    size = os.fstat(fd).st_size
    return [(0, size)] if size else []


extents = _extents_seek if hasattr(os, "SEEK_DATA") and hasattr(os, "SEEK_HOLE") else _extents_whole


# --- durability

datasync = os.fdatasync if hasattr(os, "fdatasync") else os.fsync


# --- copying between files

_COPY_CHUNK = 1 << 20


def _copy_buffered(src_fd: int, dst_fd: int, offset: int, length: int) -> int:
    """Copy through user space, a megabyte at a time."""
    done = 0
    while done < length:
        data = os.pread(src_fd, min(_COPY_CHUNK, length - done), offset + done)
        if not data:
            break
        n = 0
        while n < len(data):
            n += os.pwrite(dst_fd, data[n:], offset + done + n)
        done += len(data)
    return done


def _copy_in_kernel(src_fd: int, dst_fd: int, offset: int, length: int) -> int:
    """copy_file_range until done or the source ends; a refusal (another filesystem, or one
    that cannot) falls back to the buffered copy for what is left."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            return done + _copy_buffered(src_fd, dst_fd, offset + done, length - done)
        if n == 0:
            break
        done += n
    return done


copy_range = _copy_in_kernel if LINUX and hasattr(os, "copy_file_range") else _copy_buffered


# --- mapped memory


def _mapping_smaps(path: str) -> Mapping | None:
    """The first mapping of `path` in /proc/self/smaps with its Rss; None if unmapped."""
    try:
        with open("/proc/self/smaps") as fh:
            region: tuple[int, int] | None = None
            for line in fh:
                if region is None:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].rstrip("\n") == path:
                        lo, _, hi = parts[0].partition("-")
                        region = int(lo, 16), int(hi, 16)
                elif line.startswith("Rss:"):
                    return Mapping(region[0], region[1], int(line.split()[1]) * 1024)
    except OSError:
        pass
    return None


def _unmap_madvise(start: int, length: int) -> bool:
    """Drop the process's pages of a shared file mapping (they stay in the page cache)."""
    if _madvise(start, length, _MADV_DONTNEED) != 0:
        log.debug("madvise(DONTNEED) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _no_mapping(path: str) -> Mapping | None:
    return None


def _no_unmap(start: int, length: int) -> bool:
    return False


mapping = _mapping_smaps if LINUX else _no_mapping
unmap = _unmap_madvise if LINUX else _no_unmap


def mapped_bytes(path: str) -> int:
    """Bytes of `path`'s mapping resident in the process (0 when unmapped or unknown)."""
    found = mapping(path)
    return found.resident if found else 0


# --- free space


def _disk_space_statvfs(path: str | os.PathLike[str]) -> DiskSpace:
    sv = os.statvfs(path)
    return DiskSpace(sv.f_bavail * sv.f_frsize, sv.f_blocks * sv.f_frsize)


def _disk_space_usage(path: str | os.PathLike[str]) -> DiskSpace:
    usage = shutil.disk_usage(path)
    return DiskSpace(usage.free, usage.total)


disk_space = _disk_space_statvfs if hasattr(os, "statvfs") else _disk_space_usage


# --- for the filesystem layer

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _readahead_sysfs(mountpoint: str, nbytes: int) -> None:
    """Let the kernel read ahead `nbytes` on the FUSE mount at `mountpoint` (its default is
    128 KiB); root only, best effort. The device comes from mountinfo, never a stat() of the
    mountpoint (the daemon serving it would wait on itself)."""
    want = os.path.abspath(mountpoint)  # string work only: no stat
    try:
        with open("/proc/self/mountinfo") as fh:
            devs = [
                parts[2]
                for parts in (line.split() for line in fh)
                if len(parts) > 4 and _unescape(parts[4]) == want
            ]
        if not devs:
            return
        with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w") as fh:
            fh.write(str(max(128, nbytes // 1024)))
    except OSError as exc:
        log.debug("kernel read-ahead of %s left as it is: %s", mountpoint, exc)


def _no_readahead(mountpoint: str, nbytes: int) -> None:
    pass


set_mount_readahead = _readahead_sysfs if LINUX else _no_readahead


def _alive_proc(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(") ", 1)[-1][:1]
    except OSError:
        return False
    return state != "Z"


def _alive_kill(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


process_alive = _alive_proc if LINUX else _alive_kill
