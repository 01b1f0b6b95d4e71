"""Fault injection and request statistics, both driven through the admin endpoint.

Faults (JSON keys, merged on PUT, reset on DELETE):
  latency_ms      delay before every request is handled
  error_rate      fraction (0..1) of requests answered with `error_status` instead of executing
  error_status    500 (InternalError) or 503 (ServerBusy, the service's throttling answer)
  drop_rate       fraction of responses whose TCP connection is cut (RST) in the middle of the body
  outage_seconds  from now on, for that long, every request's connection is closed unanswered
  drop_ops        {"Op": N} or {"Op:glob": N}: the next N requests of that operation (as named
                  in the stats, e.g. "RenameFile") that *succeed* are executed, then their
                  connection is cut (RST) before a byte of the answer is sent: the client
                  cannot tell whether it happened. With ":glob", only requests whose
                  share-relative path matches the glob (fnmatch, case-insensitive; a rename's
                  destination) count. Counts go down as answers are dropped; a PUT replaces
                  the whole map
  refuse_names    ["glob", ...]: every request whose path (or rename/copy source) has a
                  component matching one of these globs (fnmatch, case-insensitive) is
                  answered HTTP 400 with `refuse_code` without executing, as the service
                  answers a name it cannot hold
  refuse_paths    ["glob", ...]: the same for a request whose whole share-relative path (or
                  rename/copy source) matches one of these globs, e.g. "a/deep/*" (a path
                  the share finds too long, while a shorter one for the same entry is fine)
  refuse_code     InvalidResourceName (default), InvalidFileOrDirectoryPathName or
                  OutOfRangeInput

Stats: {"total": N, "by_op": {"GetFile": n, ...}, "by_status": {"200": n, ...}} over all
non-admin requests since start (or the last DELETE /_admin/stats).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULTS: dict[str, Any] = {
    "latency_ms": 0.0,
    "error_rate": 0.0,
    "error_status": 503,
    "drop_rate": 0.0,
    "outage_seconds": 0.0,
    "drop_ops": {},
    "refuse_names": [],
    "refuse_paths": [],
    "refuse_code": "InvalidResourceName",
}
#: error codes `refuse_code` may name: the service's answers to names and paths it refuses
REFUSE_CODES = ("InvalidResourceName", "InvalidFileOrDirectoryPathName", "OutOfRangeInput")
#: headers naming a second path of a request (a rename's or copy's source, as a URL)
_SOURCE_HEADERS = ("x-ms-file-rename-source", "x-ms-copy-source")


def share_path(raw_path: str) -> str:
    """The share-relative path of a path-style request (`/account/share/dir/file`)."""
    parts = [unquote(p, errors="surrogatepass") for p in raw_path.split("/") if p]
    return "/".join(parts[2:])


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    drop_rate: float = 0.0
    outage_seconds: float = 0.0
    outage_until: float = 0.0
    #: op or "op:glob" -> answers of successful requests still to drop
    drop_ops: dict[str, int] = field(default_factory=dict)
    refuse_names: list[str] = field(default_factory=list)
    refuse_paths: list[str] = field(default_factory=list)
    refuse_code: str = "InvalidResourceName"
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set some faults from JSON values (checked and converted here, all or nothing)."""
        unknown = set(changes) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        checked: dict[str, Any] = {}
        for k, v in changes.items():
            if k == "error_status":
                v = int(v)
                if v not in (500, 503):
                    raise ValueError("error_status must be 500 or 503")
            elif k == "drop_ops":
                v = _drop_ops(v)
            elif k in ("refuse_names", "refuse_paths"):
                if not isinstance(v, list) or not all(isinstance(n, str) and n for n in v):
                    raise ValueError(f"{k} must be a list of non-empty strings")
                v = list(v)
            elif k == "refuse_code":
                if v not in REFUSE_CODES:
                    raise ValueError(f"refuse_code must be one of {', '.join(REFUSE_CODES)}")
            else:
                v = float(v)
                if v < 0 or (k.endswith("_rate") and v > 1):
                    raise ValueError(f"{k} out of range")
            checked[k] = v
        for k, v in checked.items():
            setattr(self, k, v)
        if "outage_seconds" in checked:
            self.outage_until = time.monotonic() + self.outage_seconds if self.outage_seconds else 0

    def reset(self) -> None:
        self.update(copy.deepcopy(DEFAULTS))
        self.outage_until = 0.0

    def snapshot(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: copy.deepcopy(getattr(self, k)) for k in DEFAULTS}
        d["outage_remaining"] = max(0.0, self.outage_until - time.monotonic())
        return d

    def in_outage(self) -> bool:
        return self.outage_until > time.monotonic()

    def should_error(self) -> bool:
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    def should_drop(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate

    def refusal(self, raw_path: str, headers: Mapping[str, str]) -> str | None:
        """The error code to refuse this request with (`refuse_names`, `refuse_paths`), or
        None."""
        if not self.refuse_names and not self.refuse_paths:
            return None
        paths = [share_path(raw_path)]
        for h in _SOURCE_HEADERS:
            url = headers.get(h)
            if url:
                paths.append(share_path(urlsplit(url).path))
        for path in paths:
            if any(_match(path, pat) for pat in self.refuse_paths):
                return self.refuse_code
            for part in path.split("/"):
                if part and any(_match(part, pat) for pat in self.refuse_names):
                    return self.refuse_code
        return None

    def take_drop(self, op: str, raw_path: str, status: int) -> bool:
        """Whether to cut this answer (`drop_ops`): a successful request of a listed
        operation (and path) while its count lasts; the count goes down."""
        if not self.drop_ops or not 200 <= status < 300:
            return False
        path: str | None = None
        for key, left in self.drop_ops.items():
            name, _, glob = key.partition(":")
            if name != op or left <= 0:
                continue
            if glob:
                if path is None:
                    path = share_path(raw_path)
                if not _match(path, glob):
                    continue
            if left > 1:
                self.drop_ops[key] = left - 1
            else:
                del self.drop_ops[key]
            return True
        return False

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        data = json.loads(text or "{}")
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        return data


def _match(text: str, glob: str) -> bool:
    return fnmatch.fnmatchcase(text.casefold(), glob.casefold())


def _drop_ops(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError('drop_ops must be an object like {"RenameFile": 1}')
    out: dict[str, int] = {}
    for key, n in value.items():
        if not isinstance(key, str) or not key or key.startswith(":"):
            raise ValueError("drop_ops keys are operation names, optionally with ':glob'")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("drop_ops counts must be integers >= 0")
        if n:
            out[key] = n
    return out


@dataclass
class Stats:
    total: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)

    def count(self, op: str) -> None:
        self.total += 1
        self.by_op[op or "Unknown"] += 1

    def status(self, status: int) -> None:
        self.by_status[str(status)] += 1

    def reset(self) -> None:
        self.total = 0
        self.by_op.clear()
        self.by_status.clear()

    def snapshot(self) -> dict[str, object]:
        return {
            "total": self.total,
            "by_op": dict(self.by_op),
            "by_status": dict(self.by_status),
        }
