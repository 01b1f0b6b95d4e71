"""fsx-style: thousands of random writes, truncates, reads, shared-mmap reads and writes, and
fallocate (extend, keep size, punch hole, zero range) at random offsets on a file larger than
the cache, checked against a model in memory, while uploads run underneath; then the share
and a fresh mount must hold exactly the model."""

from __future__ import annotations

import mmap
import os
import random

import pytest

from tests.mount.helpers import sha

pytestmark = pytest.mark.mount

KiB, MiB = 1024, 1024 * 1024
MAX_SIZE = 10 * MiB
OPS = int(os.environ.get("FSX_OPS", "3000"))
SEED = int(os.environ.get("FSX_SEED", "20261125"))


KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def drop(fd: int) -> None:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def test_fsx(mounter, share, share_url):
    rnd = random.Random(SEED)
    # the share starts with content, so early reads and partial writes go to the remote
    model = bytearray(rnd.randbytes(3 * MiB + 4321))
    share.put("fsx.bin", bytes(model))
    m = mounter(
        share_url,
        args=[
            "--cache-size",
            "2M",
            "--block-size",
            "64K",
            "--writeback-delay",
            "0.05",
            "--read-ahead",
            "256K",
        ],
    )
    path = m.mnt / "fsx.bin"
    fd = os.open(path, os.O_RDWR)
    log: list[str] = []
    try:
        for i in range(OPS):
            r = rnd.random()
            if r < 0.40:
                off = rnd.randrange(0, MAX_SIZE)
                n = (
                    rnd.choice([1, 7, 511, 4096, 65536, 70000])
                    if rnd.random() < 0.5
                    else rnd.randrange(1, 300 * KiB)
                )
                n = min(n, MAX_SIZE - off) or 1
                data = rnd.randbytes(n)
                log.append(f"{i} write {off} {n}")
                assert os.pwrite(fd, data, off) == n
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + n] = data
            elif r < 0.44:
                mode = rnd.choice([0, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE, ZERO_RANGE])
                off = rnd.randrange(0, MAX_SIZE - 1)
                n = min(rnd.randrange(1, 600 * KiB), MAX_SIZE - off)
                log.append(f"{i} fallocate {mode:#x} {off} {n}")
                fallocate(fd, mode, off, n)
                end = off + n
                if mode & (PUNCH_HOLE | ZERO_RANGE):
                    stop = min(end, len(model)) if mode & KEEP_SIZE else end
                    if stop > off:
                        if stop > len(model):
                            model.extend(bytes(stop - len(model)))
                        model[off:stop] = bytes(stop - off)
                if not mode & KEEP_SIZE and end > len(model):
                    model.extend(bytes(end - len(model)))
            elif r < 0.48:
                size = rnd.choice([0, rnd.randrange(0, len(model) + 1), rnd.randrange(0, MAX_SIZE)])
                log.append(f"{i} truncate {size}")
                os.ftruncate(fd, size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            elif r < 0.93:
                dropped = rnd.random() < 0.6
                if dropped:
                    drop(fd)  # make the read reach the daemon, not the page cache
                off = rnd.randrange(0, max(1, len(model) + 100))
                n = rnd.randrange(1, 400 * KiB)
                log.append(f"{i} read {off} {n}")
                got = os.pread(fd, n, off)
                want = bytes(model[off : off + n])
                if got != want:
                    bad = (
                        next(j for j in range(min(len(got), len(want))) if got[j] != want[j])
                        if len(got) == len(want)
                        else -1
                    )
                    end = max(j for j in range(len(got)) if got[j] != want[j]) + 1
                    (m.mnt.parent / "fsx-ops.txt").write_text("\n".join(log))
                    drop(fd)
                    again = os.pread(fd, n, off) == want
                    import time

                    time.sleep(2)
                    on_share = share.get("fsx.bin")[off : off + n] == want
                    log.append(f"reread ok: {again}; share ok: {on_share}; dropped {dropped}")
                    raise AssertionError(
                        f"seed {SEED}: mismatch at op {i}: read {off}+{n}: got {len(got)} bytes "
                        f"want {len(want)}; first bad byte at file offset {off + bad}, bad run "
                        f"to {off + end} ({end - bad} bytes), got zeros: {not any(got[bad:end])}; "
                        f"last ops: {log[-13:]}"
                    )
            elif r < 0.95 and model:
                # through a shared mapping of the file: the kernel pages it in and writes
                # dirty pages back through the mount
                off = rnd.randrange(0, len(model))
                n = min(rnd.randrange(1, 200 * KiB), len(model) - off)
                with mmap.mmap(fd, len(model)) as mm:
                    if rnd.random() < 0.5:
                        log.append(f"{i} mmap-read {off} {n}")
                        assert mm[off : off + n] == bytes(model[off : off + n]), (
                            f"seed {SEED} op {i}: mmap read {off}+{n} differs; last {log[-13:]}"
                        )
                    else:
                        data = rnd.randbytes(n)
                        log.append(f"{i} mmap-write {off} {n}")
                        mm[off : off + n] = data
                        mm.flush()
                        model[off : off + n] = data
            elif r < 0.96:
                log.append(f"{i} fsync")
                os.fsync(fd)
            else:
                log.append(f"{i} reopen")
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
                drop(fd)
        assert os.fstat(fd).st_size == len(model)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    drop(fd)
    os.close(fd)
    assert sha(path.read_bytes()) == sha(bytes(model)), f"seed {SEED}"
    m.wait_drained()
    assert sha(share.get("fsx.bin")) == sha(bytes(model)), f"seed {SEED}: the share differs"
    assert m.stop() == 0
    m2 = mounter(
        share_url,
        name="fresh",
        cache="fresh-cache",
        args=["--cache-size", "2M", "--block-size", "64K"],
    )
    assert sha((m2.mnt / "fsx.bin").read_bytes()) == sha(bytes(model))
    assert m2.stop() == 0
