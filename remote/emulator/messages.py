"""Request and response objects passed between the HTTP server and the handlers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import StorageError


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Split a query string the way the SDK signs it: '&' then '=', values percent-decoded
    (no '+' to space)."""
    out: list[tuple[str, str]] = []
    if not raw:
        return out
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.append((unquote(name), unquote(value)))
    return out


@dataclass
class Request:
    method: str
    target: str
    raw_path: str
    raw_query: list[tuple[str, str]]
    header_items: list[tuple[str, str]]
    client_ip: str = ""
    # the server reads a Content-Length body into one bytearray, without a copy to bytes
    receive: Callable[[int], Awaitable[bytes | bytearray]] | None = None
    request_id: str = ""
    op: str = ""
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body_consumed: bool = False

    def __post_init__(self) -> None:
        q: dict[str, str] = {}
        for k, v in self.raw_query:
            k = k.lower()
            q[k] = f"{q[k]},{v}" if k in q else v
        self.query = q
        h: dict[str, str] = {}
        for k, v in self.header_items:
            k = k.lower()
            h[k] = f"{h[k]},{v}" if k in h else v
        self.headers = h

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def content_length(self) -> int:
        v = self.headers.get("content-length")
        if v is None:
            return 0
        try:
            return int(v)
        except ValueError:
            raise StorageError(
                "InvalidHeaderValue", details={"HeaderName": "Content-Length"}
            ) from None

    def metadata(self) -> list[tuple[str, str]]:
        """x-ms-meta-* headers, names with their original case."""
        out = []
        for k, v in self.header_items:
            if k.lower().startswith("x-ms-meta-"):
                out.append((k[10:], v))
        return out

    async def read_body(self, limit: int) -> bytes | bytearray:
        """The whole request body (at most `limit` bytes, else RequestBodyTooLarge)."""
        n = self.content_length
        if n > limit:
            raise StorageError("RequestBodyTooLarge")
        if self.receive is None or self.body_consumed:
            return b""
        self.body_consumed = True
        return await self.receive(limit)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # for large bodies: an async generator of chunks and the total length ...
    stream: Callable[[], AsyncGenerator[bytes, None]] | None = None
    length: int | None = None
    # ... or (file path or None for zeros, offset) to send `length` bytes of with sendfile(2)
    sendfile: tuple[str | None, int] | None = None

    @property
    def body_length(self) -> int:
        if self.stream is not None or self.sendfile is not None:
            return self.length or 0
        return len(self.body)

    def add(self, name: str, value: str | int | None) -> None:
        if value is not None and value != "":
            self.headers.append((name, str(value)))
