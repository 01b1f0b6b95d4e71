"""`fsync-fuse unmount MOUNTPOINT`: wait for the upload queue to drain, then unmount.

The daemon publishes its queue on the mount root as the extended attribute
`user.fsync.pending` (JSON: files, bytes, ops, error) and its pid as `user.fsync.pid`; we poll
the first until it is empty, unmount, then wait for the daemon to exit so the cache is closed
when we return. `--lazy` tells the daemon (`user.fsync.control` = "lazy") not to drain and
unmounts at once; the queue is persisted and finishes at the next mount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "unmount",
        aliases=["umount"],
        help="upload what is queued, then unmount",
        description="Wait until every queued change is on the share (progress is shown), then "
        "unmount. With --lazy, unmount at once; the queue resumes at the next mount.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument(
        "-z",
        "--lazy",
        action="store_true",
        help="unmount now, even if busy; queued changes upload at the next mount",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up (and stay mounted) if the queue has not drained by then",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name)
    except OSError:
        return None


def _pending(path: str) -> dict | None:
    raw = _xattr(path, "user.fsync.pending")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _fusermount(path: str, lazy: bool) -> subprocess.CompletedProcess:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = (
        [tool, "-u"] + (["-z"] if lazy else []) + [path]
        if tool
        else ["umount"] + (["-l"] if lazy else []) + [path]
    )
    return subprocess.run(cmd, capture_output=True, text=True)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if not os.path.ismount(mnt):
        try:
            os.stat(mnt)
        except OSError:  # ENOTCONN: the daemon died; lazy unmount still cleans up
            return _finish(mnt, _fusermount(mnt, True), None, args)
        print(f"fsync-fuse: error: {mnt} is not mounted", file=sys.stderr)
        return 1
    pid_raw = _xattr(mnt, "user.fsync.pid")
    pid = int(pid_raw) if pid_raw and pid_raw.isdigit() else None
    if args.lazy:
        try:
            os.setxattr(mnt, "user.fsync.control", b"lazy")
        except OSError:
            pass
        return _finish(mnt, _fusermount(mnt, True), pid, args)

    try:
        os.setxattr(mnt, "user.fsync.control", b"drain")  # upload now, not after the delay
    except OSError:
        pass
    tty = sys.stderr.isatty() and not args.quiet
    start = time.monotonic()
    last_print = 0.0
    shown = False
    while True:
        st = _pending(mnt)
        if st is None or (not st.get("files") and not st.get("ops")):
            break
        now = time.monotonic()
        if args.timeout is not None and now - start > args.timeout:
            if shown and tty:
                print(file=sys.stderr)
            print(
                f"fsync-fuse: error: queue not drained after {args.timeout:.0f}s "
                f"({st['files']} files, {_human(st['bytes'])}, {st['ops']} operations left); "
                "still mounted (use --lazy to unmount anyway)",
                file=sys.stderr,
            )
            return 1
        if not args.quiet and (tty or now - last_print >= 5):
            msg = (
                f"waiting for uploads: {st['files']} files, {_human(st['bytes'])}, "
                f"{st['ops']} operations left"
            )
            if st.get("error"):
                msg += f" ({st['error']})"
            print(
                ("\r" + msg + "\033[K") if tty else msg,
                end="" if tty else "\n",
                file=sys.stderr,
                flush=True,
            )
            last_print = now
            shown = True
        time.sleep(0.2)
    if shown and tty:
        print(file=sys.stderr)
    return _finish(mnt, _fusermount(mnt, False), pid, args)


def _finish(mnt: str, proc: subprocess.CompletedProcess, pid: int | None, args) -> int:
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        reason = err[-1] if err else f"exit status {proc.returncode}"
        if "busy" in reason.lower():
            reason += " (files are open; close them or use --lazy)"
        print(f"fsync-fuse: error: cannot unmount {mnt}: {reason}", file=sys.stderr)
        return 1
    if pid is not None:  # the daemon closes its cache on the way out: wait for that
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().split(") ", 1)[-1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.1)
    if not args.quiet:
        print(f"unmounted {mnt}", file=sys.stderr)
    return 0
