"""HTTP/1.1 on trio's own sockets, for the short path's hot calls (azure_short.py).

h11 does the protocol; this module keeps connections per origin and bounds each step in
time. A call costs about a third of the CPU of the same request on urllib3 in a worker
thread (no thread hop, no GIL handover between 16 threads, no email-parser header parsing:
notes/perf-session7.md), and it runs in the caller's task, so many calls are in flight at
once on one thread.

What it is not: a general HTTP client. No redirects, no proxies, no retries, no chunked
request bodies, no 100-continue. Every failure (refused or cut connection, timeout, a reply
h11 cannot parse) raises `HttpFailure` and the connection is dropped; the short path then
hands the call to the SDK, whose retries and errors apply.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import h11
import trio
from requests.structures import CaseInsensitiveDict

#: idle connections kept per origin beyond what is in use
DEFAULT_IDLE = 16
_RECEIVE = 256 * 1024


class HttpFailure(Exception):
    """The exchange did not complete (the caller falls back to the SDK)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class _Conn:
    __slots__ = ("stream", "h11", "fd", "_tcp")

    def __init__(self, stream: trio.abc.Stream, tcp: trio.SocketStream) -> None:
        self.stream = stream
        self.fd = tcp.socket.fileno()
        self.h11 = h11.Connection(h11.CLIENT)
        self._tcp = tcp

    def reusable(self) -> bool:
        """Idle and still open. An idle connection has nothing to read: readable means the
        server closed it while it waited here (EOF), or sent something unasked (a TLS close)."""
        poller = select.poll()  # (not select.select: no limit on the fd's number)
        poller.register(self.fd, select.POLLIN)
        try:
            return not poller.poll(0)
        except OSError:
            return False

    def close(self) -> None:
        """Close without a graceful TLS shutdown: nothing is owed to a dropped connection."""
        self._tcp.socket.close()


class Pool:
    """Connections per (scheme, host, port), opened on demand, kept while idle (at most
    `max_idle` per origin). Belongs to one trio run: connections of another run (a test's
    earlier one) are closed, never used. One per SharedTransport: a share and its snapshot
    views use the same connections."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        cafile: str | None = None,
        max_idle: int = DEFAULT_IDLE,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._cafile = cafile  # None: the system's certificates
        self._ssl: ssl.SSLContext | None = None  # made at the first https connection (~20 ms)
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._token: object = None
        self.opened = 0  # connections opened (tests: reuse)

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | memoryview = b"",
    ) -> Answer:
        """One exchange; the whole body read. Cancellation drops the connection."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or parts.hostname is None:
            raise HttpFailure(f"unsupported URL scheme {scheme!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = await self._checkout(origin)
        ok = False
        try:
            answer = await self._exchange(conn, method, target, parts.netloc, headers, body)
            ok = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE
            if ok:
                conn.h11.start_next_cycle()
            return answer
        except (
            h11.ProtocolError,
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ) as exc:
            raise HttpFailure(f"{type(exc).__name__}: {exc}") from None
        except trio.TooSlowError:
            raise HttpFailure("no answer in time") from None
        finally:
            if ok:
                self._checkin(origin, conn)
            else:
                conn.close()

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        target: str,
        host: str,
        headers: Mapping[str, str],
        body: bytes | memoryview,
    ) -> Answer:
        h = conn.h11
        fields = [("Host", host), *headers.items()]
        if body and "Content-Length" not in headers:
            fields.append(("Content-Length", str(len(body))))
        out = h.send(h11.Request(method=method, target=target, headers=fields))
        with trio.fail_after(self.read_timeout):
            if body:
                await conn.stream.send_all(out)
                # the body as it is (passthrough: no copy into a framing buffer)
                for piece in h.send_with_data_passthrough(h11.Data(data=cast(bytes, body))) or ():
                    await conn.stream.send_all(piece)
                out = h.send(h11.EndOfMessage())
            else:
                out += h.send(h11.EndOfMessage())
            await conn.stream.send_all(out)
        status = 0
        got: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        chunks: list[bytes] = []
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                with trio.fail_after(self.read_timeout):
                    data = await conn.stream.receive_some(_RECEIVE)
                # (b"" is EOF, which h11 turns into an error mid-message)
                h.receive_data(cast(bytes, data))
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                for name, value in ev.headers:
                    got[name.decode("latin-1")] = value.decode("latin-1")
            elif isinstance(ev, h11.Data):
                chunks.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                return Answer(status, got, b"".join(chunks))
            elif isinstance(ev, h11.ConnectionClosed):
                raise HttpFailure("the server closed the connection")
            # h11.InformationalResponse (1xx): skipped

    async def _checkout(self, origin: tuple[str, str, int]) -> _Conn:
        token = trio.lowlevel.current_trio_token()
        if token is not self._token:  # a new trio run: the old sockets are not ours to use
            self.close()
            self._token = token
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        return await self._open(origin)

    def _checkin(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def _open(self, origin: tuple[str, str, int]) -> _Conn:
        scheme, host, port = origin
        try:
            with trio.fail_after(self.connect_timeout):
                tcp = await trio.open_tcp_stream(host, port)
                tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                stream: trio.abc.Stream = tcp
                if scheme == "https":
                    if self._ssl is None:
                        self._ssl = ssl.create_default_context(cafile=self._cafile)
                    tls = trio.SSLStream(
                        tcp, self._ssl, server_hostname=host, https_compatible=True
                    )
                    await tls.do_handshake()
                    stream = tls
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            why = exc.__cause__ or exc  # (trio wraps a failed TLS handshake's SSLError)
            raise HttpFailure(f"cannot connect: {type(why).__name__}: {why}") from None
        except trio.TooSlowError:
            raise HttpFailure("cannot connect in time") from None
        self.opened += 1
        return _Conn(stream, tcp)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
