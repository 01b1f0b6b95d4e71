"""Wire-format parsing: SMB times at 100 ns, headers, and raw listing XML (from a recording)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from remote.azure_parse import entry_from_headers, format_smb_time, parse_listing, parse_smb_time

RECORDINGS = Path(__file__).resolve().parent.parent / "data" / "recordings"


def test_smb_time_roundtrip():
    ns = parse_smb_time("2022-10-05T22:13:15.3799153Z")
    epoch = datetime(2022, 10, 5, 22, 13, 15, tzinfo=UTC).timestamp()
    assert ns == int(epoch) * 10**9 + 379_915_300
    assert ns % 100 == 0 and ns % 1000 == 300
    assert format_smb_time(ns) == "2022-10-05T22:13:15.3799153Z"
    assert parse_smb_time("1970-01-01T00:00:01.0000001Z") == 1_000_000_100
    assert format_smb_time(0) == "1970-01-01T00:00:00.0000000Z"
    assert format_smb_time(1_999) == "1970-01-01T00:00:00.0000019Z"  # truncated to ticks
    assert parse_smb_time(None) is None and parse_smb_time("garbage") is None


def test_smb_time_agrees_with_the_library_parser():
    """The hand-sliced parser gives what strptime gives, and refuses what it refuses."""
    import calendar
    import random
    import time

    rnd = random.Random(5)
    for _ in range(2000):
        secs = rnd.randrange(0, 7_000_000_000)
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        ticks = rnd.randrange(10**7)
        got = parse_smb_time(f"{whole}.{ticks:07d}Z")
        assert (
            got == calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 10**9 + ticks * 100
        )
    for bad in (
        "2022-13-05T22:13:15Z",
        "2022-10-05T25:13:15Z",
        "2022-10-05T22:61:15Z",
        "2022-10-05 22:13:15Z",
        "2022-1x-05T22:13:15Z",
        "20221005T221315Z",
    ):
        assert parse_smb_time(bad) is None, bad


def test_entry_from_headers():
    h = {
        "Content-Length": "1024",
        "ETag": '"0x8DAA71ECCD647F1"',
        "x-ms-file-id": "13835128424026341376",
        "x-ms-file-attributes": "Archive",
        "x-ms-file-last-write-time": "2022-10-05T22:13:15.3799153Z",
        "x-ms-file-change-time": "2022-10-05T22:13:15.3799154Z",
        "x-ms-file-creation-time": "2022-10-05T22:13:15.3799152Z",
        "x-ms-meta-Mode": "0644",
    }
    e = entry_from_headers("f", False, h)
    assert e.size == 1024 and e.file_id == "13835128424026341376"
    assert e.change_ns - e.last_write_ns == 100 and e.last_write_ns - e.creation_ns == 100
    assert e.metadata == {"Mode": "0644"}


def test_parse_recorded_listing_with_marker():
    rec = json.loads(
        (
            RECORDINGS
            / "test_share.pyTestStorageSharetest_list_directories_and_files_with_num_results_and_marker.json"
        ).read_text()
    )
    bodies = [
        e["ResponseBody"]
        for e in rec["Entries"]
        if "comp=list&" in e["RequestUri"] and "restype=directory" in e["RequestUri"]
    ]
    entries, marker = parse_listing(bodies[0].encode("utf-8"))
    assert [e.name for e in entries] == ["filea1", "filea2"]
    assert marker == "1!8!ZmlsZWEz"
    assert entries[0].size == 4 and entries[0].file_id == "11529285414812647424"
    entries, marker = parse_listing(bodies[1].encode("utf-8"))
    assert [e.name for e in entries] == ["filea3", "fileb1"] and marker is None


def test_parse_listing_full_properties_and_encoded_names():
    body = (
        '\ufeff<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" '
        'ShareName="s" DirectoryPath=""><DirectoryId>0</DirectoryId><Entries>'
        "<Directory><Name>d</Name><FileId>7</FileId><Properties>"
        "<CreationTime>2022-10-05T22:13:15.0000001Z</CreationTime>"
        "<LastWriteTime>2022-10-05T22:13:15.0000002Z</LastWriteTime>"
        "<ChangeTime>2022-10-05T22:13:15.0000003Z</ChangeTime>"
        '<Etag>"0x1"</Etag></Properties><Attributes>Directory</Attributes></Directory>'
        '<File><Name Encoded="true">a%01b</Name><FileId>8</FileId><Properties>'
        "<Content-Length>12</Content-Length></Properties><Attributes>Archive</Attributes></File>"
        "</Entries><NextMarker /></EnumerationResults>"
    ).encode()
    entries, marker = parse_listing(body)
    assert marker is None
    d, f = entries
    assert d.is_dir and d.etag == '"0x1"' and d.attributes == "Directory"
    assert d.last_write_ns - d.creation_ns == 100
    assert f.name == "a\x01b" and f.size == 12 and not f.is_dir
