"""Fault injection and request statistics through the admin endpoint, seen by real clients."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from urllib.error import HTTPError

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.fileshare import LinearRetry, ShareServiceClient

from tests.emulator_proc import Emulator


def _svc(emu: Emulator) -> ShareServiceClient:
    return ShareServiceClient.from_connection_string(emu.connection_string, retry_total=0)


def test_error_rate_answers_server_busy_and_internal_error(fresh_emulator):
    svc = _svc(fresh_emulator)
    share = svc.create_share("faults")
    assert fresh_emulator.set_faults(error_rate=1.0, error_status=503)["error_rate"] == 1.0
    with pytest.raises(HttpResponseError) as ei:
        share.get_share_properties()
    assert ei.value.status_code == 503 and ei.value.error_code == "ServerBusy"
    assert "RequestId:" in ei.value.response.text()
    fresh_emulator.set_faults(error_status=500)
    with pytest.raises(HttpResponseError) as ei:
        share.create_directory("d")
    assert ei.value.status_code == 500 and ei.value.error_code == "InternalError"
    fresh_emulator.clear_faults()
    share.create_directory("d")  # the failed attempt did not execute
    with pytest.raises(HttpResponseError):
        share.create_directory("d")


def test_sdk_retries_through_partial_error_rate(fresh_emulator):
    quick = LinearRetry(backoff=0.01, retry_total=30, retry_status=30, random_jitter_range=0)
    svc = ShareServiceClient.from_connection_string(
        fresh_emulator.connection_string, retry_policy=quick
    )
    share = svc.create_share("retries")
    fresh_emulator.set_faults(error_rate=0.5, error_status=503)
    for i in range(10):
        share.create_directory(f"d{i}")
    fresh_emulator.clear_faults()
    assert len(list(share.list_directories_and_files())) == 10


def test_latency(fresh_emulator):
    svc = _svc(fresh_emulator)
    share = svc.create_share("slow")
    fresh_emulator.set_faults(latency_ms=300)
    t = time.monotonic()
    share.get_share_properties()
    assert time.monotonic() - t >= 0.3
    fresh_emulator.clear_faults()


def test_drop_cuts_the_connection_mid_body(fresh_emulator):
    svc = _svc(fresh_emulator)
    share = svc.create_share("drops")
    f = share.get_file_client("blob.bin")
    payload = b"z" * (3 << 20)  # above 1 MiB: sent with sendfile(2)
    f.upload_file(payload)
    fresh_emulator.set_faults(drop_rate=1.0)
    with pytest.raises((ServiceResponseError, ServiceRequestError, HttpResponseError)):
        f.download_file().readall()
    # raw view: headers announce the full length, fewer bytes arrive, then the connection dies
    conn = http.client.HTTPConnection(fresh_emulator.host, fresh_emulator.port, timeout=10)
    conn.request("GET", "/_admin/health")  # admin requests are never dropped
    assert conn.getresponse().read() == b'{"ok": true}'
    conn.request("GET", f"/{fresh_emulator.account}/drops/blob.bin")
    resp = conn.getresponse()  # anonymous: an error body, still dropped half-way
    announced = int(resp.getheader("Content-Length"))
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    assert announced > 0
    fresh_emulator.clear_faults()
    assert f.download_file().readall() == payload


def test_outage_refuses_then_recovers(fresh_emulator):
    svc = _svc(fresh_emulator)
    share = svc.create_share("outage")
    fresh_emulator.set_faults(outage_seconds=1.5)
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        share.get_share_properties()
    with socket.create_connection((fresh_emulator.host, fresh_emulator.port), timeout=5) as s:
        s.sendall(b"GET /x/y HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    assert fresh_emulator.set_faults()["outage_remaining"] > 0  # admin still answers
    deadline = time.monotonic() + 10
    while True:
        try:
            share.get_share_properties()
            break
        except (ServiceRequestError, ServiceResponseError):
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_stats_count_operations(fresh_emulator):
    svc = _svc(fresh_emulator)
    before = fresh_emulator.stats()
    share = svc.create_share("stats")
    share.create_directory("a")
    list(share.list_directories_and_files())
    list(share.list_directories_and_files())
    share.get_file_client("a/f").upload_file(b"abc")
    share.get_file_client("a/f").download_file().readall()
    after = fresh_emulator.stats()
    by = after["by_op"]
    assert after["total"] - before["total"] >= 7
    assert by["CreateShare"] == 1 and by["CreateDirectory"] == 1
    assert by["ListFilesAndDirectories"] == 2
    assert by["CreateFile"] == 1 and by["PutRange"] == 1 and by["GetFile"] >= 1


def test_admin_rejects_bad_faults(fresh_emulator):
    req = urllib.request.Request(
        f"http://{fresh_emulator.host}:{fresh_emulator.port}/_admin/faults",
        data=json.dumps({"error_status": 404}).encode(),
        method="PUT",
    )
    with pytest.raises(HTTPError) as ei:
        urllib.request.urlopen(req, timeout=5)
    assert ei.value.code == 400


def test_faults_given_at_start(tmp_path):
    with Emulator(
        data_dir=tmp_path / "d",
        extra_args=["--faults", json.dumps({"error_rate": 1, "error_status": 503})],
    ) as emu:
        with pytest.raises(HttpResponseError) as ei:
            _svc(emu).create_share("x")
        assert ei.value.error_code == "ServerBusy"
        assert emu.stats()["by_op"]["CreateShare"] == 1
