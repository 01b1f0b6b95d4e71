"""Unmapping the index's pages (cache/mapped.py): the mapped size drops, the data stays."""

from __future__ import annotations

import os

import lmdb

from cache import BlockCache
from cache.mapped import MappedFile


def test_trim_unmaps_index_pages_and_keeps_the_data(tmp_path):
    cache = BlockCache.open(tmp_path / "c", max_bytes=1 << 30, share_id="s")
    try:
        db = cache.env.open_db(b"t")
        value = os.urandom(400)
        with cache.env.begin(write=True, db=db) as txn:
            for i in range(60_000):  # ~30 MB of pages
                txn.put(i.to_bytes(8, "big"), value)
        mapped = MappedFile(tmp_path / "c" / "index.lmdb" / "data.mdb")
        with cache.env.begin(db=db) as txn:
            assert sum(len(v) for _, v in txn.cursor()) == 60_000 * 400
        before = mapped.resident()
        assert before > 16 << 20
        cache.index_rss_limit = 1 << 20
        cache.trim_index()
        assert cache.index_trims == 1
        assert mapped.resident() < before // 8
        with cache.env.begin(db=db) as txn:  # everything reads back the same
            assert all(v == value for _, v in txn.cursor())
        assert mapped.resident() > before // 2
    finally:
        cache.close()
    env = lmdb.open(str(tmp_path / "c" / "index.lmdb"), max_dbs=64)
    with env.begin(db=env.open_db(b"t")) as txn:
        assert txn.stat()["entries"] == 60_000
    env.close()
