"""Wire formats of the service: times, ETags, file ids, attributes, name keys.

Times are kept as integer nanoseconds since the epoch (UTC) and rendered the way the service
renders them: SMB times as ISO 8601 with exactly 7 fractional digits (the SDK parser relies on
that), HTTP dates as RFC 1123, ETags as quoted hex .NET ticks ("0x8DAA197BEBC450B").
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime

from .errors import StorageError

# .NET ticks (100 ns) between 0001-01-01 and 1970-01-01
_EPOCH_TICKS = 621355968000000000

_last_etag_ticks = 0
_last_now = 0


def now_ns() -> int:
    """A strictly increasing wall-clock time, so every change gets a distinct time and ETag."""
    global _last_now
    t = time.time_ns() // 100 * 100
    if t <= _last_now:
        t = _last_now + 100
    _last_now = t
    return t


def new_etag(ns: int) -> str:
    """A quoted ETag from the change time, unique even for changes within the same tick."""
    global _last_etag_ticks
    ticks = ns // 100 + _EPOCH_TICKS
    if ticks <= _last_etag_ticks:
        ticks = _last_etag_ticks + 1
    _last_etag_ticks = ticks
    return f'"0x{ticks:X}"'


_SECONDS: dict[int, str] = {}
_HTTP_DATES: dict[int, str] = {}


def smb_time(ns: int) -> str:
    """2022-09-28T21:23:53.9650870Z (the whole-second part is cached: listings repeat it)."""
    sec, rem = divmod(ns, 1_000_000_000)
    head = _SECONDS.get(sec)
    if head is None:
        if len(_SECONDS) > 65536:
            _SECONDS.clear()
        head = _SECONDS[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{rem // 100:07d}Z"


_SMB_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?$"
)


def parse_smb_time(value: str, header: str = "") -> int:
    m = _SMB_RE.match(value.strip())
    if not m:
        raise StorageError("InvalidHeaderValue", details=_hdr(header, value))
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    except (ValueError, OverflowError):
        raise StorageError("InvalidHeaderValue", details=_hdr(header, value)) from None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    nanos = int((frac or "0").ljust(9, "0")[:9])
    return (secs * 1_000_000_000 + nanos) // 100 * 100


def _hdr(name: str, value: str) -> dict[str, str]:
    return {"HeaderName": name, "HeaderValue": value} if name else {}


def http_date(ns: int | None = None) -> str:
    """RFC 1123: Wed, 28 Sep 2022 21:23:53 GMT"""
    sec = int(time.time()) if ns is None else ns // 1_000_000_000
    text = _HTTP_DATES.get(sec)
    if text is None:
        if len(_HTTP_DATES) > 65536:
            _HTTP_DATES.clear()
        text = _HTTP_DATES[sec] = formatdate(sec, usegmt=True)
    return text


def parse_http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def iso_now_7() -> str:
    return smb_time(time.time_ns())


def snapshot_id(ns: int) -> str:
    """Share snapshot ids look like 2022-10-07T21:07:17.0000000Z."""
    return smb_time(ns)


def parse_iso_utc(value: str) -> float | None:
    """SAS times: 2024-01-01T00:00:00Z, with or without fractions, or a bare date."""
    v = value.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%MZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(v, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    m = _SMB_RE.match(v)
    if m:
        return parse_smb_time(v) / 1e9
    return None


# ----------------------------------------------------------------------------- file ids


def _reverse64(n: int) -> int:
    return int(f"{n:064b}"[::-1], 2)


def file_id(node_id: int) -> str:
    """Decimal file id like the service's (13835128424026341376); the root directory is 0."""
    if node_id == 0:
        return "0"
    return str(_reverse64(node_id) ^ (1 << 46))


# ----------------------------------------------------------------------------- attributes

ATTR_ORDER = [
    "ReadOnly",
    "Hidden",
    "System",
    "None",
    "Directory",
    "Archive",
    "Temporary",
    "Offline",
    "NotContentIndexed",
    "NoScrubData",
]
_ATTR_LOOKUP = {a.lower(): a for a in ATTR_ORDER}


def parse_attributes(value: str, is_dir: bool, header: str = "x-ms-file-attributes") -> str:
    """Normalize 'ReadOnly|Hidden' / 'none' into the service's 'ReadOnly | Hidden' form."""
    parts = [p.strip() for p in value.split("|") if p.strip()]
    found: set[str] = set()
    for p in parts:
        a = _ATTR_LOOKUP.get(p.lower())
        if a is None:
            raise StorageError("InvalidHeaderValue", details=_hdr(header, value))
        found.add(a)
    found.discard("None")
    if is_dir:
        found.add("Directory")
    else:
        if "Directory" in found:
            raise StorageError("InvalidHeaderValue", details=_hdr(header, value))
        if not found:
            found.add("Archive")
    return format_attributes(found)


def format_attributes(attrs: set[str]) -> str:
    return " | ".join(a for a in ATTR_ORDER if a in attrs)


# ----------------------------------------------------------------------------- names


def name_key(name: str) -> str:
    """Case-insensitive key: simple per-character upper-casing, as NTFS does (no 'ß' -> 'SS')."""
    if name.isascii():
        return name.upper()
    out = []
    for c in name:
        u = c.upper()
        out.append(u if len(u) == 1 else c)
    return "".join(out)


_FORBIDDEN = set('"\\/:|<>*?')


def valid_component(name: str) -> bool:
    if not name or len(name) > 255:
        return False
    for c in name:
        if c in _FORBIDDEN or ord(c) < 0x20:
            return False
    return name not in (".", "..")


_SHARE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")


def valid_share_name(name: str) -> bool:
    return 3 <= len(name) <= 63 and bool(_SHARE_RE.match(name))
