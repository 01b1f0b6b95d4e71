"""The emulator as a process: restart persistence, the aio SDK client, the command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio
from azure.core.pipeline.transport import TrioRequestsTransport
from azure.storage.fileshare import ShareServiceClient
from azure.storage.fileshare.aio import ShareServiceClient as AioShareServiceClient

REPO = Path(__file__).resolve().parents[2]


def test_restart_keeps_shares_files_snapshots_and_leases(fresh_emulator):
    svc = ShareServiceClient.from_connection_string(fresh_emulator.connection_string)
    share = svc.create_share("persist", metadata={"k": "v"})
    d = share.create_directory("dir")
    data = os.urandom(1_500_000)
    f = d.get_file_client("f.bin")
    f.upload_file(data)
    fid = f.get_file_properties().file_id
    snap = share.create_snapshot()["snapshot"]
    f.upload_range(b"new!", 0, 4)
    lease = f.acquire_lease()

    fresh_emulator.restart()

    svc = ShareServiceClient.from_connection_string(fresh_emulator.connection_string)
    share = svc.get_share_client("persist")
    assert share.get_share_properties().metadata == {"k": "v"}
    f = share.get_file_client("dir/f.bin")
    p = f.get_file_properties()
    assert p.file_id == fid and p.lease.state == "leased"
    assert f.download_file().readall() == b"new!" + data[4:]
    old = svc.get_share_client("persist", snapshot=snap).get_file_client("dir/f.bin")
    assert old.download_file().readall() == data
    lease.release()
    # ids keep growing after a restart: a new entry does not reuse an old id
    g = share.get_file_client("dir/g.bin")
    g.create_file(1)
    assert g.get_file_properties().file_id != fid


async def test_aio_client_under_trio(emulator, share_name):
    transport = TrioRequestsTransport()
    async with AioShareServiceClient.from_connection_string(
        emulator.connection_string, transport=transport
    ) as svc:
        share = svc.get_share_client(share_name)
        await share.create_directory("aio")
        f = share.get_file_client("aio/x.txt")
        await f.upload_file(b"from trio")
        props = await f.get_file_properties()
        assert props.size == 9
        stream = await f.download_file()
        assert await stream.readall() == b"from trio"
        names = [i["name"] async for i in share.list_directories_and_files("aio")]
        assert names == ["x.txt"]

        async def put(i: int) -> None:
            await share.get_file_client(f"aio/p{i}").upload_file(b"%d" % i)

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(put, i)
        assert len([i async for i in share.list_directories_and_files("aio")]) == 9


def test_command_lines_have_help():
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "remote.emulator", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--faults" in out.stdout and "--data" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "fsync_fuse", "emulator", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "FileEndpoint" in out.stdout


def test_bad_key_is_refused_at_start(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "remote.emulator", "--data", str(tmp_path), "--key", "not base64!"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "base64" in out.stderr


def _read_all(sock) -> bytes:
    out = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return out
        out += data


def test_http_pipelining_chunked_body_and_connection_close(emulator):
    import socket

    with socket.create_connection((emulator.host, emulator.port), timeout=10) as s:
        body = b'{"latency_ms": 0}'
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        s.sendall(
            b"GET /_admin/health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"PUT /_admin/faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
            + b"GET /_admin/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = _read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert b'"latency_ms": 0.0' in data and data.endswith(b'{"ok": true}')


def _put_range_md5(emu, data: bytes, validate: bool = False) -> str | None:
    svc = ShareServiceClient.from_connection_string(emu.connection_string)
    try:
        share = svc.create_share("md5")
    except Exception:
        share = svc.get_share_client("md5")
    f = share.get_file_client("f.bin")
    f.create_file(len(data))
    seen: dict = {}
    f.upload_range(
        data,
        0,
        len(data),
        validate_content=validate,
        raw_response_hook=lambda r: seen.update(r.http_response.headers),
    )
    return seen.get("Content-MD5")


def test_put_range_content_md5(emulator, tmp_path):
    import base64
    import hashlib

    small, big = os.urandom(1000), os.urandom(1 << 20)
    md5 = lambda b: base64.b64encode(hashlib.md5(b).digest()).decode()  # noqa: E731
    assert _put_range_md5(emulator, small) == md5(small)
    assert _put_range_md5(emulator, big) is None  # skipped by default: it would cap uploads
    assert _put_range_md5(emulator, big, validate=True) == md5(big)  # verified and echoed
    from tests.emulator_proc import Emulator

    with Emulator(data_dir=tmp_path / "full", extra_args=["--full-md5"]) as full:
        assert _put_range_md5(full, big) == md5(big)
