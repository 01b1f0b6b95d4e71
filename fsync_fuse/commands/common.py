"""What the operator's commands share: finding the mount of a path, walking files, sizes and
times for people, and one-line errors."""

from __future__ import annotations

import argparse
import errno
import fnmatch
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fsync_fuse import control


class CommandError(Exception):
    """A one-line reason the command stops (printed as `fsync-fuse: error: ...`)."""


def counter(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type` for a whole number from `low` (to `high`), with a one-line error."""
    import argparse

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if n < low or (high is not None and n > high):
            limits = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{n}: must be {limits}")
        return n

    return parse


def error(message: str) -> int:
    print(f"fsync-fuse: error: {message}", file=sys.stderr)
    return 1


def why(exc: OSError, path: str) -> str:
    """An OSError of a control request on `path`, said for people."""
    if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
        return f"{path} is not on a fsync-fuse mount (or its daemon is older than this command)"
    if exc.errno == errno.ENOENT:
        return f"{path}: no such file or directory"
    if exc.errno == errno.ENOTCONN:
        return f"{path}: the mount's daemon is gone (unmount it with `fsync-fuse unmount`)"
    return f"{path}: {exc.strerror or exc}"


def mount_of(path: str) -> str:
    """The fsync-fuse mountpoint `path` is on. CommandError when it is not on one."""
    p = os.path.abspath(path)
    if not os.path.lexists(p):
        raise CommandError(f"{path}: no such file or directory")
    cur = p
    while not os.path.ismount(cur):
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    if control.read_pid(cur) is None:
        raise CommandError(f"{path} is not on a fsync-fuse mount")
    return cur


def is_mount_root(path: str) -> bool:
    p = os.path.abspath(path)
    return os.path.ismount(p) and control.read_pid(p) is not None


def ask(path: str, action: str) -> dict[str, Any]:
    """An action's answer; an OSError of the request becomes the same shape."""
    try:
        return control.act(path, action)
    except OSError as exc:
        reason = why(exc, path)
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            reason = (
                f"this mount does not perform `{action}` (its daemon is older than this "
                "command: remount it)"
            )
        return {"ok": False, "error": reason, "errno": exc.errno, "transient": False}
    except ValueError:
        return {"ok": False, "error": f"{path}: the mount's answer is not JSON", "errno": 0}


def info(path: str) -> dict[str, Any]:
    """`user.fsync.info` of a path. CommandError when the mount does not answer."""
    try:
        return control.read_json(path, control.XATTR_INFO)
    except OSError as exc:
        raise CommandError(why(exc, path)) from None
    except ValueError:
        raise CommandError(f"{path}: the mount's answer is not JSON") from None


@dataclass
class Found:
    path: str
    rel: str  # relative to the argument it was found under
    size: int
    mtime: float


def walk(paths: list[str], pattern: str | None = None) -> Iterator[Found]:
    """Regular files at or below `paths` (os.scandir; symbolic links are not followed),
    those matching `pattern` when given: a glob on the name, or on the path relative to the
    argument when it holds a `/`. Unreadable directories raise CommandError."""
    for top in paths:
        try:
            st = os.stat(top, follow_symlinks=False)
        except OSError as exc:
            raise CommandError(why(exc, top)) from None
        if not _isdir(st.st_mode):
            if _isreg(st.st_mode) and _matches(os.path.basename(top), pattern):
                yield Found(top, os.path.basename(top), st.st_size, st.st_mtime)
            continue
        stack = [(top, "")]
        while stack:
            d, rel = stack.pop()
            try:
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                raise CommandError(why(exc, d)) from None
            for e in reversed(entries):
                r = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, r))
                elif e.is_file(follow_symlinks=False) and _matches(r, pattern):
                    s = e.stat(follow_symlinks=False)
                    yield Found(e.path, r, s.st_size, s.st_mtime)


def _isdir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def _isreg(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def _matches(rel: str, pattern: str | None) -> bool:
    if pattern is None:
        return True
    if "/" in pattern:
        return fnmatch.fnmatchcase(rel, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)


def size(nbytes: float | int | None) -> str:
    """Bytes for people: `512 B`, `1.2 MiB`."""
    if nbytes is None:
        return "?"
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def rate(bps: float | None) -> str:
    return "?" if bps is None else f"{size(bps)}/s"


def duration(seconds: float | None) -> str:
    """`45s`, `3m 12s`, `2h 5m`, `3d 4h`."""
    if seconds is None:
        return "?"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def ago(when: float | None, now: float | None = None) -> str:
    if when is None:
        return "never"
    return f"{duration((now or time.time()) - when)} ago"


def clock(when: float | None) -> str:
    if when is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def percent(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{100 * part / whole:.0f}%"


def ratio(r: float | None) -> str:
    return "-" if r is None else f"{100 * r:.1f}%"


def number(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def count(n: int | None, word: str) -> str:
    """`1 file`, `2 files`, `? files`."""
    return f"{number(n)} {word}{'' if n == 1 else 's'}"


def pending_left(st: control.Pending) -> str:
    dirs = f", {st.dirs} directory times" if st.dirs else ""
    return f"{st.files} files, {size(st.bytes)}, {st.ops} operations{dirs} left"


def drain_and_wait(mnt: str, timeout: float | None, *, quiet: bool) -> control.Pending | None:
    """Ask the mount to upload everything now and wait until its queue is empty, showing
    what is left on stderr (a line every 5 s when it is not a terminal). Returns None when
    drained (or the mount stopped answering), else what is left when `timeout` ran out."""
    try:
        control.send_control(mnt, control.CONTROL_DRAIN)  # upload now, not after the delay
    except OSError:
        pass
    tty = sys.stderr.isatty() and not quiet
    start = time.monotonic()
    last_print = 0.0
    shown = False
    try:
        while True:
            st = control.read_pending(mnt)
            if st is None or st.empty:
                return None
            now = time.monotonic()
            if timeout is not None and now - start > timeout:
                return st
            if not quiet and (tty or now - last_print >= 5):
                msg = f"waiting for uploads: {pending_left(st)}"
                if st.error:
                    msg += f" ({st.error})"
                print(
                    ("\r" + msg + "\033[K") if tty else msg,
                    end="" if tty else "\n",
                    file=sys.stderr,
                    flush=True,
                )
                last_print = now
                shown = True
            time.sleep(0.2)
    finally:
        if shown and tty:
            print(file=sys.stderr)


def add_credential_options(p: argparse.ArgumentParser) -> None:
    """The ways to give a share's credentials besides a SAS in its URL (mount, migrate)."""
    p.add_argument(
        "--account-key",
        metavar="KEY",
        help="storage account key (visible in `ps`: prefer AZURE_STORAGE_KEY or "
        "--account-key-file)",
    )
    p.add_argument("--account-key-file", metavar="FILE", help="file holding the account key")
    p.add_argument(
        "--connection-string",
        metavar="CS",
        help="storage connection string (prefer AZURE_STORAGE_CONNECTION_STRING)",
    )


def warn_account_key(args: argparse.Namespace) -> str | None:
    """The key given on the command line, with a warning that `ps` shows it."""
    if args.account_key:
        print(
            "fsync-fuse: warning: --account-key is visible to every user in `ps` output; "
            "prefer AZURE_STORAGE_KEY or --account-key-file",
            file=sys.stderr,
        )
    return args.account_key or None


def size_arg(text: str) -> int:
    """An argparse type: '512M', '10G' -> bytes."""
    from fsync_fuse.config import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
