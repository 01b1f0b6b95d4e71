"""The mount's control surface: extended attributes on the mount root and on files.

This module is the one place that names them and shapes their JSON; the daemon
(control_server.py) answers them and every command under `commands/` uses them through the
client helpers below.

**Why actions are reads.** The kernel lets anyone who can read a file read its `user.*`
attributes, but setting one needs write access. Pinning, recalling or tiering a file is
something a reader of the file may ask for, so those are requested by *reading* a name
(`user.fsync.do.<action>`): the daemon performs the action and the value read is its result,
as JSON. Actions are idempotent (pin twice = pinned, a second recall fetches nothing), because
tools that ask for a value's size first (`getfattr`) read a name twice; the client helpers here
read once, with a buffer of the largest size the kernel allows (64 KiB). No `user.fsync.*`
name is listed (listxattr shows the entry's own attributes, xattrs.py), so `getfattr -d`
performs no action and tools copying attributes never copy these. Changing a policy (`do.set`) is
refused to anyone but the user who mounted the share and root.

On the mount root (reads):
- `user.fsync.pending`: `Pending` as JSON, what is not on the share yet (items stuck because
  the share refuses them are not: they are in `status`). Reading it also keeps a running
  drain request alive (see `CONTROL_DRAIN`).
- `user.fsync.status`: JSON, `Pending`'s keys at the top level, the counters of the parts
  (conflicts, poll, revalidate, read, readdir, index_trims, leases), `stuck` (`{"count",
  "items": [{"path", "op", "reason"}]}`) and the operator's view (`STATUS_SECTIONS`):
  `mount` `{"share", "site", "mountpoint", "cache_dir", "started"}`;
  `share` `{"reachable", "since", "error"}` (since: time.time() of the last change seen);
  `cache` `{"used", "bound", "data", "index", "reserved", "dirty", "pinned", "pin_reserved",
  "volume_free", "volume_total", "min_free_pct", "tier_after"}` (bytes; `used` = data +
  index; `reserved`: what the bound keeps for the index, directories and log; `pinned`: what
  pinned files hold, `pin_reserved`: what pins reserve; `tier_after` seconds or null);
  `counts` of files `{"entries", "cached", "local", "partial", "tiered", "pinned", "dirty"}`
  (`entries`: records of the namespace, files and directories; `cached`: files with cached
  data; `tiered` = entries - cached; null where the cache cannot tell);
  `uploads` `{"in_flight", "files", "bytes", "failures", "rate"}` (rate: bytes/s over the
  last 5 minutes); `recall` `{"files", "bytes", "failures", "queued", "running",
  "max_parallel", "requests", "max_parallel_requests"}`; `fetch` `{"count", "bytes",
  "failures", "seconds", "rate"}` (every fetch from the share: on demand and recalls);
  `hits` `{"since_mount": W, "last_5m": W}` with W = `{"reads", "bytes", "hit_reads",
  "miss_reads", "hit_bytes", "fetched_bytes", "seconds"}` (`reads`, `bytes`: hit ratios 0..1
  or null; by bytes = bytes read from the cache / (those + bytes fetched));
  `evictions` `{reason: {"blocks", "bytes"}}` (reasons size, free_space, date, command);
  `remote` `{"calls": {op: n}, "errors": {class: n}}`; `policies` `{name: text}` (as
  `user.fsync.settings`); `poll` gains `last_at`, `last_seconds`, `last_listed` (null until
  the poller reports a round). The 5-minute figures compare with the oldest of the snapshots
  the daemon takes every 10 s (`seconds`: the window actually covered).
- `user.fsync.settings`: JSON `{name: text}`, the tiering policies in force (settings.py:
  min_free_space, tier_after, proactive_recall).
- `user.fsync.dirty`: JSON `{"count", "bytes", "ops", "files": [{"path", "bytes", "size",
  "mtime", "stuck"}], "operations": [{"op", "path"}], "shown"}`: what has not reached the
  share yet, files oldest change first (`stuck`: the share's refusal or null), queued
  operations in order; lists are cut to fit one attribute (`shown`: how many files).
- `user.fsync.next` or `user.fsync.next.<N>`: JSON `{"tier_after", "min_free_pct",
  "count", "files": [{"path", "reason", "heat", "last_access", "cached"}]}`: the N (default
  20, at most 10000) files eviction would take next, in order; reason `date` (unused for
  longer than tier_after) or `heat` (coldest first).
- `user.fsync.pid`: the daemon's process id (unmount waits for it to exit).

On the mount root (writes, need write access to it):
- `user.fsync.control`: `drain` uploads everything now, ignoring the write-back delay, for
  as long as someone keeps reading `user.fsync.pending`; `lazy` makes the daemon leave the
  queue for the next mount when it is unmounted.
- `user.fsync.sync` (any value): re-list every listed directory now; returns when done.

On a file or directory (reads):
- `user.fsync.state` (files): `tiered`, `partial`, `local` or `dirty`, plus `,pinned`.
- `user.fsync.info`: JSON `Info` (below; the keys are its fields): for a file its state,
  size, cached bytes, pinned and whether inherited from a directory above, dirty bytes, last
  access, heat and its conflict copies (names.looks_like_conflict_copy); for a directory its
  pin and `summary` `{"entries", "files", "dirs", "local", "partial", "tiered", "dirty",
  "pinned", "size", "cached", "more"}` of the entries directly in it (at most 5000 counted;
  `more` 1 when there are more).

Actions (reads, see above; each answers `{"ok": true, ...}` or `ActionError`'s JSON
`{"ok": false, "error": "one line", "errno": N, "transient": bool}`):
- `user.fsync.do.pin` / `user.fsync.do.unpin` (file or directory): `{"ok", "files"}`, how
  many files were newly pinned or unpinned. Pinning more than fits fails with ENOSPC and the
  cache's message, before anything is evicted.
- `user.fsync.do.recall` (file): returns when the file is local: `{"ok", "fetched", "state"}`.
  ENOSPC when the cache bound or free-space floor would be crossed.
- `user.fsync.do.tier` (file): `{"ok", "freed", "skipped"}`; skipped is `dirty` or
  `pinned` (nothing freed) or null.
- `user.fsync.do.set.<name>=<value>` (root): change a policy now (persisted):
  `{"ok", "policies": {name: text}}`.
"""

from __future__ import annotations

import builtins
import ctypes
import errno as errno_mod
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

XATTR_PENDING = "user.fsync.pending"
XATTR_STATUS = "user.fsync.status"
XATTR_PID = "user.fsync.pid"
XATTR_CONTROL = "user.fsync.control"
XATTR_SYNC = "user.fsync.sync"
XATTR_STATE = "user.fsync.state"
XATTR_INFO = "user.fsync.info"
XATTR_SETTINGS = "user.fsync.settings"
XATTR_DIRTY = "user.fsync.dirty"
XATTR_NEXT = "user.fsync.next"

#: actions: `DO + name`; `set` carries its argument in the name: `do.set.NAME=VALUE`
DO = "user.fsync.do."
ACTION_PIN = "pin"
ACTION_UNPIN = "unpin"
ACTION_RECALL = "recall"
ACTION_TIER = "tier"
ACTION_SET = "set"
#: on the root: `snapshot.create`, `snapshot.list`, `snapshot.delete`, arguments as a query
#: (`do.snapshot.create?wait=600&keep=3`); on a file: `versions`
ACTION_SNAPSHOT = "snapshot"
ACTION_VERSIONS = "versions"
#: on a file under `.snapshots/NAME/`: put it back in place by a share-side copy
ACTION_RESTORE = "restore"
ACTIONS = (
    ACTION_PIN,
    ACTION_UNPIN,
    ACTION_RECALL,
    ACTION_TIER,
    ACTION_SET,
    ACTION_SNAPSHOT,
    ACTION_VERSIONS,
    ACTION_RESTORE,
)


def with_args(action: str, **args: object) -> str:
    """An action name carrying arguments (None values left out); at most 255 bytes in all."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in args.items() if v is not None})
    return f"{action}?{query}" if query else action


CONTROL_DRAIN = "drain"
CONTROL_LAZY = "lazy"

#: seconds a drain request lasts after the last read of `user.fsync.pending`
DRAIN_GRACE = 30.0

#: the largest attribute value the kernel passes (XATTR_SIZE_MAX); lists are cut to fit
MAX_VALUE = 65536
#: `user.fsync.next` without a count
NEXT_DEFAULT = 20

#: the sections of `user.fsync.status` the operator's commands read
STATUS_SECTIONS = (
    "mount",
    "share",
    "cache",
    "counts",
    "uploads",
    "recall",
    "fetch",
    "hits",
    "evictions",
    "remote",
    "policies",
)


@dataclass
class Pending:
    """What has not reached the share yet."""

    files: int
    bytes: int  # (the JSON key; annotations below say builtins.bytes)
    ops: int
    error: str | None = None
    #: directories whose new mtime (entries changed here) is not on the share yet
    dirs: int = 0

    @property
    def empty(self) -> bool:
        return not (self.files or self.ops or self.dirs)

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> Pending:
        data = json.loads(raw)
        return cls(
            files=int(data.get("files", 0)),
            bytes=int(data.get("bytes", 0)),
            ops=int(data.get("ops", 0)),
            error=data.get("error"),
            dirs=int(data.get("dirs", 0)),
        )


@dataclass
class Info:
    """`user.fsync.info` of one file or directory (the JSON keys are the fields)."""

    path: str
    kind: str  # "file", "dir" or "other"
    size: int = 0
    cached: int = 0  # bytes of it in the cache
    state: str | None = None  # user.fsync.state's word, without ",pinned"
    local: bool = False  # every byte can be read without the share
    pinned: bool = False
    inherited: bool = False  # pinned only through a directory above it
    dirty: int = 0  # bytes not on the share yet
    last_access: float | None = None  # time.time() of the last read or write
    heat: float | None = None
    mtime: float = 0.0
    conflicts: list[str] = field(default_factory=list)  # conflict copies beside it
    #: a directory: its files directly in it, by state, and how many were counted
    summary: dict[str, int] | None = None

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self)).encode()


class ActionError(Exception):
    """An action that did not happen: a one-line reason and the errno it stands for."""

    def __init__(self, message: str, err: int = errno_mod.EIO, transient: bool = False) -> None:
        super().__init__(message)
        self.errno = err
        self.transient = transient

    def to_json(self) -> bytes:
        return json.dumps(
            {"ok": False, "error": str(self), "errno": self.errno, "transient": self.transient}
        ).encode()


def action_ok(**values: Any) -> bytes:
    return json.dumps({"ok": True, **values}).encode()


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def status_json(pending: Pending, counters: dict[str, Any]) -> bytes:
    """`user.fsync.status`: the pending work's keys at the top level, then the counters."""
    return json.dumps({**asdict(pending), **counters}).encode()


def set_name(name: str, value: str) -> str:
    """The attribute that sets policy `name` to `value`."""
    return f"{DO}{ACTION_SET}.{name}={value}"


def parse_set(rest: str) -> tuple[str, str] | None:
    """`NAME=VALUE` (what follows `do.set.`) -> (name, value); None when malformed."""
    name, sep, value = rest.partition("=")
    return (name, value) if sep and name else None


# ---------------------------------------------------------------------- client side
_libc: ctypes.CDLL | None = None


def _getxattr_once(path: str, name: str) -> bytes:
    """getxattr(2) with a buffer of MAX_VALUE: one request reaches the daemon (os.getxattr
    asks again with a larger buffer when a value exceeds 128 bytes, which would repeat an
    action). Raises OSError like os.getxattr."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)  # libc, already loaded
        lib.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        lib.getxattr.restype = ctypes.c_ssize_t
        _libc = lib
    buf = ctypes.create_string_buffer(MAX_VALUE)
    n = _libc.getxattr(os.fsencode(path), name.encode(), buf, MAX_VALUE)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buf.raw[:n]


def _get(mountpoint: str, name: str) -> bytes | None:
    try:
        return os.getxattr(mountpoint, name)
    except OSError:
        return None


def read_json(path: str, name: str) -> dict[str, Any]:
    """One attribute read as a JSON object. OSError when the mount refuses it (ENODATA: not
    a fsync-fuse mount, or too old for this name); ValueError when it is not JSON."""
    data = json.loads(_getxattr_once(path, name))
    if not isinstance(data, dict):
        raise ValueError(f"{name}: not a JSON object")
    return data


def act(path: str, action: str) -> dict[str, Any]:
    """Perform an action on `path` (`ACTION_*`; for `set` use `set_policy`); returns its
    JSON answer, `{"ok": false, ...}` included. OSError when the mount does not answer it."""
    return read_json(path, DO + action)


def set_policy(mountpoint: str, name: str, value: str) -> dict[str, Any]:
    return read_json(mountpoint, set_name(name, value))


def read_pending(mountpoint: str) -> Pending | None:
    """The mount's pending work; None when it does not answer (not ours, or gone)."""
    raw = _get(mountpoint, XATTR_PENDING)
    if raw is None:
        return None
    try:
        return Pending.from_json(raw)
    except (ValueError, TypeError):
        return None


def read_status(mountpoint: str) -> dict[str, Any] | None:
    try:
        return read_json(mountpoint, XATTR_STATUS)
    except (OSError, ValueError):
        return None


def read_pid(mountpoint: str) -> int | None:
    raw = _get(mountpoint, XATTR_PID)
    return int(raw) if raw and raw.isdigit() else None


def send_control(mountpoint: str, command: str) -> None:
    """`drain` or `lazy`; raises OSError when the mount refuses it."""
    os.setxattr(mountpoint, XATTR_CONTROL, command.encode())


def request_sync(mountpoint: str) -> None:
    """Re-list the share now; returns when done. Raises OSError when refused."""
    os.setxattr(mountpoint, XATTR_SYNC, b"1")
