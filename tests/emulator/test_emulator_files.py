"""File operations through the real SDK against the emulator process."""

from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import ContentSettings, NTFSAttributes, ShareServiceClient


@pytest.fixture
def share(emulator, share_name):
    return ShareServiceClient.from_connection_string(emulator.connection_string).get_share_client(
        share_name
    )


def test_create_upload_download_roundtrip(share):
    data = os.urandom(3 * 1024 * 1024 + 17)
    f = share.get_file_client("a.bin")
    f.upload_file(data)
    props = f.get_file_properties()
    assert props.size == len(data)
    assert props.etag.startswith('"0x')
    assert f.download_file().readall() == data
    assert f.download_file(offset=1000, length=5000).readall() == data[1000:6000]
    # past the end: clipped like the service does
    assert f.download_file(offset=len(data) - 10, length=100).readall() == data[-10:]


def test_create_sets_response_headers_like_the_service(share):
    f = share.get_file_client("h.txt")
    r = f.create_file(1024)
    assert r["etag"].startswith('"0x8') and r["file_id"].isdigit()
    assert r["file_parent_id"] == "0"
    assert r["file_attributes"] == "Archive"
    raw = f.get_file_properties(raw_response_hook=_capture)
    h = _capture.last
    assert h["x-ms-type"] == "File" and h["x-ms-server-encrypted"] == "true"
    assert h["Content-Type"] == "application/octet-stream"
    t = h["x-ms-file-creation-time"]
    assert t.endswith("Z") and len(t.split(".")[1]) == 8  # 7 digits + Z
    assert h["x-ms-lease-state"] == "available" and h["x-ms-lease-status"] == "unlocked"
    assert raw.size == 1024


def _capture(response):
    _capture.last = response.http_response.headers


def test_ranged_get_206_and_416(share):
    f = share.get_file_client("r.bin")
    f.upload_file(b"0123456789")
    resp = f.download_file(offset=2, length=3)
    assert resp.readall() == b"234"
    empty = share.get_file_client("empty.bin")
    empty.create_file(0)
    assert empty.download_file().readall() == b""  # SDK falls back after 416
    with pytest.raises(HttpResponseError) as ei:
        f.download_file(offset=50, length=10).readall()
    assert ei.value.status_code == 416
    assert ei.value.error_code == "InvalidRange"


def test_range_get_content_md5(share):
    f = share.get_file_client("m.bin")
    data = os.urandom(100_000)
    f.upload_file(data)
    d = f.download_file(offset=0, length=4096, validate_content=True)
    assert d.readall() == data[:4096]


def test_put_range_past_eof_and_md5_mismatch(share):
    f = share.get_file_client("p.bin")
    f.create_file(100)
    with pytest.raises(HttpResponseError) as ei:
        f.upload_range(b"x" * 10, offset=95, length=10)
    assert ei.value.error_code == "InvalidRange"
    # a correct Content-MD5 is accepted (validate_content sends it)
    f.upload_range(b"y" * 10, offset=0, length=10, validate_content=True)
    assert f.download_file(offset=0, length=10).readall() == b"y" * 10


def test_clear_range_and_list_ranges(share):
    f = share.get_file_client("ranges.bin")
    f.create_file(2048)
    f.upload_range(b"a" * 512, offset=0, length=512)
    f.upload_range(b"b" * 512, offset=1024, length=512)
    assert _ranges(f.list_ranges()) == [(0, 511, False), (1024, 1535, False)]
    assert _ranges(f.list_ranges(results_per_page=1)) == [(0, 511, False), (1024, 1535, False)]
    assert _ranges(f.list_ranges(offset=1000, length=100)) == [(1024, 1099, False)]
    f.clear_range(offset=0, length=512)
    assert _ranges(f.list_ranges()) == [(1024, 1535, False)]
    assert f.download_file(offset=0, length=512).readall() == bytes(512)


def _ranges(items):
    return [(r.start, r.end, r.cleared) for r in items]


def test_list_ranges_diff_against_snapshot(share, emulator):
    f = share.get_file_client("diff.bin")
    f.create_file(4096)
    f.upload_range(b"a" * 1024, offset=0, length=1024)
    f.upload_range(b"b" * 512, offset=2048, length=512)
    snap = share.create_snapshot()["snapshot"]
    f.upload_range(b"c" * 512, offset=512, length=512)  # changed
    f.clear_range(offset=2048, length=512)  # cleared
    f.upload_range(b"d" * 512, offset=3584, length=512)  # new
    assert _ranges(f.list_ranges_diff(snap)) == [
        (512, 1023, False),
        (2048, 2559, True),
        (3584, 4095, False),
    ]
    changed, cleared = f.get_ranges_diff(previous_sharesnapshot=snap)  # the older API
    assert changed == [{"start": 512, "end": 1023}, {"start": 3584, "end": 4095}]
    assert cleared == [{"start": 2048, "end": 2559}]
    # the snapshot still has the old bytes
    old = share.get_file_client("diff.bin")
    old = (
        ShareServiceClient.from_connection_string(emulator.connection_string)
        .get_share_client(share.share_name, snapshot=snap)
        .get_file_client("diff.bin")
    )
    assert old.download_file(offset=512, length=512).readall() == b"a" * 512
    assert old.download_file(offset=2048, length=512).readall() == b"b" * 512


def test_set_properties_resize_and_content_headers(share):
    f = share.get_file_client("props.bin")
    f.upload_file(b"x" * 1024)
    before = f.get_file_properties()
    f.resize_file(5)
    after = f.get_file_properties()
    assert after.size == 5 and f.download_file().readall() == b"xxxxx"
    assert after.last_write_time >= before.last_write_time
    assert after.content_settings.content_type == "application/octet-stream"
    f.resize_file(4000)
    assert f.download_file().readall() == b"xxxxx" + bytes(3995)
    assert _ranges(f.list_ranges()) == [(0, 4, False)]
    f.set_http_headers(ContentSettings(content_language="spanish", content_disposition="inline"))
    p = f.get_file_properties()
    assert p.content_settings.content_language == "spanish"
    assert p.content_settings.content_disposition == "inline"
    assert p.content_settings.content_type is None  # cleared, like the service


def test_smb_times_and_attributes(share):
    f = share.get_file_client("smb.txt")
    ct = datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    lw = datetime(2021, 6, 7, 8, 9, 10, 654321, tzinfo=UTC)
    f.create_file(
        10,
        file_creation_time=ct,
        file_last_write_time=lw,
        file_attributes=NTFSAttributes(read_only=True, hidden=True),
    )
    p = f.get_file_properties()
    assert p.creation_time.replace(tzinfo=UTC) == ct
    assert p.last_write_time.replace(tzinfo=UTC) == lw
    assert "ReadOnly" in p.file_attributes and "Hidden" in p.file_attributes
    f.set_http_headers(ContentSettings(), file_last_write_time="now", file_attributes="preserve")
    p2 = f.get_file_properties()
    assert p2.last_write_time > p.last_write_time
    assert p2.creation_time == p.creation_time  # preserved
    assert p2.file_attributes == p.file_attributes


def test_metadata_roundtrip_case_preserving(share):
    f = share.get_file_client("meta.txt")
    f.create_file(1, metadata={"Hello": "World", "num": "42"})
    assert f.get_file_properties().metadata == {"Hello": "World", "num": "42"}
    f.set_file_metadata({"other": "x"})
    assert f.get_file_properties().metadata == {"other": "x"}


def test_metadata_is_limited_to_8_kib(share):
    """Names and values together at most 8 KiB (remote/naming.py MAX_METADATA): at the
    limit it is kept, one byte more is MetadataTooLarge (400), on create and on set."""
    from azure.core.exceptions import HttpResponseError

    f = share.get_file_client("big-meta.txt")
    at_limit = {"k": "v" * (8 * 1024 - 1)}
    f.create_file(1, metadata=at_limit)
    assert f.get_file_properties().metadata == at_limit
    for call in (
        lambda: f.set_file_metadata({"k": "v" * 8 * 1024}),
        lambda: share.get_file_client("big-2.txt").create_file(1, metadata={"a": "b" * 8192}),
        lambda: share.create_directory("big-d", metadata={"a" * 100: "b" * 8100}),
    ):
        with pytest.raises(HttpResponseError) as ei:
            call()
        assert ei.value.status_code == 400 and ei.value.error_code == "MetadataTooLarge"
    assert f.get_file_properties().metadata == at_limit


def test_a_read_only_file_keeps_its_content_and_its_name(share):
    """ReadOnly (an SMB attribute) refuses content changes and deletion with
    ReadOnlyAttribute (409); properties stay settable, which is how it is cleared; a rename
    over it needs x-ms-file-rename-ignore-readonly."""
    f = share.get_file_client("ro.txt")
    f.upload_file(b"kept" * 128)
    props = dict(file_creation_time="preserve", file_last_write_time="preserve")
    f.set_http_headers(ContentSettings(), file_attributes="ReadOnly|Archive", **props)
    share.get_file_client("new.txt").upload_file(b"other")
    for call in (
        lambda: f.upload_range(b"xxxx", 0, 4),
        lambda: f.clear_range(0, 512),
        lambda: f.resize_file(10),
        lambda: f.delete_file(),
        lambda: f.create_file(4),
        lambda: share.get_file_client("new.txt").rename_file("ro.txt", overwrite=True),
    ):
        with pytest.raises(HttpResponseError) as ei:
            call()
        assert ei.value.status_code == 409 and ei.value.error_code == "ReadOnlyAttribute"
    assert f.download_file().readall() == b"kept" * 128
    # cleared, it takes changes again
    f.set_http_headers(ContentSettings(), file_attributes="Archive", **props)
    f.upload_range(b"abcd", 0, 4)
    f.set_http_headers(ContentSettings(), file_attributes="ReadOnly", **props)
    share.get_file_client("new.txt").rename_file("ro.txt", overwrite=True, ignore_read_only=True)
    assert f.download_file().readall() == b"other"


def test_delete_and_not_found(share):
    f = share.get_file_client("gone.txt")
    f.create_file(1)
    f.delete_file()
    with pytest.raises(ResourceNotFoundError) as ei:
        f.get_file_properties()
    assert ei.value.error_code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as ei:
        share.get_file_client("nodir/x.txt").create_file(1)
    assert ei.value.error_code == "ParentNotFound"


def test_case_insensitive_and_preserving(share):
    share.get_file_client("MixedCase.TXT").upload_file(b"abc")
    assert share.get_file_client("mixedcase.txt").download_file().readall() == b"abc"
    names = [e["name"] for e in share.list_directories_and_files()]
    assert names == ["MixedCase.TXT"]
    with pytest.raises(ResourceExistsError) as ei:
        share.create_directory("MIXEDCASE.txt")
    assert ei.value.error_code == "ResourceTypeMismatch"


@pytest.mark.parametrize("bad", ['a"b', "a\\b", "a:b", "a|b", "a<b", "a>b", "a*b", "a?b", "a\x01b"])
def test_forbidden_characters(share, bad):
    with pytest.raises(HttpResponseError) as ei:
        share.get_file_client(bad).create_file(1)
    assert ei.value.status_code == 400
    assert ei.value.error_code == "InvalidResourceName"


def test_leases(share):
    f = share.get_file_client("leased.bin")
    f.create_file(10)
    lease = f.acquire_lease("00000000-1111-2222-3333-444444444444")
    assert lease.id == "00000000-1111-2222-3333-444444444444"
    assert f.get_file_properties().lease.state == "leased"
    for op in (
        lambda: f.delete_file(),
        lambda: f.upload_range(b"x", 0, 1),
        lambda: f.set_file_metadata({"a": "b"}),
    ):
        with pytest.raises(HttpResponseError) as ei:
            op()
        assert ei.value.status_code == 412 and ei.value.error_code == "LeaseIdMissing"
    with pytest.raises(HttpResponseError) as ei:
        f.upload_range(b"x", 0, 1, lease="11111111-1111-1111-1111-111111111111")
    assert ei.value.error_code == "LeaseIdMismatchWithFileOperation"
    f.upload_range(b"x", 0, 1, lease=lease)
    with pytest.raises(HttpResponseError) as ei:
        f.acquire_lease("22222222-1111-1111-1111-111111111111")
    assert ei.value.error_code == "LeaseAlreadyPresent"
    lease.change("33333333-1111-1111-1111-111111111111")
    assert lease.id == "33333333-1111-1111-1111-111111111111"
    lease.break_lease()
    assert f.get_file_properties().lease.state == "broken"
    f.set_file_metadata({"a": "b"})  # a broken lease no longer blocks writes
    lease2 = f.acquire_lease()
    lease2.release()
    assert f.get_file_properties().lease.state == "available"
    f.delete_file()


def test_copy_within_account(share, emulator, share_name):
    src = share.get_file_client("src.bin")
    data = os.urandom(200_000)
    src.upload_file(data, metadata={"k": "v"})
    dst = share.get_file_client("dst.bin")
    r = dst.start_copy_from_url(src.url)
    assert r["copy_status"] == "success"
    p = dst.get_file_properties()
    assert p.copy.status == "success" and p.metadata == {"k": "v"}
    assert dst.download_file().readall() == data
    src.upload_range(b"z" * 10, 0, 10)  # copies share blobs copy-on-write
    assert dst.download_file(offset=0, length=10).readall() == data[:10]
    with pytest.raises(HttpResponseError):
        share.get_file_client("dst2.bin").start_copy_from_url(src.url + "-missing")


def test_rename_file(share):
    f = share.get_file_client("old.txt")
    f.upload_file(b"payload")
    fid = f.get_file_properties().file_id
    share.create_directory("sub")
    g = f.rename_file("sub/new.txt")
    p = g.get_file_properties()
    assert p.file_id == fid and g.download_file().readall() == b"payload"
    with pytest.raises(ResourceNotFoundError):
        f.get_file_properties()
    other = share.get_file_client("other.txt")
    other.upload_file(b"other")
    with pytest.raises(ResourceExistsError):
        other.rename_file("sub/new.txt")
    other.rename_file("sub/new.txt", overwrite=True)
    assert share.get_file_client("sub/new.txt").download_file().readall() == b"other"
    # read-only destination needs ignore_read_only
    ro = share.get_file_client("ro.txt")
    ro.create_file(1, file_attributes=NTFSAttributes(read_only=True))
    third = share.get_file_client("third.txt")
    third.upload_file(b"3")
    with pytest.raises(HttpResponseError) as ei:
        third.rename_file("ro.txt", overwrite=True)
    assert ei.value.error_code == "ReadOnlyAttribute"
    third.rename_file("ro.txt", overwrite=True, ignore_read_only=True)
    assert share.get_file_client("ro.txt").download_file().readall() == b"3"


def test_concurrent_writes_to_one_file_are_all_applied(share):
    f = share.get_file_client("conc.bin")
    chunk = 256 * 1024
    n = 32
    f.create_file(chunk * n)
    blocks = [bytes([i]) * chunk for i in range(n)]

    def put(i):
        f.upload_range(blocks[i], offset=i * chunk, length=chunk)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(n)))
    data = f.download_file().readall()
    assert data == b"".join(blocks)
    assert _ranges(f.list_ranges()) == [(0, chunk * n - 1, False)]
    md5 = base64.b64encode(hashlib.md5(data).digest())
    assert md5


def test_body_larger_than_4mib_rejected(share):
    f = share.get_file_client("big.bin")
    f.create_file(8 * 1024 * 1024)
    with pytest.raises(HttpResponseError) as ei:
        f.upload_range(b"x" * (4 * 1024 * 1024 + 1), offset=0, length=4 * 1024 * 1024 + 1)
    assert ei.value.status_code == 413


def test_trailing_dots_trimmed_unless_allowed(emulator, share_name):
    plain = ShareServiceClient.from_connection_string(emulator.connection_string)
    share = plain.get_share_client(share_name)
    share.get_file_client("name.").upload_file(b"1")
    assert [e["name"] for e in share.list_directories_and_files()] == ["name"]
    dotted = ShareServiceClient.from_connection_string(
        emulator.connection_string, allow_trailing_dot=True
    ).get_share_client(share_name)
    dotted.get_file_client("keep.").upload_file(b"2")
    assert sorted(e["name"] for e in share.list_directories_and_files()) == ["keep.", "name"]
    assert dotted.get_file_client("keep.").download_file().readall() == b"2"


@pytest.mark.parametrize(
    "name",
    ["a b", "ü ñ 字", "x%y", "a+b", "a#b", "a&b=c", "(1)", "~t", "s;c", "@at", "[br]", "'q'"],
)
def test_unusual_names_sign_and_roundtrip(share, name):
    d = share.create_directory(f"dir {name}")
    f = d.get_file_client(name)
    f.upload_file(name.encode())
    assert f.download_file().readall() == name.encode()
    assert [e["name"] for e in d.list_directories_and_files()] == [name]
    f.rename_file(f"dir {name}/{name}.2")
    assert share.get_file_client(f"dir {name}/{name}.2").get_file_properties().size == len(
        name.encode()
    )
