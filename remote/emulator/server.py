"""HTTP/1.1 server: trio + h11 (request heads), keep-alive, one task per connection, streamed bodies.

The server knows nothing about Azure Files: it parses requests, hands them to the application
(`App.handle`), applies fault injection around them, and writes responses. The admin endpoint
`/_admin/...` (faults, stats) bypasses faults and needs no authentication.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import uuid
from collections.abc import Mapping
from contextlib import aclosing
from http import HTTPStatus
from typing import Protocol

import h11
import trio

from .faults import Faults, Stats
from .formats import http_date
from .messages import Request, Response, parse_query

log = logging.getLogger(__name__)

RECV_SIZE = 1 << 18
MAX_DRAIN = 64 << 20
SERVER_HEADER = "Windows-Azure-File/1.0 Microsoft-HTTPAPI/2.0"


class App(Protocol):
    faults: Faults
    stats: Stats

    def classify(self, req: Request) -> str: ...

    async def handle(self, req: Request) -> Response: ...

    def fault_response(self, req: Request, status: int, code: str | None = None) -> Response: ...


class _Abort(Exception):
    """Cut the connection without an answer (outage, dropped response)."""


#: how `_send` answers: in full, cut half-way (`drop_rate`), or cut before the first byte
#: (`drop_ops`: the request was executed, the client cannot know)
FULL, CUT_MIDWAY, CUT_BEFORE = "full", "midway", "before"


class Connection:
    """One client connection: a loop of request/response cycles.

    h11 parses each request head (a fresh h11 state machine per cycle); Content-Length bodies
    are then read straight into one buffer with recv_into, and responses are written directly,
    which keeps 4 MiB transfers to one copy and small requests cheap. Chunked request bodies
    go through h11.
    """

    def __init__(self, app: App, stream: trio.SocketStream) -> None:
        self.app = app
        self.stream = stream
        self.sock = stream.socket
        self.pending = b""  # received bytes not consumed yet (start of the next request)
        self.h11: h11.Connection | None = None
        self.body_left = 0  # Content-Length bytes of the current body still unread
        self.chunked = False
        self.expect_continue = False
        try:
            peer = stream.socket.getpeername()
            self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        except OSError:
            self.client_ip = ""

    async def _read_head(self) -> h11.Request | None:
        conn = self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        if self.pending:
            conn.receive_data(self.pending)
            self.pending = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(RECV_SIZE))
                continue
            return event if isinstance(event, h11.Request) else None

    async def run(self) -> None:
        try:
            while True:
                event = await self._read_head()
                if event is None:
                    return
                if not await self._cycle(event):
                    return
        except _Abort:
            self._reset()
        except h11.RemoteProtocolError as exc:
            await self._bad_request(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("connection from %s failed", self.client_ip)
            self._reset()
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    def _reset(self) -> None:
        """Close with RST so the client sees the connection cut, not a clean end."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    async def _bad_request(self, exc: h11.RemoteProtocolError) -> None:
        try:
            status = exc.error_status_hint
            await self.stream.send_all(
                f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        except Exception:  # noqa: BLE001 - best effort on a broken connection
            pass

    # ------------------------------------------------------------------ request bodies
    async def _continue(self) -> None:
        if self.expect_continue:
            self.expect_continue = False
            await self.stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _receive_body(self, limit: int) -> bytes | bytearray:
        await self._continue()
        if self.chunked:
            return await self._receive_chunked(limit)
        n = self.body_left
        if n > limit:
            raise _Abort()
        pre = self.pending
        if len(pre) >= n:
            self.pending = pre[n:]
            self.body_left = 0
            return pre[:n]
        buf = bytearray(n)
        buf[: len(pre)] = pre
        self.pending = b""
        view = memoryview(buf)
        got = len(pre)
        while got < n:
            k = await self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise _Abort()
            got += k
        self.body_left = 0
        return buf

    async def _receive_chunked(self, limit: int) -> bytes:
        conn = self.h11
        assert conn is not None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(RECV_SIZE))
                continue
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _Abort()
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise _Abort()
        self.pending = conn.trailing_data[0]
        self.chunked = False
        return b"".join(chunks)

    async def _drain(self) -> bool:
        """Discard an unread request body so the connection can be reused."""
        if self.chunked:
            if self.expect_continue:
                return False
            await self._receive_chunked(MAX_DRAIN)
            return True
        n = self.body_left
        if n == 0:
            return True
        if self.expect_continue or n > MAX_DRAIN:
            return False
        pre = self.pending
        if len(pre) >= n:
            self.pending = pre[n:]
        else:
            n -= len(pre)
            self.pending = b""
            while n > 0:
                data = await self.stream.receive_some(min(n, 1 << 20))
                if not data:
                    raise _Abort()
                n -= len(data)
        self.body_left = 0
        return True

    # ------------------------------------------------------------------ one request
    async def _cycle(self, event: h11.Request) -> bool:
        assert self.h11 is not None
        target = event.target.decode("latin-1")
        raw_path, _, raw_q = target.partition("?")
        items = [
            (k.decode("latin-1"), v.decode("utf-8", "replace"))
            for k, v in event.headers.raw_items()
        ]
        keep_alive = event.http_version == b"1.1"
        self.chunked = False
        self.body_left = 0
        self.expect_continue = False
        for k, v in event.headers:
            if k == b"content-length":
                self.body_left = int(v)
            elif k == b"transfer-encoding":
                self.chunked = b"chunked" in v.lower()
            elif k == b"connection":
                low = v.lower()
                if b"close" in low:
                    keep_alive = False
                elif b"keep-alive" in low:
                    keep_alive = True
            elif k == b"expect" and v.lower() == b"100-continue":
                self.expect_continue = True
        if self.chunked:
            self.body_left = 0
        else:
            self.pending = self.h11.trailing_data[0]
        req = Request(
            method=event.method.decode("ascii", "replace").upper(),
            target=target,
            raw_path=raw_path,
            raw_query=parse_query(raw_q),
            header_items=items,
            client_ip=self.client_ip,
            request_id=str(uuid.uuid4()),
        )
        req.receive = self._receive_body

        if raw_path.startswith("/_admin"):
            resp = await self._admin(req)
            return await self._send(req, resp, keep_alive, drop=FULL)

        app = self.app
        faults = app.faults
        req.op = app.classify(req)
        app.stats.count(req.op)
        if faults.in_outage():
            raise _Abort()
        if faults.latency_ms > 0:
            await trio.sleep(faults.latency_ms / 1000)
            if faults.in_outage():
                raise _Abort()
        refused = faults.refusal(raw_path, req.headers)
        if faults.should_error():
            resp = app.fault_response(req, faults.error_status)
        elif refused is not None:
            resp = app.fault_response(req, 400, refused)
        else:
            resp = await app.handle(req)
        if faults.take_drop(req.op, raw_path, resp.status):
            drop = CUT_BEFORE
        else:
            drop = CUT_MIDWAY if faults.should_drop() else FULL
        app.stats.status(resp.status)
        if log.isEnabledFor(logging.DEBUG):  # the path only: a query may carry a SAS signature
            log.debug(
                "%s %s %s -> %d%s",
                req.method,
                raw_path,
                req.op,
                resp.status,
                "" if drop == FULL else f" (dropped {drop})",
            )
        return await self._send(req, resp, keep_alive, drop=drop)

    async def _send(self, req: Request, resp: Response, keep_alive: bool, drop: str) -> bool:
        if drop == CUT_BEFORE:
            raise _Abort()  # executed; the answer never leaves
        if not await self._drain():
            keep_alive = False
        headers = resp.headers
        if not any(k == "x-ms-request-id" for k, _ in headers):
            headers.append(("x-ms-request-id", req.request_id))
        cid = req.headers.get("x-ms-client-request-id")
        if cid:
            headers.append(("x-ms-client-request-id", cid))
        headers.append(("Date", http_date()))
        headers.append(("Server", SERVER_HEADER))
        length = resp.body_length
        headers.append(("Content-Length", str(length)))
        if not keep_alive:
            headers.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {resp.status} {_reason(resp.status)}\r\n"]
        for k, v in headers:
            if "\n" in v or "\r" in v:
                v = v.replace("\r", " ").replace("\n", " ")
            lines.append(f"{k}: {v}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("utf-8")
        is_head = req.method == "HEAD"
        if drop == CUT_MIDWAY:
            await self._send_partial(head, resp, is_head)
            raise _Abort()
        if is_head or length == 0:
            await self.stream.send_all(head)
        elif resp.sendfile is not None:
            await self.stream.send_all(head)
            await self._sendfile(resp.sendfile, length)
        elif resp.stream is None:
            if length <= 65536:
                await self.stream.send_all(head + resp.body)
            else:
                await self.stream.send_all(head)
                await self.stream.send_all(resp.body)
        else:
            await self.stream.send_all(head)
            async with aclosing(resp.stream()) as chunks:
                async for chunk in chunks:
                    await self.stream.send_all(chunk)
        return keep_alive

    async def _sendfile(self, source: tuple[str | None, int], length: int) -> None:
        """Send `length` bytes of a file from an offset with sendfile(2); zeros past its end."""
        path, offset = source
        fd = None
        if path is not None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                fd = None
        try:
            sockfd = self.sock.fileno()
            sent = 0
            while sent < length:
                if fd is None:
                    n = min(length - sent, 1 << 20)
                    await self.stream.send_all(bytes(n))
                    sent += n
                    continue
                try:
                    n = os.sendfile(sockfd, fd, offset + sent, min(length - sent, 1 << 23))
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
                    continue
                if n == 0:  # the file ends early (sparse tail): zeros
                    os.close(fd)
                    fd = None
                    continue
                sent += n
                await trio.sleep(0)  # let other connections run between big pieces
        finally:
            if fd is not None:
                os.close(fd)

    async def _send_partial(self, head: bytes, resp: Response, is_head: bool) -> None:
        length = resp.body_length
        if is_head or length < 2:
            await self.stream.send_all(head[: max(1, len(head) // 2)])
            return
        await self.stream.send_all(head)
        half = length // 2
        if resp.sendfile is not None:
            await self._sendfile(resp.sendfile, half)
            return
        if resp.stream is None:
            await self.stream.send_all(resp.body[:half])
            return
        sent = 0
        async with aclosing(resp.stream()) as chunks:
            async for chunk in chunks:
                take = chunk[: half - sent]
                await self.stream.send_all(take)
                sent += len(take)
                if sent >= half:
                    break

    # ------------------------------------------------------------------ admin endpoint
    async def _admin(self, req: Request) -> Response:
        app = self.app
        path = req.raw_path.rstrip("/")
        try:
            if path == "/_admin/faults":
                if req.method == "GET":
                    return _json(200, app.faults.snapshot())
                if req.method in ("PUT", "POST"):
                    body = await req.read_body(1 << 20)
                    app.faults.update(Faults.parse(bytes(body).decode() or "{}"))
                    log.info("faults set: %s", app.faults.snapshot())
                    return _json(200, app.faults.snapshot())
                if req.method == "DELETE":
                    app.faults.reset()
                    return _json(200, app.faults.snapshot())
            elif path == "/_admin/stats":
                if req.method == "GET":
                    return _json(200, app.stats.snapshot())
                if req.method == "DELETE":
                    app.stats.reset()
                    return _json(200, app.stats.snapshot())
            elif path == "/_admin/health":
                return _json(200, {"ok": True})
            return _json(404, {"error": "unknown admin path or method"})
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _json(status: int, data: Mapping[str, object]) -> Response:
    return Response(
        status=status,
        headers=[("Content-Type", "application/json")],
        body=json.dumps(data).encode(),
    )


async def serve(
    app: App,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen and serve until cancelled."""

    async def handler(stream: trio.SocketStream) -> None:
        await Connection(app, stream).run()

    listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
    task_status.started(listeners)
    await trio.serve_listeners(handler, listeners)
