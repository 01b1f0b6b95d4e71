"""Directory operations and listings through the real SDK against the emulator process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import NTFSAttributes, ShareServiceClient


@pytest.fixture
def svc(emulator):
    return ShareServiceClient.from_connection_string(emulator.connection_string)


@pytest.fixture
def share(svc, share_name):
    return svc.get_share_client(share_name)


def test_create_get_delete(share):
    d = share.create_directory("dir1", metadata={"hello": "world"})
    p = d.get_directory_properties()
    assert p.metadata == {"hello": "world"}
    assert p.file_attributes == "Directory"
    assert p.file_id.isdigit() and p.parent_id == "0"
    assert p.etag.startswith('"0x')
    sub = d.create_subdirectory("sub")
    assert sub.get_directory_properties().parent_id == p.file_id
    with pytest.raises(ResourceExistsError) as ei:
        share.create_directory("DIR1")
    assert ei.value.error_code == "ResourceAlreadyExists"
    with pytest.raises(HttpResponseError) as ei:
        d.delete_directory()
    assert ei.value.error_code == "DirectoryNotEmpty"
    sub.delete_directory()
    d.delete_directory()
    with pytest.raises(ResourceNotFoundError) as ei:
        d.get_directory_properties()
    assert ei.value.error_code == "ResourceNotFound"


def test_parent_not_found(share):
    with pytest.raises(ResourceNotFoundError) as ei:
        share.get_directory_client("missing1/missing2").get_directory_properties()
    assert ei.value.error_code == "ParentNotFound"
    with pytest.raises(ResourceNotFoundError) as ei:
        share.get_directory_client("missing1/missing2").create_directory()
    assert ei.value.error_code == "ParentNotFound"


def test_file_is_not_a_directory(share):
    share.get_file_client("f").create_file(1)
    with pytest.raises(ResourceNotFoundError):
        share.get_directory_client("f").get_directory_properties()
    with pytest.raises(ResourceExistsError) as ei:
        share.create_directory("f")
    assert ei.value.error_code == "ResourceTypeMismatch"


def test_set_metadata_and_smb_properties(share):
    d = share.create_directory("d")
    before = d.get_directory_properties()
    d.set_directory_metadata({"a": "1"})
    after = d.get_directory_properties()
    assert after.metadata == {"a": "1"} and after.etag != before.etag
    assert after.change_time >= before.change_time
    d.set_http_headers(
        file_attributes=NTFSAttributes(hidden=True, directory=True),
        file_last_write_time="2020-01-01T00:00:00.0000000Z",
    )
    p = d.get_directory_properties()
    assert "Hidden" in p.file_attributes and "Directory" in p.file_attributes
    assert p.last_write_time.year == 2020


def test_listing_prefix_include_and_extended_info(share):
    d = share.create_directory("dir1")
    for n in ("subdir1", "subdir2", "Subdir3", "other"):
        d.create_subdirectory(n)
    d.get_file_client("file1").upload_file(b"data1")
    items = list(d.list_directories_and_files(name_starts_with="sub"))
    assert [i["name"] for i in items] == ["subdir1", "subdir2", "Subdir3"]
    items = list(
        d.list_directories_and_files(
            include=["timestamps", "Etag", "Attributes", "PermissionKey"],
            include_extended_info=True,
        )
    )
    by = {i["name"]: i for i in items}
    f = by["file1"]
    assert not f["is_directory"] and f["size"] == 5
    assert f["file_attributes"] == "Archive" and f["permission_key"]
    assert f["etag"].startswith('"0x') and f["creation_time"] and f["file_id"].isdigit()
    assert by["other"]["is_directory"] and by["other"]["file_attributes"] == "Directory"


def test_listing_pages_over_5000_entries(share):
    d = share.create_directory("many")
    names = [f"f{i:05d}" for i in range(5100)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: d.get_file_client(n).create_file(0), names))
    pages = d.list_directories_and_files().by_page()
    seen = []
    sizes = []
    for page in pages:
        batch = [i["name"] for i in page]
        sizes.append(len(batch))
        seen += batch
    assert seen == names
    assert sizes == [5000, 100]  # default and maximum page size 5000
    small = d.list_directories_and_files(results_per_page=1000).by_page()
    assert [len(list(p)) for p in small] == [1000] * 5 + [100]


def test_marker_paging_small(share):
    d = share.create_directory("p")
    for n in ("filea1", "filea2", "filea3", "fileb1"):
        d.get_file_client(n).create_file(4)
    pages = d.list_directories_and_files(results_per_page=2).by_page()
    first = next(pages)
    assert [i["name"] for i in first] == ["filea1", "filea2"]
    assert pages.continuation_token.startswith("1!")
    assert [i["name"] for i in next(pages)] == ["filea3", "fileb1"]


def test_rename_directory_keeps_subtree(share):
    d = share.create_directory("src")
    d.create_subdirectory("inner").get_file_client("x.txt").upload_file(b"x")
    fid = d.get_directory_properties().file_id
    new = d.rename_directory("dst")
    assert new.get_directory_properties().file_id == fid
    assert share.get_file_client("dst/inner/x.txt").download_file().readall() == b"x"
    with pytest.raises(ResourceNotFoundError):
        d.get_directory_properties()
    share.create_directory("taken")
    with pytest.raises(ResourceExistsError):
        new.rename_directory("taken")
    with pytest.raises(HttpResponseError):
        new.rename_directory("dst/inner/loop")  # into its own subtree
    # case-only rename
    new.rename_directory("DST")
    assert [i["name"] for i in share.list_directories_and_files()] == ["DST", "taken"]


def test_listing_a_snapshot_sees_frozen_state(svc, share):
    d = share.create_directory("d")
    d.get_file_client("before").upload_file(b"1")
    snap = share.create_snapshot()["snapshot"]
    d.get_file_client("after").upload_file(b"2")
    d.get_file_client("before").delete_file()
    snap_dir = svc.get_share_client(share.share_name, snapshot=snap).get_directory_client("d")
    assert [i["name"] for i in snap_dir.list_directories_and_files()] == ["before"]
    assert [i["name"] for i in d.list_directories_and_files()] == ["after"]
    assert snap_dir.get_file_client("before").download_file().readall() == b"1"
