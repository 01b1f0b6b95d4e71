"""HTTP/1.1 on trio's own sockets, for the short path's hot calls (azure_short.py).

Replies are parsed by httptools (llhttp, in C: about half the CPU of h11's pure-Python
parser and event objects, notes/perf-session8.md); requests are written here, checked for
characters that would split a header. This module keeps connections per origin and bounds
each step in time. A call costs a fraction of the CPU of the same request on urllib3 in a
worker thread (no thread hop, no GIL handover between 16 threads, no email-parser header
parsing: notes/perf-session7.md), and it runs in the caller's task, so many calls are in
flight at once on one thread.

What it is not: a general HTTP client. No redirects, no proxies, no retries, no chunked
request bodies, no 100-continue, no HEAD (a reply's body is read by its framing). Every
failure (refused or cut connection, timeout, a reply that does not parse) raises
`HttpFailure` and the connection is dropped; the short path then hands the call to the SDK,
whose retries and errors apply.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
import trio
from requests.structures import CaseInsensitiveDict

#: idle connections kept per origin beyond what is in use
DEFAULT_IDLE = 16
_RECEIVE = 256 * 1024
#: a body up to this size goes out in one send with the head (one segment, one syscall)
_COALESCE = 64 * 1024


class HttpFailure(Exception):
    """The exchange did not complete (the caller falls back to the SDK)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class _Reply:
    """One reply, as httptools' callbacks deliver it (a header arrives whole, even when it
    was split between two reads)."""

    __slots__ = ("headers", "chunks", "done", "keep", "status", "parser")

    def __init__(self) -> None:
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        self.chunks: list[bytes] = []
        self.done = False
        self.keep = False
        self.status = 0
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        # (asked here: once the parser is past the message, it has forgotten)
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()
        self.done = True


def _head(method: str, target: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers. A CR or LF in any of them would end a line early and
    let a value forge a header: refused (HttpFailure, and the SDK sends the call)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length and "Content-Length" not in headers:
        lines.append(f"Content-Length: {length}")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise HttpFailure("a CR or LF inside the request line or a header")
    text += "\r\n\r\n"
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise HttpFailure("a header that is not ASCII") from None


class _Conn:
    __slots__ = ("stream", "fd", "_tcp")

    def __init__(self, stream: trio.abc.Stream, tcp: trio.SocketStream) -> None:
        self.stream = stream
        self.fd = tcp.socket.fileno()
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
        head = _head(method, target, parts.netloc, headers, len(body))
        conn = await self._checkout(origin)
        ok = False
        try:
            answer, ok = await self._exchange(conn, head, body)
            return answer
        except (
            httptools.HttpParserError,
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
        self, conn: _Conn, head: bytes, body: bytes | memoryview
    ) -> tuple[Answer, bool]:
        """The answer, and whether the connection may carry another request."""
        with trio.fail_after(self.read_timeout):
            if body and len(body) > _COALESCE:
                await conn.stream.send_all(head)
                await conn.stream.send_all(body)  # as it is: no copy into a framing buffer
            else:
                await conn.stream.send_all(head + bytes(body) if body else head)
        reply = _Reply()
        reply.parser = parser = httptools.HttpResponseParser(reply)
        try:
            while not reply.done:
                with trio.fail_after(self.read_timeout):
                    data = await conn.stream.receive_some(_RECEIVE)
                if not data:
                    raise HttpFailure("the server closed the connection")
                parser.feed_data(data)
        finally:
            reply.parser = None  # (no reference cycle left for the garbage collector)
        return Answer(reply.status, reply.headers, b"".join(reply.chunks)), reply.keep

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
