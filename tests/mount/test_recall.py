"""A file read at random that keeps missing the cache is recalled whole in the background
(reader.py); one larger than a quarter of the cache is not."""

from __future__ import annotations

import json
import os
import random

from tests.mount.helpers import eventually


def random_reads(path, size: int, n: int, rnd: random.Random, want: bytes) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(n):
            off = rnd.randrange(0, size - 4096)
            assert os.pread(fd, 4096, off) == want[off : off + 4096]
    finally:
        os.close(fd)


def test_random_reader_gets_the_file_recalled(mounter, share, share_url):
    rnd = random.Random(5)
    small = rnd.randbytes(12 << 20)
    big = rnd.randbytes(20 << 20)
    share.put("small.bin", small)
    share.put("big.bin", big)
    m = mounter(share_url, args=["--cache-size", "64M", "--block-size", "256K"])

    # a handle kept open while the recall runs (it stops when the last handle goes)
    fd = os.open(m.mnt / "small.bin", os.O_RDONLY)
    try:
        random_reads(m.mnt / "small.bin", len(small), 12, rnd, small)
        eventually(
            lambda: os.getxattr(m.mnt / "small.bin", "user.fsync.state") == b"local",
            what="recalled whole",
        )
    finally:
        os.close(fd)
    st = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
    assert st["read"]["recalls"] == 1
    assert st["read"]["recalled_bytes"] == len(small)
    with open(m.mnt / "small.bin", "rb") as fh:
        assert fh.read() == small

    # over a quarter of the cache: read at random, fetched block by block only
    random_reads(m.mnt / "big.bin", len(big), 12, rnd, big)
    assert os.getxattr(m.mnt / "big.bin", "user.fsync.state") == b"partial"
    st = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
    assert st["read"]["recalls"] == 1
    assert m.stop() == 0


def test_reading_a_directory_in_order_fetches_ahead(mounter, share, share_url, emulator):
    """Small files read one after the other: the next ones are fetched in the background, so
    with a slow share (20 ms a request) the reader does not wait a round trip per file."""
    rnd = random.Random(6)
    files = {f"f{i:03}.txt": rnd.randbytes(rnd.randrange(1, 60000)) for i in range(60)}
    for name, data in files.items():
        share.put(f"d/{name}", data)
    share.put("d/big.bin", rnd.randbytes(3 << 20))  # larger than a block: not fetched ahead
    m = mounter(share_url)
    names = sorted(os.listdir(m.mnt / "d"))
    emulator.set_faults(latency_ms=20)
    try:
        for name in names[:3]:
            if name in files:
                assert (m.mnt / "d" / name).read_bytes() == files[name]
        # the reader pauses: files further down were fetched meanwhile, unopened
        eventually(
            lambda: os.getxattr(m.mnt / "d" / names[20], "user.fsync.state") == b"local",
            what="fetched ahead",
        )
        for name in names:
            if name in files:
                assert (m.mnt / "d" / name).read_bytes() == files[name]
    finally:
        emulator.clear_faults()
    st = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
    assert st["read"]["dir_ahead_files"] >= 50
    assert os.getxattr(m.mnt / "d/big.bin", "user.fsync.state") == b"tiered"
    assert m.stop() == 0


def test_a_tree_walk_fetches_ahead_from_the_first_file_of_each_directory(
    mounter, share, share_url, emulator
):
    """grep -r / find | xargs: a reader that moves on to the next directory keeps its streak,
    so that directory's next files are fetched from its first read, not its third."""
    rnd = random.Random(8)
    files = {f"{d}/f{i}.txt": rnd.randbytes(rnd.randrange(1, 9000)) for d in "ab" for i in range(8)}
    for path, data in files.items():
        share.put(path, data)
    m = mounter(share_url)
    for d in "ab":
        os.listdir(m.mnt / d)
    emulator.set_faults(latency_ms=20)
    try:
        for i in range(4):
            assert (m.mnt / f"a/f{i}.txt").read_bytes() == files[f"a/f{i}.txt"]
        assert (m.mnt / "b/f0.txt").read_bytes() == files["b/f0.txt"]  # one file of b only
        eventually(
            lambda: os.getxattr(m.mnt / "b/f5.txt", "user.fsync.state") == b"local",
            what="b fetched ahead after its first file",
        )
        for path, data in files.items():
            assert (m.mnt / path).read_bytes() == data
    finally:
        emulator.clear_faults()
    assert m.stop() == 0
