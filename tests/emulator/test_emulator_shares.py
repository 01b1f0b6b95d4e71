"""Service and share operations through the real SDK against the emulator process."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import Metrics, RetentionPolicy, ShareServiceClient


@pytest.fixture
def svc(emulator):
    return ShareServiceClient.from_connection_string(emulator.connection_string)


def _name() -> str:
    return "s" + uuid.uuid4().hex[:12]


def test_create_properties_quota_metadata_delete(svc):
    name = _name()
    share = svc.create_share(name, metadata={"a": "1"}, quota=10)
    p = share.get_share_properties()
    assert p.quota == 10 and p.metadata == {"a": "1"}
    assert p.etag.startswith('"0x') and p.last_modified
    share.set_share_quota(20)
    share.set_share_metadata({"b": "2"})
    p = share.get_share_properties()
    assert p.quota == 20 and p.metadata == {"b": "2"}
    with pytest.raises(ResourceExistsError) as ei:
        svc.create_share(name)
    assert ei.value.error_code == "ShareAlreadyExists"
    share.delete_share()
    with pytest.raises(ResourceNotFoundError) as ei:
        svc.get_share_client(_name()).get_share_properties()
    assert ei.value.error_code == "ShareNotFound"


def test_invalid_share_name(svc):
    with pytest.raises(HttpResponseError) as ei:
        svc.create_share("Bad_Name")
    assert ei.value.error_code == "InvalidResourceName"


def test_list_shares_prefix_paging_metadata_snapshots(svc):
    prefix = "l" + uuid.uuid4().hex[:8]
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        svc.create_share(n, metadata={"n": n})
    snap = svc.get_share_client(names[0]).create_snapshot()["snapshot"]
    listed = [s.name for s in svc.list_shares(name_starts_with=prefix)]
    assert listed == names
    pages = svc.list_shares(name_starts_with=prefix, results_per_page=2).by_page()
    assert [[s.name for s in p] for p in pages] == [names[0:2], names[2:4], names[4:5]]
    with_snaps = list(
        svc.list_shares(name_starts_with=prefix, include_snapshots=True, include_metadata=True)
    )
    assert [(s.name, s.snapshot) for s in with_snaps][:2] == [(names[0], snap), (names[0], None)]
    assert with_snaps[1].metadata == {"n": names[0]}
    for n in names:
        svc.get_share_client(n).delete_share(delete_snapshots=True)


def test_snapshots_freeze_state_and_delete_rules(svc):
    name = _name()
    share = svc.create_share(name)
    f = share.get_file_client("f.txt")
    f.upload_file(b"v1")
    share.set_share_metadata({"state": "one"})
    snap = share.create_snapshot()
    f.upload_file(b"version-2")
    share.create_directory("newdir")
    frozen = svc.get_share_client(name, snapshot=snap["snapshot"])
    assert frozen.get_file_client("f.txt").download_file().readall() == b"v1"
    assert frozen.get_file_client("f.txt").get_file_properties().size == 2
    assert [i["name"] for i in frozen.list_directories_and_files()] == ["f.txt"]
    assert frozen.get_share_properties().metadata == {"state": "one"}
    with pytest.raises(HttpResponseError) as ei:
        share.delete_share()
    assert ei.value.error_code == "ShareHasSnapshots"
    frozen.delete_share()  # deletes only the snapshot
    assert share.get_share_properties().name == name
    share.create_snapshot()
    share.delete_share(delete_snapshots=True)
    assert not [s for s in svc.list_shares(include_snapshots=True) if s.name == name]


def test_share_stats(svc):
    share = svc.create_share(_name())
    share.get_file_client("a").upload_file(b"x" * 1000)
    share.get_file_client("b").create_file(24)
    assert share.get_share_stats() == 1024
    share.delete_share()


def test_service_properties_roundtrip(svc):
    props = svc.get_service_properties()
    assert "hour_metrics" in props
    svc.set_service_properties(
        hour_metrics=Metrics(
            enabled=True, include_apis=True, retention_policy=RetentionPolicy(enabled=True, days=5)
        )
    )
    got = svc.get_service_properties()["hour_metrics"]
    assert got.enabled and got.retention_policy.days == 5
    svc.set_service_properties(hour_metrics=Metrics(enabled=False))


def test_share_lease_blocks_delete(svc):
    share = svc.create_share(_name())
    lease = share.acquire_lease(lease_duration=-1)
    with pytest.raises(HttpResponseError) as ei:
        share.delete_share()
    assert ei.value.status_code == 412 and ei.value.error_code == "LeaseIdMissing"
    lease.release()
    share.delete_share()


def test_file_permission_create_and_get(svc):
    share = svc.create_share(_name())
    sddl = "O:SYG:SYD:(A;;FA;;;SY)"
    key = share.create_permission_for_share(sddl)
    assert share.get_permission_for_share(key) == sddl
    d = share.create_directory("d", file_permission_key=key)
    assert d.get_directory_properties().permission_key == key
    share.delete_share()
