"""Files larger than --cache-size stream through the mount, both ways, while the cache
directory's real disk usage stays within the bound."""

from __future__ import annotations

import hashlib
import os
import random
import threading

import pytest

from tests.mount.helpers import disk_usage

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
CACHE = 8 * MiB
# LMDB's index shares the directory; its pages are real disk usage too, but small.
INDEX_SLACK = 1 * MiB


class Sampler:
    """Samples the cache directory's allocated bytes in a thread until stopped."""

    def __init__(self, path):
        self.path, self.peak, self.samples = path, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, disk_usage(self.path))
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def drop_kernel_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_larger_than_cache_streams(mounter, share, share_url):
    rnd = random.Random(5)
    data = rnd.randbytes(6 * CACHE + 12345)
    share.put("huge.bin", data)
    m = mounter(
        share_url, args=["--cache-size", "8M", "--read-ahead", "4M", "--writeback-delay", "0.5"]
    )
    with Sampler(m.cache_dir) as s:
        h = hashlib.sha256()
        with open(m.mnt / "huge.bin", "rb") as fh:
            while chunk := fh.read(MiB):
                h.update(chunk)
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
        # random reads, some after eviction
        drop_kernel_cache(m.mnt / "huge.bin")
        with open(m.mnt / "huge.bin", "rb") as fh:
            for _ in range(40):
                off = rnd.randrange(len(data))
                n = rnd.randrange(1, 3 * MiB)
                fh.seek(off)
                assert fh.read(n) == data[off : off + n]

        # and the other way: write more than the cache holds
        out = rnd.randbytes(3 * CACHE + 777)
        with open(m.mnt / "written.bin", "wb") as fh:
            for i in range(0, len(out), MiB):
                fh.write(out[i : i + MiB])
        m.wait_drained()
    assert s.samples > 10
    assert s.peak <= CACHE + INDEX_SLACK, f"cache dir used {s.peak} bytes, bound {CACHE}"
    assert share.get("written.bin") == out
    drop_kernel_cache(m.mnt / "written.bin")
    assert (m.mnt / "written.bin").read_bytes() == out
    assert disk_usage(m.cache_dir) <= CACHE + INDEX_SLACK
    assert m.stop() == 0
