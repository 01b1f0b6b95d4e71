"""The hot calls on a lighter path: signed here and sent natively under trio, without the SDK.

A call through the SDK's pipeline costs ~1.6 ms of CPU (generated operation, a dozen policies,
requests); signed here and sent on a urllib3 pool in a worker thread it cost a third of that
(scripts/bench_recall.py, the notes of issues 14 and 16), and on trio's own sockets
(remote/http11.py), in the caller's task, a third of that again: ~0.45 ms against ~1.4 ms of
CPU per call with 16 calls in flight (notes/perf-session7.md; less since its replies are
parsed by httptools, notes/perf-session8.md). The calls that take this way
are the ones a recall, a cold read, a new small file and a tree of new directories are made
of: ranged GET; Create File, Put Range and Rename File for `create_filled`; Put Range of any
`write` without a lease (a large file's upload, a migration's ranges); List Directories and
Files (a cold walk of a big tree makes one call per directory); Create Directory and Set
Directory Properties. Every other call stays on the SDK.

Each serves only the plain success (the status the service answers a success with, and for a
GET the whole body). Anything else (an error status, a refused or cut connection, a short body)
returns None and the caller makes the same call through the SDK, whose retries, error codes
and typed errors then apply. A GET, a Create File of a temporary name and a Put Range of the
same bytes are harmless to repeat; a Rename File whose answer was lost is repeated by the SDK,
which then finds its own work done, and `create_filled` recognises that by the FileId (as for
a rename the SDK itself resent). Token credentials (Entra ID) and proxies use the SDK only,
keeping this module to what the tests here exercise: SharedKey and SAS, on the share and on its
snapshots.

Each request is the SDK's own: its URLs come from the SDK's file clients (same quoting, same
SAS or `sharesnapshot` query), it carries the SDK's x-ms-version and headers (compared request
by request in tests/remote/test_shortpath.py), and SharedKey signs it as
azure.storage.fileshare._shared.authentication does.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from remote.http11 import Answer, HttpFailure, Pool

log = logging.getLogger("remote.azure")


#: The SharedKey string-to-sign's standard headers after the verb (Content-Length is the only
#: one these requests send): Content-Encoding, -Language, -Length, -MD5, -Type, Date,
#: If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range.
def _standard_headers(content_length: int) -> str:
    return f"\n\n{content_length or ''}\n\n\n\n\n\n\n\n\n"


#: what a success is answered with, by call
CREATED, OK = 201, 200


class ShortPath:
    """Hot calls on one share's files, SharedKey-signed or with a SAS in the URL."""

    def __init__(
        self,
        *,
        account_name: str,
        account_key: str | None,
        api_version: str,
        pool: Pool,
        count_request: Callable[[], None],
    ) -> None:
        self._account = account_name
        self._key = base64.b64decode(account_key) if account_key else None
        self._version = api_version
        self._count_request = count_request
        self._pool = pool  # (the SharedTransport's: its owner closes it)
        self.stats = {"fast": 0, "fallbacks": 0}

    @classmethod
    def for_share(
        cls,
        *,
        credential: object,
        sas_in_url: bool,
        proxies: dict[str, str],
        **kwargs: Any,
    ) -> ShortPath | None:
        """A ShortPath for this way of authenticating, or None where the SDK must do it."""
        if proxies:
            return None
        if sas_in_url and credential is None:
            return cls(account_key=None, **kwargs)
        if isinstance(credential, dict) and credential.get("account_key"):
            return cls(account_key=credential["account_key"], **kwargs)
        return None  # a token credential (or anything new): the SDK's policies handle it

    async def get(self, url: str, offset: int, length: int, *, trailing_dot: bool) -> bytes | None:
        """The bytes [offset, offset+length) of the file at `url` (the SDK file client's URL),
        or None: then the caller reads through the SDK."""
        headers = {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        if trailing_dot:
            headers["x-ms-allow-trailing-dot"] = "true"
        resp = await self._send("GET", url, headers)
        if resp is None:
            return None
        data = resp.body
        if resp.status not in (200, 206) or not _whole(resp.headers, offset, len(data)):
            self.stats["fallbacks"] += 1
            return None
        self.stats["fast"] += 1
        return data[:length]

    async def list_page(
        self, url: str, marker: str | None, include: str, *, trailing_dot: bool | None
    ) -> bytes | None:
        """One page of List Directories and Files of the directory at `url` (the SDK
        directory client's URL) with extended info: the raw XML, or None (ask the SDK)."""
        # (in the SDK's order)
        query = f"marker={quote(marker, safe='')}&" if marker else ""
        query += f"include={include}&restype=directory&comp=list"
        headers = {"x-ms-file-extended-info": "true"}
        _trailing(headers, trailing_dot, None)
        resp = await self._send("GET", _with_query(url, query), headers)
        if self._expect(resp, OK) is None:
            return None
        assert resp is not None
        return resp.body

    async def create(
        self, url: str, size: int, props: Mapping[str, str], *, trailing_dot: bool | None
    ) -> Mapping[str, str] | None:
        """Create File at `url` (`size` bytes of zeros) with `props` (x-ms-file-* headers and
        x-ms-meta-*): the response headers, or None (then the caller asks the SDK)."""
        headers = {
            **props,
            "x-ms-content-length": str(size),
            "x-ms-type": "file",
        }
        _trailing(headers, trailing_dot, None)
        return self._expect(await self._send("PUT", url, headers), CREATED)

    async def put_range(
        self,
        url: str,
        offset: int,
        data: bytes | memoryview,
        *,
        trailing_dot: bool | None,
        keep_mtime: bool = True,
    ) -> str | None:
        """Put Range of `data` at `offset` (keeping the last-write time unless not
        `keep_mtime`: then the service sets it to now, the SDK's default): the new ETag, or
        None (ask the SDK)."""
        headers = {
            "x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
            "x-ms-write": "update",
        }
        if keep_mtime:
            headers["x-ms-file-last-write-time"] = "preserve"
        _trailing(headers, trailing_dot, None)
        resp = await self._send("PUT", _with_query(url, "comp=range"), headers, data)
        got = self._expect(resp, CREATED)
        return None if got is None else got.get("ETag", "")

    async def rename(
        self,
        src_url: str,
        dst_url: str,
        *,
        replace: bool = False,
        trailing_dot: bool | None,
        source_trailing_dot: bool | None,
    ) -> Mapping[str, str] | None:
        """Rename File from `src_url` to `dst_url` without replacing anything (or replacing
        a file there: `replace`): the response headers, or None (then the caller asks the
        SDK, which may find this one's work done)."""
        headers = {
            "x-ms-file-rename-source": src_url,
            "x-ms-file-rename-replace-if-exists": "true" if replace else "false",
            "x-ms-file-rename-ignore-readonly": "true" if replace else "false",
        }
        _trailing(headers, trailing_dot, source_trailing_dot)
        resp = await self._send("PUT", _with_query(dst_url, "comp=rename"), headers)
        return self._expect(resp, OK)

    async def create_dir(
        self, url: str, props: Mapping[str, str], *, trailing_dot: bool | None
    ) -> Answer | None:
        """Create Directory at `url` (the SDK directory client's URL) with `props`
        (x-ms-file-* and x-ms-meta-* headers): the service's answer whatever its status, or
        None when the exchange broke (the directory may have been made: the caller's SDK
        call then treats "already exists" as possibly its own)."""
        headers = {**props}
        _trailing(headers, trailing_dot, None)
        resp = await self._send("PUT", _with_query(url, "restype=directory"), headers)
        self._expect(resp, CREATED)
        return resp

    async def set_dir_properties(
        self, url: str, props: Mapping[str, str], *, trailing_dot: bool | None
    ) -> Mapping[str, str] | None:
        """Set Directory Properties (the x-ms-file-* headers in `props`): the response
        headers, or None (then the caller asks the SDK; setting them twice is harmless)."""
        headers = {**props}
        _trailing(headers, trailing_dot, None)
        url = _with_query(url, "restype=directory&comp=properties")
        return self._expect(await self._send("PUT", url, headers), OK)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | memoryview = b""
    ) -> Answer | None:
        headers["x-ms-date"] = email.utils.formatdate(usegmt=True)
        headers["x-ms-version"] = self._version
        if method != "GET":
            headers["Content-Length"] = str(len(body))
        if self._key is not None:
            headers["Authorization"] = self._sign(method, url, headers, len(body))
        self._count_request()
        try:
            return await self._pool.request(method, url, headers, body)
        except HttpFailure as exc:
            # never the URL in a log line: it may carry a SAS
            log.debug("short %s failed (%s); sending it through the SDK", method, exc)
            self.stats["fallbacks"] += 1
            return None

    def _expect(self, resp: Answer | None, status: int) -> Mapping[str, str] | None:
        if resp is None:
            return None
        if resp.status != status:
            self.stats["fallbacks"] += 1
            return None
        self.stats["fast"] += 1
        return resp.headers

    def _sign(self, method: str, url: str, headers: dict[str, str], content_length: int) -> str:
        parts = urlsplit(url)
        query = "".join(
            f"\n{k.lower()}:{v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True))
        )
        canon = sorted(
            (k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-")
        )
        canon_headers = "".join(f"{k}:{v}\n" for k, v in canon)
        to_sign = (
            f"{method}\n{_standard_headers(content_length)}{canon_headers}"
            f"/{self._account}{parts.path}{query}"
        )
        assert self._key is not None
        mac = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self._account}:{base64.b64encode(mac).decode()}"


def _trailing(headers: dict[str, str], dot: bool | None, source_dot: bool | None) -> None:
    """The trailing-dot headers, sent as the SDK sends them (when the client sets them)."""
    if dot is not None:
        headers["x-ms-allow-trailing-dot"] = "true" if dot else "false"
    if source_dot is not None:
        headers["x-ms-source-allow-trailing-dot"] = "true" if source_dot else "false"


def _with_query(url: str, extra: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def _whole(headers: Any, offset: int, got: int) -> bool:
    """The body is all the answer announced, starting where asked (a 200 is the whole file
    from 0, which a read at 0 may get from a server that ignores the range)."""
    announced = headers.get("Content-Length")
    if announced is None or int(announced) != got:
        return False
    crange = headers.get("Content-Range")
    if crange is None:
        return offset == 0
    return crange.startswith(f"bytes {offset}-")
