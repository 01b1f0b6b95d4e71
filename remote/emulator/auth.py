"""Request authentication: SharedKey (as the SDKs sign) and SAS (account and service SAS).

The string-to-sign is rebuilt from the request exactly as the Python SDK builds it
(azure/storage/fileshare/_shared/authentication.py): verb, the standard headers (Content-Length
empty when 0), the x-ms-* headers sorted in the service's collation, then "/account" + the URL
path as sent + the sorted, percent-decoded query. Because other clients (Go's azfile used by
rclone) sort headers bytewise and may escape paths differently, a few canonical variants are
tried; a signature matching any of them is accepted.

Keys and signatures are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import StorageError
from .formats import http_date, parse_http_date, parse_iso_utc
from .messages import Request

STANDARD_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)

#: Resource levels for account SAS `srt` and for service SAS scope checks.
SERVICE, SHARE, OBJECT = "s", "c", "o"

MAX_CLOCK_SKEW = 15 * 60


@dataclass
class Access:
    """What the operation needs: its resource level and any one of the permission letters."""

    level: str
    perms: str


def _sign(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode()


def _collation_key(name: str) -> tuple[list[int], str]:
    """The SDK's header sort (a Windows culture compare): '-' is ignored at the first level,
    '_' sorts before digits, digits before letters, letters case-insensitively."""
    weights = []
    for c in name:
        if c in "-'":
            continue
        if c == "_":
            weights.append(1)
        elif c.isdigit():
            weights.append(10 + ord(c) - 48)
        elif "a" <= c.lower() <= "z":
            weights.append(100 + ord(c.lower()) - 97)
        else:
            weights.append(1000 + ord(c))
    return weights, name


def _canonical_headers(req: Request, sdk_order: bool) -> str:
    items = [(k.lower(), v) for k, v in req.header_items if k.lower().startswith("x-ms-")]
    merged: dict[str, str] = {}
    for k, v in items:
        merged[k] = f"{merged[k]},{v}" if k in merged else v
    names = sorted(merged, key=_collation_key) if sdk_order else sorted(merged)
    return "".join(f"{n}:{merged[n]}\n" for n in names)


def _canonical_query(req: Request) -> str:
    params: dict[str, list[str]] = {}
    for k, v in req.raw_query:
        params.setdefault(k.lower(), []).append(v)
    out = []
    for k in sorted(params):
        out.append(f"\n{k}:{','.join(sorted(params[k]))}")
    return "".join(out)


def shared_key_strings(req: Request, account: str) -> list[str]:
    h = req.headers
    std = []
    for name in STANDARD_HEADERS:
        v = h.get(name, "")
        if name == "content-length" and v == "0":
            v = ""
        std.append(v)
    head = req.method + "\n" + "\n".join(std) + "\n"
    query = _canonical_query(req)
    paths = [req.raw_path]
    alt = quote(unquote(req.raw_path), safe="/!$&'()*+,;=:@~")
    if alt not in paths:
        paths.append(alt)
    out: list[str] = []
    for sdk_order in (True, False):
        canon_h = _canonical_headers(req, sdk_order)
        for p in paths:
            s = head + canon_h + "/" + account + p + query
            if s not in out:
                out.append(s)
    return out


def verify_shared_key(req: Request, account: str, key: bytes) -> None:
    auth = req.headers.get("authorization", "")
    scheme, _, cred = auth.partition(" ")
    if scheme not in ("SharedKey", "SharedKeyLite"):
        raise StorageError(
            "InvalidHeaderValue",
            details={"HeaderName": "Authorization", "HeaderValue": scheme},
        )
    acct, _, sig = cred.strip().rpartition(":")
    if acct != account:
        raise _auth_failed(f"The specified account name '{acct}' is not valid.")
    date = req.headers.get("x-ms-date") or req.headers.get("date")
    if not date:
        raise _auth_failed(
            "Request date header not specified. x-ms-date or Date header must be present."
        )
    ts = parse_http_date(date)
    if ts is None:
        raise _auth_failed(f"The Date header in the request is incorrect. Date: {date}")
    if abs(time.time() - ts) > MAX_CLOCK_SKEW:
        raise _auth_failed(
            f"Request date header too old: '{date}'"
            if ts < time.time()
            else f"Request date header is in the future: '{date}'"
        )
    candidates = shared_key_strings(req, account)
    for s in candidates:
        if hmac.compare_digest(_sign(key, s), sig):
            return
    shown = candidates[0].replace("\n", "\\n")
    raise _auth_failed(
        "The MAC signature found in the HTTP request is not the same as any computed "
        f"signature. Server used following string to sign: '{shown}'."
    )


def _auth_failed(detail: str) -> StorageError:
    return StorageError("AuthenticationFailed", details={"AuthenticationErrorDetail": detail})


# ----------------------------------------------------------------------------- SAS


@dataclass
class SasGrant:
    """A verified SAS: which share (and file path) it covers, for scope checks by the caller."""

    kind: str  # "account" or "service"
    share: str = ""
    resource: str = ""  # 's' or 'f' for a service SAS


def verify_sas(
    req: Request,
    account: str,
    key: bytes,
    access: Access,
    share: str,
    path: str,
    policy_lookup: Callable[[str, str], dict[str, str] | None] | None = None,
) -> SasGrant:
    """Check signature, time window, protocol, IP, services, resource types and permissions."""
    q = {k.lower(): v for k, v in req.raw_query}
    sig = q.get("sig", "")
    sv = q.get("sv", "")
    sp = q.get("sp", "")
    st = q.get("st", "")
    se = q.get("se", "")
    sip = q.get("sip", "")
    spr = q.get("spr", "")
    if "ss" in q or "srt" in q:
        ss, srt = q.get("ss", ""), q.get("srt", "")
        base = "\n".join([account, sp, ss, srt, st, se, sip, spr, sv]) + "\n"
        variants = [base + q.get("ses", "") + "\n", base]
        if not any(hmac.compare_digest(_sign(key, v), sig) for v in variants):
            raise _auth_failed(
                "Signature did not match. String to sign used was "
                + variants[0 if sv >= "2020-12-06" else 1].replace("\n", "\\n")
            )
        _check_window(st, se)
        _check_protocol_ip(spr, sip, req.client_ip)
        if "f" not in ss:
            raise StorageError("AuthorizationServiceMismatch")
        if access.level not in srt:
            raise StorageError("AuthorizationResourceTypeMismatch")
        if not any(p in sp for p in access.perms):
            raise StorageError("AuthorizationPermissionMismatch")
        return SasGrant("account")

    sr = q.get("sr", "")
    if sr not in ("s", "f") or not share:
        raise _auth_failed("Signature fields not well formed.")
    si = q.get("si", "")
    resource = f"/file/{account}/{share}"
    if sr == "f":
        resource += "/" + path
    fields = [
        sp,
        st,
        se,
        resource,
        si,
        sip,
        spr,
        sv,
        q.get("rscc", ""),
        q.get("rscd", ""),
        q.get("rsce", ""),
        q.get("rscl", ""),
        q.get("rsct", ""),
    ]
    sts = "\n".join(fields)
    if not hmac.compare_digest(_sign(key, sts), sig):
        raise _auth_failed(
            "Signature did not match. String to sign used was " + sts.replace("\n", "\\n")
        )
    if si:
        policy = policy_lookup(share, si) if policy_lookup else None
        if policy is None:
            raise _auth_failed(f"Signed identifier '{si}' not found.")
        sp = sp or policy.get("permission", "")
        st = st or policy.get("start", "")
        se = se or policy.get("expiry", "")
    _check_window(st, se)
    _check_protocol_ip(spr, sip, req.client_ip)
    if access.level != OBJECT or (sr == "f" and not path):
        raise StorageError("AuthorizationResourceTypeMismatch")
    if not any(p in sp for p in access.perms):
        raise StorageError("AuthorizationPermissionMismatch")
    return SasGrant("service", share=share, resource=sr)


def _check_window(st: str, se: str) -> None:
    now = time.time()
    if not se:
        raise _auth_failed("Signed expiry time must be specified.")
    end = parse_iso_utc(se)
    start = parse_iso_utc(st) if st else None
    if end is None or (st and start is None):
        raise _auth_failed("Signature fields not well formed.")
    if now > end or (start is not None and now < start):
        s = http_date(int(start * 1e9)) if start is not None else ""
        raise _auth_failed(
            f"Signature not valid in the specified time frame: Start [{s}] - Expiry "
            f"[{http_date(int(end * 1e9))}] - Current [{http_date()}]"
        )


def _check_protocol_ip(spr: str, sip: str, client_ip: str) -> None:
    if spr and "http" not in [p.strip() for p in spr.split(",")]:
        raise StorageError("AuthorizationProtocolMismatch")
    if sip and client_ip:
        try:
            ip = ipaddress.ip_address(client_ip)
            lo, _, hi = sip.partition("-")
            low = ipaddress.ip_address(lo)
            high = ipaddress.ip_address(hi) if hi else low
            ok = _in_range(ip, low, high)
        except ValueError:
            ok = False
        if not ok:
            raise StorageError("AuthorizationSourceIPMismatch", ip=client_ip)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _in_range(ip: IPAddress, low: IPAddress, high: IPAddress) -> bool:
    """low <= ip <= high; bounds of the other IP version never match (ipaddress would raise)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return (
            isinstance(low, ipaddress.IPv4Address)
            and isinstance(high, ipaddress.IPv4Address)
            and low <= ip <= high
        )
    return (
        isinstance(low, ipaddress.IPv6Address)
        and isinstance(high, ipaddress.IPv6Address)
        and low <= ip <= high
    )
