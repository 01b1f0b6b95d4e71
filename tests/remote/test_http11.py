"""The short path's HTTP/1.1 on trio sockets (remote/http11.py), against the emulator and
small servers made here: connections are reused and dropped when they should be, a cancelled
read leaves nothing half-read behind, a cancelled mutation still completes, and TLS works
with the certificates the SDK trusts."""

from __future__ import annotations

import os
import ssl

import h11
import pytest
import trio
import trustme
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from remote.credentials import open_remote
from remote.http11 import HttpFailure, Pool
from tests.remote.conftest import FAST

DATA = os.urandom(300_000)


async def _put(remote, path: str) -> None:
    await remote.create_file(path, len(DATA))
    await remote.write(path, 0, DATA)


async def test_connections_are_reused(remote):
    await _put(remote, "r.bin")
    for i in range(20):
        assert await remote.read("r.bin", i * 1000, 5000) == DATA[i * 1000 : i * 1000 + 5000]
    assert remote._short.stats == {"fast": 21, "fallbacks": 0}  # the Put Range, 20 reads
    assert remote._short._pool.opened == 1
    # many at once: as many connections as calls in flight, each kept for the next
    async with trio.open_nursery() as n:
        for i in range(8):
            n.start_soon(remote.read, "r.bin", i, 100)
    opened = remote._short._pool.opened
    async with trio.open_nursery() as n:
        for i in range(8):
            n.start_soon(remote.read, "r.bin", i, 100)
    assert remote._short._pool.opened == opened <= 9


async def _one_shot_server(task_status=trio.TASK_STATUS_IGNORED):
    """Answers one request per connection with 200 "hello", then closes the connection
    without saying so (no `Connection: close`), as a server ending idle connections does."""

    async def handle(stream):
        conn = h11.Connection(h11.SERVER)
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(ev, h11.EndOfMessage):
                break
        await stream.send_all(
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "5")]))
            + conn.send(h11.Data(data=b"hello"))
            + conn.send(h11.EndOfMessage())
        )
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _dribbling_server(reply: bytes, task_status=trio.TASK_STATUS_IGNORED):
    """Answers every request on a connection with `reply`, sent a few bytes at a time (a
    header or a chunk split between reads), and keeps the connection open."""

    async def handle(stream):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                got = await stream.receive_some(65536)
                if not got:
                    return
                buf += got
            buf = buf.split(b"\r\n\r\n", 1)[1]
            for i in range(0, len(reply), 3):
                await stream.send_all(reply[i : i + 3])
                await trio.sleep(0)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_replies_split_anywhere_and_chunked_are_read_whole(nursery):
    reply = (
        b'HTTP/1.1 201 Created\r\nx-ms-request-id: abc\r\nETag: "0x8D"\r\n'
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    port = await nursery.start(_dribbling_server, reply)
    pool = Pool(connect_timeout=2, read_timeout=5)
    for _ in range(3):
        got = await pool.request("GET", f"http://127.0.0.1:{port}/x", {"x-ms-version": "1"})
        assert (got.status, got.body) == (201, b"hello world")
        assert got.headers["etag"] == '"0x8D"' and got.headers["X-MS-REQUEST-ID"] == "abc"
    assert pool.opened == 1  # kept alive between them
    pool.close()


async def test_a_header_that_would_split_the_request_is_refused(nursery):
    """A CR or LF in a value (metadata from a file's attributes, say) would end the header
    early and forge another: never sent (the SDK gets the call and refuses it its way)."""
    port = await nursery.start(_dribbling_server, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    pool = Pool(connect_timeout=2, read_timeout=5)
    for bad in ({"x-ms-meta-a": "1\r\nx-ms-meta-b: 2"}, {"x-ms-meta-a": "1\n"}, {"a\rb": "1"}):
        with pytest.raises(HttpFailure, match="CR or LF"):
            await pool.request("PUT", f"http://127.0.0.1:{port}/x", bad)
    with pytest.raises(HttpFailure, match="not ASCII"):
        await pool.request("PUT", f"http://127.0.0.1:{port}/x", {"x-ms-meta-a": "\u00e9"})
    assert pool.opened == 0  # refused before any connection was opened
    got = await pool.request("PUT", f"http://127.0.0.1:{port}/x", {"x-ms-meta-a": "fine"})
    assert got.status == 200
    pool.close()


async def test_a_connection_the_server_closed_while_idle_is_not_used(nursery):
    port = await nursery.start(_one_shot_server)
    pool = Pool(connect_timeout=2, read_timeout=5)
    for _ in range(3):
        await trio.sleep(0.05)  # the server's close reaches us while the connection is idle
        got = await pool.request("GET", f"http://127.0.0.1:{port}/x", {})
        assert (got.status, got.body) == (200, b"hello")
    assert pool.opened == 3
    pool.close()


async def test_failures_raise_and_drop_the_connection(emulator):
    pool = Pool(connect_timeout=2, read_timeout=0.3)
    with pytest.raises(HttpFailure, match="connect"):
        await pool.request("GET", "http://127.0.0.1:1/", {})
    emulator.set_faults(latency_ms=2000)
    try:
        with pytest.raises(HttpFailure, match="in time"):
            await pool.request("GET", f"{emulator.endpoint}?comp=list", {})
    finally:
        emulator.clear_faults()
    assert pool._idle.get(("http", emulator.host, emulator.port), []) == []


async def test_a_cancelled_read_drops_its_connection_and_the_next_read_is_whole(emulator, remote):
    await _put(remote, "c.bin")
    assert await remote.read("c.bin", 0, 10) == DATA[:10]
    emulator.set_faults(latency_ms=500)
    try:
        with trio.move_on_after(0.1) as scope:
            await remote.read("c.bin", 0, len(DATA))
        assert scope.cancelled_caught
    finally:
        emulator.clear_faults()
    # the answer of the cancelled read must not be taken for the next one's
    assert await remote.read("c.bin", 1000, 2000) == DATA[1000:3000]
    assert remote._short.stats["fallbacks"] == 0


async def test_a_cancelled_new_file_is_finished_before_the_cancel_is_seen(emulator, remote):
    """A mutation is shielded, as one in a worker thread is: when the caller sees its cancel,
    the file is complete at its name (never a half-made temporary)."""
    emulator.set_faults(latency_ms=150)
    try:
        with trio.move_on_after(0.05) as scope:
            await remote.create_filled(".fsync-new-x", "whole.bin", len(DATA), [(0, DATA)])
            await trio.sleep(5)  # (reached only if the cancel were swallowed)
        assert scope.cancelled_caught
    finally:
        emulator.clear_faults()
    assert await remote.read("whole.bin", 0, len(DATA)) == DATA
    assert not [e for e in await remote.list_dir("") if e.name.startswith(".fsync-new")]
    assert remote._short.stats == {"fast": 5, "fallbacks": 0}  # 3 calls, the read, the listing


@pytest.fixture
def tls_ca(tmp_path, monkeypatch):
    """A test CA trusted the way a user would (REQUESTS_CA_BUNDLE), and a server certificate
    for 127.0.0.1 it signed."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    return ca


async def _tls_front(ca, backend_port: int, task_status=trio.TASK_STATUS_IGNORED):
    """HTTPS in front of the emulator: TLS ends here, the bytes go on to the emulator."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)

    async def handle(tls):
        backend = await trio.open_tcp_stream("127.0.0.1", backend_port)

        async def pump(src, dst):
            try:
                while data := await src.receive_some(65536):
                    await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(dst)  # (no TLS goodbye: it could wait forever)

        async with trio.open_nursery() as n:
            n.start_soon(pump, tls, backend)
            n.start_soon(pump, backend, tls)

    listeners = await trio.open_ssl_over_tcp_listeners(0, ctx, host="127.0.0.1")
    task_status.started(listeners[0].transport_listener.socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_https_with_the_certificates_the_sdk_trusts(nursery, emulator, share_name, tls_ca):
    port = await nursery.start(_tls_front, tls_ca, emulator.port)
    url = f"https://127.0.0.1:{port}/{emulator.account}/{share_name}"
    r = await open_remote(url, options=FAST, env={"AZURE_STORAGE_KEY": emulator.key})
    try:
        await r.mkdir("t")
        entry = await r.create_filled("t/.fsync-new-1", "t/f.bin", len(DATA), [(0, DATA)])
        assert entry.file_id
        assert await r.read("t/f.bin", 5, 1000) == DATA[5:1005]
        assert (await r.stat("t/f.bin")).size == len(DATA)  # the SDK, over the same TLS
        assert r._short.stats == {"fast": 5, "fallbacks": 0}  # mkdir, 3 calls, a read
    finally:
        await r.aclose()
    # a server certificate nobody here trusts is refused, never read from
    untrusting = Pool(connect_timeout=2, read_timeout=5, cafile=DEFAULT_CA_BUNDLE_PATH)
    with pytest.raises(HttpFailure, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusting.request("GET", f"https://127.0.0.1:{port}/", {})
