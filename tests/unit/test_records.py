"""Records in LMDB are JSON whichever encoder wrote them (fsync_fuse/records.py): orjson's and
json's read back with either, and what orjson refuses goes through json."""

from __future__ import annotations

import json

import pytest

from fsync_fuse import records
from fsync_fuse.attrs import FILE, Inode


@pytest.mark.parametrize(
    "obj",
    [
        {"op": "create", "ino": 7, "path": "d/日本 é.txt", "meta": {"fsync_mode": "100644"}},
        {"t": 2**70, "neg": -(2**65)},  # beyond 64 bits: orjson refuses, json writes it
        {"name": "bad\udcffbyte"},  # a lone surrogate: orjson refuses, json escapes it
    ],
)
def test_round_trips_with_either_encoder(obj):
    raw = records.dumps(obj)
    assert records.loads(raw) == obj
    assert json.loads(raw) == obj
    assert records.loads(json.dumps(obj).encode()) == obj  # as an older version wrote it


def test_an_inode_record_reads_back_equal():
    rec = Inode(9, 1, "naïve.txt", FILE, size=5, mtime_ns=1_765_000_000_123_456_700, mode=0o640)
    rec.file_id, rec.etag, rec.extra = "13835058055282163712", '"0x8DB1"', {"user.k": "v"}
    back = Inode.decode(9, rec.encode())
    assert back == rec
