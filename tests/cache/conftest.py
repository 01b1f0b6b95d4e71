"""Fixtures for the cache tests: a cache directory, a model remote, a cache opener."""

from __future__ import annotations

import pytest

from cache import BlockCache
from tests.cache.remote_model import ModelRemote

KiB = 1024
MiB = 1024 * KiB


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
