"""--cache-size bounds everything in the cache directory, as `du` counts it: the data files,
the data/xx directories, the LMDB index, the daemon's log and the lock file.

A background mount (its log in the cache directory, --debug so the log rotates) reads and
writes several times its cache size, writes many small files and lists a big directory,
while a thread samples the directory's allocated bytes every 0.05 s. The peak must never
exceed the bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mount.helpers import REPO, Share, env, fusermount, have_fuse

pytestmark = pytest.mark.mount

MiB = 1 << 20
CACHE = 64 * MiB


def du(path: Path) -> int:
    """What `du -s --block-size=1 PATH` prints: allocated bytes of every file and directory
    under PATH, the directory itself included."""
    total = 0
    stack = [str(path)]
    while stack:
        top = stack.pop()
        try:
            total += os.lstat(top).st_blocks * 512
            entries = list(os.scandir(top))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class Sampler:
    """du of a directory every `every` seconds in a thread; keeps the peak and its time."""

    def __init__(self, path: Path, every: float = 0.05) -> None:
        self.path, self.every = path, every
        self.peak = 0
        self.samples = 0
        self.when = ""
        self.phase = "start"
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = du(self.path)
            if used > self.peak:
                self.peak, self.when = used, self.phase
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def fsync_fuse(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fsync_fuse", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=timeout,
    )


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def mnt(tmp_path):
    reason = have_fuse()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    if os.path.ismount(path):
        fsync_fuse("unmount", str(path), "--lazy", timeout=60)
    if os.path.ismount(path):
        fusermount("-u", "-z", str(path))


def test_cache_directory_stays_within_cache_size(emulator, share_name, mnt, tmp_path):
    share = Share(emulator.connection_string, share_name)
    rnd = random.Random(11)
    big = rnd.randbytes(2 * CACHE + 12345)
    share.put("big.bin", big)
    listed = 3000
    share.client.create_directory("listed")

    def make(i: int) -> None:
        share.client.get_file_client(f"listed/entry-with-a-longish-name-{i:06d}").create_file(0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(listed)))

    cache = tmp_path / "cache"
    url = emulator.share_url(share_name)
    r = fsync_fuse(
        "mount",
        url,
        str(mnt),
        "--cache-dir",
        str(cache),
        "--cache-size",
        "64M",
        "--writeback-delay",
        "0.2",
        "--debug",
    )
    assert r.returncode == 0, r.stderr
    with Sampler(cache) as s:
        s.phase = "read big"
        assert file_sha(mnt / "big.bin") == hashlib.sha256(big).hexdigest()

        s.phase = "write big"
        out = rnd.randbytes(2 * CACHE + 777)
        with open(mnt / "out.bin", "wb") as fh:
            for i in range(0, len(out), MiB):
                fh.write(out[i : i + MiB])

        s.phase = "small files"
        (mnt / "small").mkdir()
        small = {f"s{i:05d}": rnd.randbytes(rnd.randrange(1, 40_000)) for i in range(1500)}
        for name, data in small.items():
            (mnt / "small" / name).write_bytes(data)

        s.phase = "listing"
        names = os.listdir(mnt / "listed")
        assert len(names) == listed
        for name in names[:: max(1, listed // 300)]:
            os.stat(mnt / "listed" / name)

        s.phase = "read back"
        for name, data in list(small.items())[::7]:
            drop_page_cache(mnt / "small" / name)
            assert (mnt / "small" / name).read_bytes() == data
        drop_page_cache(mnt / "big.bin")
        with open(mnt / "big.bin", "rb") as fh:
            for _ in range(30):
                off = rnd.randrange(len(big))
                fh.seek(off)
                assert fh.read(MiB) == big[off : off + MiB]

        s.phase = "drain"
        deadline = time.monotonic() + 180
        while True:
            pending = json.loads(os.getxattr(mnt, "user.fsync.pending"))
            if not pending["files"] and not pending["ops"]:
                break
            assert time.monotonic() < deadline, pending
            time.sleep(0.2)
        s.phase = "unmount"
        r = fsync_fuse("unmount", str(mnt))
        assert r.returncode == 0, r.stderr
    assert share.get("out.bin") == out
    print(f"peak {s.peak} bytes ({s.peak / MiB:.2f} MiB) during '{s.when}' in {s.samples} samples")
    assert s.samples > 50
    log = (cache / "fsync-fuse.log").read_text(errors="replace")[-3000:]
    assert s.peak <= CACHE, (
        f"the cache directory used {s.peak} bytes ({s.peak / MiB:.1f} MiB) during "
        f"'{s.when}', bound {CACHE}\n{log}"
    )
    assert s.peak > CACHE // 2  # the cache was really used


LOG_CHILD = """
import logging, os, sys
from fsync_fuse.cli import setup_logging
path, limit = sys.argv[1], int(sys.argv[2])
out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # as background.py does
os.dup2(out, 1)
os.dup2(out, 2)
setup_logging(False, path, max_bytes=limit)
assert os.path.getsize(path) <= limit, "an oversize log left from before was not trimmed"
log = logging.getLogger("fsync_fuse.test")
for i in range(3000):
    log.info("line %d of a log that goes on: \\u00e9\\u00e8\\u4e2d\\u6587 %s", i, "x" * (i % 300))
    if i % 500 == 0:
        os.write(2, b"written to stderr %d\\n" % i)
log.warning("a huge record: %s", "\\u4e2d" * limit)
os.write(2, b"stderr after the last rotation\\n")
log.info("the end")
"""


def test_log_in_the_cache_directory_rotates_within_its_reserve(tmp_path):
    """The daemon's log rotates at its limit with one older file: each stays below it, bytes
    counted (not characters), a huge record is cut, an oversize log left by an older version
    is trimmed, and stderr (where a background daemon's tracebacks go) follows the log."""
    from fsync_fuse.config import log_limit

    limit = log_limit(8 * MiB)
    path = tmp_path / "fsync-fuse.log"
    path.write_bytes(b"old line\n" * (limit // 3))  # an older version's unbounded log
    r = subprocess.run(
        [sys.executable, "-c", LOG_CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    older = tmp_path / "fsync-fuse.log.1"
    assert older.exists()
    for p in (path, older):
        assert p.stat().st_size < limit
        assert p.stat().st_blocks * 512 <= limit
    text = path.read_text()
    assert text.endswith("the end\n")
    assert "stderr after the last rotation" in text
    assert "more cut]" in path.read_text() + older.read_text()
