"""The hot call on a lighter path: one ranged GET signed here and sent with urllib3.

A ranged read through the SDK's pipeline costs ~1.6 ms of CPU (generated operation, a dozen
policies, requests); signed here and sent on a urllib3 pool it costs ~0.6 ms (measured with
scripts/bench_recall.py and in the notes of issue 14). Reads are what a recall, a cold read and a
read-ahead are made of, so this is the one call that takes the short way; every other call
stays on the SDK.

It serves only the plain success: a 200/206 answer with its whole body. Anything else (an
error status, a refused or cut connection, a short body) returns None and the caller repeats the
read through the SDK, whose retries, error codes and typed errors then apply: a GET has no side
effect, so sending it twice is harmless. Token credentials (Entra ID) and proxies use the SDK
only, keeping this module to what the tests here exercise: SharedKey and SAS, on the share and
on its snapshots.

The request is the SDK's own: its URL comes from the SDK's file client (same quoting, same SAS
or `sharesnapshot` query), it carries the SDK's x-ms-version, and SharedKey signs it as
azure.storage.fileshare._shared.authentication does.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

log = logging.getLogger("remote.azure")

#: The SharedKey string-to-sign's standard headers, all empty for a GET without a body:
#: Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since, If-Match,
#: If-None-Match, If-Unmodified-Since, Range.
_EMPTY_STANDARD_HEADERS = "\n" * 11


class FastGet:
    """Ranged GETs of one share's files, SharedKey-signed or with a SAS in the URL."""

    def __init__(
        self,
        *,
        account_name: str,
        account_key: str | None,
        api_version: str,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        count_request: Callable[[], None],
    ) -> None:
        self._account = account_name
        self._key = base64.b64decode(account_key) if account_key else None
        self._version = api_version
        self._count_request = count_request
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            ca_certs=DEFAULT_CA_BUNDLE_PATH,
        )
        self.stats = {"fast": 0, "fallbacks": 0}

    @classmethod
    def for_share(
        cls,
        *,
        credential: object,
        sas_in_url: bool,
        proxies: dict[str, str],
        **kwargs: Any,
    ) -> FastGet | None:
        """A FastGet for this way of authenticating, or None where the SDK must do it."""
        if proxies:
            return None
        if sas_in_url and credential is None:
            return cls(account_key=None, **kwargs)
        if isinstance(credential, dict) and credential.get("account_key"):
            return cls(account_key=credential["account_key"], **kwargs)
        return None  # a token credential (or anything new): the SDK's policies handle it

    def get(self, url: str, offset: int, length: int, *, trailing_dot: bool) -> bytes | None:
        """The bytes [offset, offset+length) of the file at `url` (the SDK file client's URL),
        or None: then the caller reads through the SDK."""
        headers = {
            "x-ms-date": email.utils.formatdate(usegmt=True),
            "x-ms-range": f"bytes={offset}-{offset + length - 1}",
            "x-ms-version": self._version,
        }
        if trailing_dot:
            headers["x-ms-allow-trailing-dot"] = "true"
        if self._key is not None:
            headers["Authorization"] = self._sign(url, headers)
        self._count_request()
        try:
            resp = self._pool.request("GET", url, headers=headers, preload_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # never the URL in a log line: it may carry a SAS
            log.debug("fast GET failed (%s); reading through the SDK", type(exc).__name__)
            self.stats["fallbacks"] += 1
            return None
        data: bytes = resp.data
        if resp.status not in (200, 206) or not _whole(resp.headers, offset, len(data)):
            self.stats["fallbacks"] += 1
            return None
        self.stats["fast"] += 1
        return data[:length]

    def _sign(self, url: str, headers: dict[str, str]) -> str:
        parts = urlsplit(url)
        query = "".join(
            f"\n{k.lower()}:{v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True))
        )
        canon_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
        to_sign = (
            f"GET\n{_EMPTY_STANDARD_HEADERS}{canon_headers}/{self._account}{parts.path}{query}"
        )
        assert self._key is not None
        mac = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self._account}:{base64.b64encode(mac).decode()}"

    def close(self) -> None:
        self._pool.clear()


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
