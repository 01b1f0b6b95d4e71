"""cache/system.py with real system calls: the Linux variants, and the fallbacks other systems
would get (they are plain functions, so they run here too)."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time

import pytest

from cache import system

MiB = 1 << 20

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux variant")


def _file(path, data: bytes) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    return fd


@linux_only
def test_punch_hole_frees_blocks_and_reads_zeros(tmp_path):
    fd = _file(tmp_path / "f", b"x" * (4 * MiB))
    try:
        before = os.fstat(fd).st_blocks
        assert before >= 4 * MiB // 512
        system.punch_hole(fd, MiB, 2 * MiB)
        st = os.fstat(fd)
        assert st.st_blocks <= before - 2 * MiB // 512
        assert st.st_size == 4 * MiB
        assert os.pread(fd, 2 * MiB, MiB) == bytes(2 * MiB)
        assert os.pread(fd, 10, 0) == b"x" * 10 and os.pread(fd, 10, 3 * MiB) == b"x" * 10
        assert system.extents(fd) == [(0, MiB), (3 * MiB, 4 * MiB)]
        system.punch_hole(fd, 0, 0)  # nothing to do
    finally:
        os.close(fd)


def test_punch_fallback_writes_zeros_inside_the_file(tmp_path):
    fd = _file(tmp_path / "f", b"x" * (3 * MiB + 100))
    try:
        system._punch_zeros(fd, MiB, 4 * MiB)  # runs past the end: never extends the file
        assert os.fstat(fd).st_size == 3 * MiB + 100
        assert os.pread(fd, 4 * MiB, MiB) == bytes(2 * MiB + 100)
        assert os.pread(fd, MiB, 0) == b"x" * MiB
        system._punch_zeros(fd, 10 * MiB, MiB)  # wholly past the end
        assert os.fstat(fd).st_size == 3 * MiB + 100
    finally:
        os.close(fd)


def test_extents_fallback_is_the_whole_file(tmp_path):
    fd = _file(tmp_path / "f", b"x" * 5000)
    try:
        assert system._extents_whole(fd) == [(0, 5000)]
        os.ftruncate(fd, 0)
        assert system._extents_whole(fd) == []
    finally:
        os.close(fd)


def test_datasync(tmp_path):
    fd = _file(tmp_path / "f", b"data")
    try:
        os.pwrite(fd, b"more", 4)
        system.datasync(fd)
        if hasattr(os, "fdatasync"):
            assert system.datasync is os.fdatasync
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"datamore"


@linux_only
def test_mapped_bytes_and_unmap(tmp_path):
    path = os.path.realpath(tmp_path / "m")
    fd = _file(path, os.urandom(4 * MiB))
    try:
        with mmap.mmap(fd, 4 * MiB, prot=mmap.PROT_READ) as mm:
            _ = sum(mm[i] for i in range(0, 4 * MiB, 4096))  # touch every page: all mapped
            before = system.mapped_bytes(path)
            assert before >= 2 * MiB
            found = system.mapping(path)
            assert found is not None and found.end - found.start == 4 * MiB
            assert system.unmap(found.start, found.end - found.start)
            assert system.mapped_bytes(path) < before // 4
            assert mm[:16] == os.pread(fd, 16, 0)  # the data is still there
        assert system.mapped_bytes(path) == 0
        assert system.mapping(path) is None
    finally:
        os.close(fd)


def test_mapping_fallbacks_find_and_do_nothing(tmp_path):
    assert system._no_mapping(str(tmp_path)) is None
    assert system._no_unmap(0, 4096) is False
    assert system.mapped_bytes(str(tmp_path / "never-mapped")) == 0


def test_disk_space(tmp_path):
    free, total = system.disk_space(tmp_path)
    assert 0 < free <= total
    assert 0 < free / total <= 1
    assert system._disk_space_usage(tmp_path).total == total


def test_set_mount_readahead_ignores_what_is_not_a_mount(tmp_path):
    assert system.set_mount_readahead(str(tmp_path), 64 * MiB) is None
    assert system.set_mount_readahead("relative/not/a/mount", 64 * MiB) is None
    assert system._no_readahead(str(tmp_path), MiB) is None


def test_mountinfo_escapes():
    assert system._unescape(r"/mnt/a\040b\011c\134d") == "/mnt/a b\tc\\d"
    assert system._unescape("/plain") == "/plain"


def test_process_alive():
    """Alive, gone, and a zombie (exited, not yet reaped) counts as gone on Linux."""

    assert system.process_alive(os.getpid())
    assert system._alive_kill(os.getpid())
    child = subprocess.Popen(["sleep", "0"])
    deadline = time.monotonic() + 10
    while system.process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not system.process_alive(child.pid)  # a zombie until waited for
    child.wait()
    assert not system.process_alive(child.pid)
    assert not system._alive_kill(child.pid)


@pytest.mark.parametrize("variant", ["copy_range", "_copy_in_kernel", "_copy_buffered"])
def test_copy_range_copies_to_the_same_offset_and_stops_at_the_source_end(tmp_path, variant):
    copy = getattr(system, variant)
    data = os.urandom(3 * MiB + 123)
    src = _file(tmp_path / "src", data)
    dst = _file(tmp_path / "dst", b"")
    try:
        assert copy(src, dst, MiB + 7, MiB) == MiB  # a range in the middle
        assert os.pread(dst, MiB, MiB + 7) == data[MiB + 7 : 2 * MiB + 7]
        assert os.pread(dst, MiB + 7, 0) == bytes(MiB + 7)  # nothing else written
        assert copy(src, dst, 3 * MiB, MiB) == 123  # the source ends first
        assert os.pread(dst, 200, 3 * MiB) == data[3 * MiB :]
        assert copy(src, dst, 4 * MiB, 10) == 0
    finally:
        os.close(src)
        os.close(dst)
