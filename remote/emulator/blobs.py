"""Blob files: the content of files, one sparse file per blob under the data directory.

Plain functions on paths, apart from the Store because they do file I/O that callers run in a
worker thread when it is big (copies, diffs, multi-MiB writes). A missing blob file, or bytes past
its end, read as zeros: blobs are sparse and created lazily.
"""

from __future__ import annotations

import errno
import os

from . import ranges as rg


def read_range(path: str | None, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of a blob file, zero-filled past its end or if absent."""
    if length <= 0:
        return b""
    if path is None:
        return bytes(length)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return bytes(length)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) < length:
        data += bytes(length - len(data))
    return data


def write_range(path: str, offset: int, data: bytes | bytearray | memoryview) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    finally:
        os.close(fd)


def clear_range(path: str, offset: int, length: int) -> None:
    """Punch a hole (falls back to writing zeros where the filesystem cannot)."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        length = max(0, min(length, size - offset))
        if length == 0:
            return
        try:
            _punch_hole(fd, offset, length)
        except OSError:
            zero = bytes(min(length, 1 << 20))
            pos, end = offset, offset + length
            while pos < end:
                n = os.pwrite(fd, zero[: end - pos], pos)
                pos += n
    finally:
        os.close(fd)


def _punch_hole(fd: int, offset: int, length: int) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    falloc_fl_keep_size, falloc_fl_punch_hole = 0x01, 0x02
    res = libc.fallocate(
        ctypes.c_int(fd),
        ctypes.c_int(falloc_fl_keep_size | falloc_fl_punch_hole),
        ctypes.c_longlong(offset),
        ctypes.c_longlong(length),
    )
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def resize_blob(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def copy_sparse(src: str, dst: str, size: int) -> None:
    """Copy a blob file keeping holes (SEEK_DATA/SEEK_HOLE + copy_file_range). Runs in a thread."""
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(dfd, size)
            end = min(size, os.fstat(sfd).st_size)
            pos = 0
            while pos < end:
                try:
                    data_at = os.lseek(sfd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        break
                    raise
                if data_at >= end:
                    break
                hole_at = min(os.lseek(sfd, data_at, os.SEEK_HOLE), end)
                _copy_span(sfd, dfd, data_at, hole_at - data_at)
                pos = hole_at
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_span(sfd: int, dfd: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(sfd, dfd, length - done, offset + done, offset + done)
        except OSError:
            n = 0
        if n <= 0:
            chunk = os.pread(sfd, min(length - done, 1 << 22), offset + done)
            if not chunk:
                return
            os.pwrite(dfd, chunk, offset + done)
            n = len(chunk)
        done += n


def diff_blobs(
    prev_path: str | None,
    prev_ranges: rg.Ranges,
    cur_path: str | None,
    cur_ranges: rg.Ranges,
    size: int,
) -> tuple[rg.Ranges, rg.Ranges]:
    """(changed, cleared) ranges of the current blob against a previous version. In a thread."""
    cur_ranges = rg.truncate(cur_ranges, size)
    changed = rg.minus(cur_ranges, prev_ranges)
    cleared = rg.truncate(rg.minus(prev_ranges, cur_ranges), size)
    both = rg.intersect(cur_ranges, prev_ranges)
    block, sub = 1 << 16, 512
    for s, e in both:
        pos = s
        while pos < e:
            n = min(block, e - pos)
            a = read_range(prev_path, pos, n)
            b = read_range(cur_path, pos, n)
            if a != b:
                for off in range(0, n, sub):
                    if a[off : off + sub] != b[off : off + sub]:
                        changed = rg.add(changed, pos + off, pos + min(off + sub, n))
            pos += n
    return changed, cleared
