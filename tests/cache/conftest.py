"""Fixtures for the cache tests: a cache directory, a model remote, a cache opener."""

from __future__ import annotations

import functools
import random

import pytest

from cache import BlockCache
from tests.cache.remote_model import ModelRemote

KiB = 1024


@functools.cache
def blob(n: int, seed: int) -> bytes:
    """Deterministic content for file `seed`, made once per (n, seed)."""
    return random.Random(seed).randbytes(n)


def put(c, remote, key: int, nbytes: int) -> None:
    """Puts file `key` on the model share and tells the cache its size."""
    remote.put(key, blob(nbytes, key))
    c.set_remote_valid(key, nbytes)


async def read_all(c, remote, key: int, nbytes: int) -> None:
    """Reads file `key` whole through the cache and checks its content."""
    assert await c.read(key, 0, nbytes, size=nbytes, fetch=remote.fetch(key)) == blob(nbytes, key)


MiB = 1024 * KiB


class Clock:
    """The cache's clock in tests (BlockCache.open(clock=...)): wall-clock seconds that only
    move when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def remote():
    return ModelRemote()


@pytest.fixture
def open_cache(tmp_path):
    """open_cache(**kw) -> BlockCache in tmp_path/cache; every cache opened is closed after.

    max_bytes bounds the data files only here (bound="data"), so tests of eviction can count
    blocks; test_bound.py tests the whole directory's bound (the default of BlockCache.open)."""
    opened: list[BlockCache] = []

    def opener(**kw) -> BlockCache:
        kw.setdefault("max_bytes", 64 * MiB)
        kw.setdefault("share_id", "https://acct.file.core.windows.net/share")
        kw.setdefault("block_size", 64 * KiB)
        kw.setdefault("bound", "data")
        c = BlockCache.open(tmp_path / "cache", **kw)
        opened.append(c)
        return c

    yield opener
    for c in opened:
        c.close()
