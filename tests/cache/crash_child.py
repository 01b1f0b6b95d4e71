"""Child process of test_crash: random cache operations in a loop until SIGKILL arrives.

Usage: python -m tests.cache.crash_child DIR SEED

Every content-changing operation is appended to DIR/log (one JSON line, written before the
operation runs; the page cache keeps it across SIGKILL) so the parent can replay the history.
The model remote is DIR/remote/<key>, replaced atomically on upload, like a Put Range."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import trio

from cache import BlockCache, CacheFull

BS = 16 * 1024
MAX_FILE = 12 * BS
MAX_BYTES = 24 * BS
KEYS = (1, 2, 3)
SHARE = "crash-test-share"


def open_cache(directory: Path) -> BlockCache:
    return BlockCache.open(
        directory / "cache",
        max_bytes=MAX_BYTES,
        share_id=SHARE,
        block_size=BS,
        full_timeout=0,
        bound="data",
    )


def remote_fetch(directory: Path, key: int):
    async def fetch(offset: int, length: int) -> bytes:
        try:
            with open(directory / "remote" / str(key), "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError:
            return b""

    return fetch


async def main(directory: Path, seed: int) -> None:
    rng = random.Random(seed)
    sizes = {int(k): v for k, v in json.loads((directory / "state.json").read_text()).items()}
    log = os.open(directory / "log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(**entry) -> None:
        os.write(log, (json.dumps(entry) + "\n").encode())

    cache = open_cache(directory)
    cache.volatile_linger = rng.choice([0.0, 30.0])
    print("ready", flush=True)
    while True:
        k = rng.choice(KEYS)
        fetch = remote_fetch(directory, k)
        r = rng.random()
        if r < 0.35:
            off = rng.randrange(MAX_FILE)
            n = rng.randint(1, min(MAX_FILE - off, rng.choice([100, BS, 3 * BS])))
            wseed = rng.getrandbits(32)
            note(op="write", k=k, off=off, n=n, seed=wseed)
            try:
                await cache.write(k, off, random.Random(wseed).randbytes(n), fetch=fetch)
            except CacheFull:
                note(op="abort")
                continue
            sizes[k] = max(sizes[k], off + n)
        elif r < 0.55:
            off = rng.randrange(MAX_FILE)
            await cache.read(k, off, rng.randint(1, 3 * BS), size=sizes[k], fetch=fetch)
        elif r < 0.62:
            size = rng.randrange(MAX_FILE + 1)
            note(op="truncate", k=k, size=size)
            cache.truncate(k, size)
            sizes[k] = size
        elif r < 0.75:
            content = await cache.read(k, 0, sizes[k], size=sizes[k], fetch=fetch)
            tokens = []
            for off, n in cache.dirty_ranges(k):
                data, token = cache.snapshot_range(k, off, n)
                assert data == content[off : off + n]
                tokens.append(token)
            tmp = directory / "remote" / f"{k}.tmp"
            tmp.write_bytes(content)
            os.rename(tmp, directory / "remote" / str(k))
            for token in tokens:
                cache.mark_clean(k, token)
            cache.set_remote_valid(k, sizes[k])
        elif r < 0.82:
            cache.evict(rng.choice([None, BS, 4 * BS]))
        elif r < 0.85:
            cache.tier(k)
        else:
            note(op="commit-start")
            cache.commit()
            note(op="commit-end")
        await trio.lowlevel.checkpoint()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
