#!/usr/bin/env python3
"""Benchmark the block cache's hot paths against raw pread/pwrite of the same bytes, in one run.

Prints cached read throughput vs raw pread (1 MiB and 128 KiB reads, data in the page cache),
write throughput vs raw pwrite, and the per-operation overhead in microseconds. The target is
cached 1 MiB reads >= 0.8 x raw pread.

    .venv/bin/python scripts/bench_cache.py [--size-mib 128] [--rounds 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache import BlockCache  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10


async def no_fetch(offset: int, length: int) -> bytes:
    raise AssertionError("the benchmark must not fetch")


def raw_reads(path: Path, size: int, chunk: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.perf_counter()
        for off in range(0, size, chunk):
            os.pread(fd, chunk, off)
        return time.perf_counter() - t
    finally:
        os.close(fd)


async def cache_reads(cache: BlockCache, key: int, size: int, chunk: int) -> float:
    t = time.perf_counter()
    for off in range(0, size, chunk):
        await cache.read(key, off, chunk, size=size, fetch=no_fetch)
    return time.perf_counter() - t


def raw_writes(path: Path, size: int, chunk: int, buf: bytes) -> float:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t = time.perf_counter()
        for off in range(0, size, chunk):
            os.pwrite(fd, buf, off)
        return time.perf_counter() - t
    finally:
        os.close(fd)
        os.unlink(path)


async def cache_writes(cache: BlockCache, key: int, size: int, chunk: int, buf: bytes) -> float:
    t = time.perf_counter()
    for off in range(0, size, chunk):
        await cache.write(key, off, buf, fetch=no_fetch)
    elapsed = time.perf_counter() - t
    cache.delete(key)
    return elapsed


def line(label: str, nbytes: int, nops: int, raw: float, ours: float) -> None:
    ratio = raw / ours
    over = (ours - raw) / nops * 1e6
    print(
        f"{label:<22} raw {nbytes / raw / MiB:8.0f} MiB/s   cache {nbytes / ours / MiB:8.0f} MiB/s"
        f"   ratio {ratio:5.2f}   overhead {over:6.2f} us/op"
    )


async def main(args: argparse.Namespace) -> int:
    size = args.size_mib * MiB
    root = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=args.dir))
    cache = BlockCache.open(root / "cache", max_bytes=4 * size, share_id="bench")
    try:
        data = os.urandom(MiB)
        for off in range(0, size, MiB):
            await cache.write(1, off, data, fetch=no_fetch)
        cache.commit()
        path = cache.data_path(1)
        assert path is not None
        print(
            f"block size {cache.block_size // KiB} KiB, file {args.size_mib} MiB, "
            f"best of {args.rounds} rounds, data in the page cache"
        )
        ok = True
        for chunk in (MiB, 128 * KiB, 4 * KiB):
            raws, ours = [], []
            span = size if chunk >= 128 * KiB else min(size, 16 * MiB)
            for _ in range(args.rounds):  # interleaved, so both see the same machine state
                raws.append(raw_reads(path, span, chunk))
                ours.append(await cache_reads(cache, 1, span, chunk))
            raw, mine = min(raws), min(ours)
            line(f"read {chunk // KiB} KiB", span, span // chunk, raw, mine)
            if chunk == MiB:
                ok = raw / mine >= 0.8
                med = statistics.median(raws) / statistics.median(ours)
                print(f"{'':<22} (median ratio {med:.2f})")
        buf_cache = {c: os.urandom(c) for c in (MiB, 128 * KiB)}
        for chunk in (MiB, 128 * KiB):
            raws, ours = [], []
            span = min(size, 64 * MiB)
            for i in range(args.rounds):
                raws.append(raw_writes(root / "raw", span, chunk, buf_cache[chunk]))
                ours.append(await cache_writes(cache, 100 + i, span, chunk, buf_cache[chunk]))
            line(f"write {chunk // KiB} KiB (new)", span, span // chunk, min(raws), min(ours))
        print(f"stats: {cache.stats()}")
        print("target cached 1 MiB reads >= 0.8 x raw pread:", "MET" if ok else "NOT MET")
        return 0 if ok else 1
    finally:
        cache.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to put the cache (default: $TMPDIR)")
    sys.exit(trio.run(main, parser.parse_args()))
