"""The mount's control surface: extended attributes on the mount root and on files.

This module is the one place that names them and shapes their JSON; the daemon
(control_server.py) answers them and every command under `commands/` uses them through the
client helpers below. Any user who can read the mount can read status; the kernel checks the
permission to set attributes on the root (write access to it).

On the mount root:
- `user.fsync.pending` (read): `Pending` as JSON, what is not on the share yet (items stuck
  because the share refuses them are not: they are in `status`). Reading it also keeps a
  running drain request alive (see `CONTROL_DRAIN`).
- `user.fsync.status` (read): JSON, `Pending`'s keys plus counters (conflicts, poll,
  revalidate, read, readdir, index_trims, leases) and `stuck` (count and the first items,
  each with path, operation and reason).
- `user.fsync.pid` (read): the daemon's process id (unmount waits for it to exit).
- `user.fsync.control` (write): `drain` uploads everything now, ignoring the write-back
  delay, for as long as someone keeps reading `user.fsync.pending`; `lazy` makes the
  daemon leave the queue for the next mount when it is unmounted.
- `user.fsync.sync` (write, any value): re-list every listed directory now; returns when
  done.

On a file: `user.fsync.state` (read): `tiered`, `partial`, `local` or `dirty`, plus
`,pinned`.
"""

from __future__ import annotations

import builtins
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

XATTR_PENDING = "user.fsync.pending"
XATTR_STATUS = "user.fsync.status"
XATTR_PID = "user.fsync.pid"
XATTR_CONTROL = "user.fsync.control"
XATTR_SYNC = "user.fsync.sync"
XATTR_STATE = "user.fsync.state"

#: what listxattr shows on the root (the writable ones are commands, not values)
ROOT_READABLE = (XATTR_PENDING, XATTR_PID, XATTR_STATUS)
#: what listxattr shows on a file
FILE_READABLE = (XATTR_STATE,)

CONTROL_DRAIN = "drain"
CONTROL_LAZY = "lazy"

#: seconds a drain request lasts after the last read of `user.fsync.pending`
DRAIN_GRACE = 30.0


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


def status_json(pending: Pending, counters: dict[str, Any]) -> bytes:
    """`user.fsync.status`: the pending work's keys at the top level, then the counters."""
    return json.dumps({**asdict(pending), **counters}).encode()


# ---------------------------------------------------------------------- client side
def _get(mountpoint: str, name: str) -> bytes | None:
    try:
        return os.getxattr(mountpoint, name)
    except OSError:
        return None


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
    raw = _get(mountpoint, XATTR_STATUS)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_pid(mountpoint: str) -> int | None:
    raw = _get(mountpoint, XATTR_PID)
    return int(raw) if raw and raw.isdigit() else None


def send_control(mountpoint: str, command: str) -> None:
    """`drain` or `lazy`; raises OSError when the mount refuses it."""
    os.setxattr(mountpoint, XATTR_CONTROL, command.encode())


def request_sync(mountpoint: str) -> None:
    """Re-list the share now; returns when done. Raises OSError when refused."""
    os.setxattr(mountpoint, XATTR_SYNC, b"1")
