"""`fsync-fuse unmount MOUNTPOINT`: wait for the upload queue to drain, then unmount.

Through the control surface (control.py): ask the daemon to drain, poll its pending work
until it is empty, unmount, then wait for the daemon (its pid) to exit so the cache is closed
when we return. `--lazy` tells the daemon not to drain and unmounts at once; the queue is
persisted and finishes at the next mount.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from fsync_fuse import control
from fsync_fuse.commands.common import drain_and_wait, pending_left


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _fusermount(path: str, lazy: bool) -> subprocess.CompletedProcess:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = (
        [tool, "-u"] + (["-z"] if lazy else []) + [path]
        if tool
        else ["umount"] + (["-l"] if lazy else []) + [path]
    )
    return subprocess.run(cmd, capture_output=True, text=True)


def run(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if not os.path.ismount(mnt):
        try:
            os.stat(mnt)
        except OSError:  # ENOTCONN: the daemon died; lazy unmount still cleans up
            return _finish(mnt, _fusermount(mnt, True), None, args)
        print(f"fsync-fuse: error: {mnt} is not mounted", file=sys.stderr)
        return 1
    pid = control.read_pid(mnt)
    if args.lazy:
        try:
            control.send_control(mnt, control.CONTROL_LAZY)
        except OSError:
            pass
        return _finish(mnt, _fusermount(mnt, True), pid, args)

    left = drain_and_wait(mnt, args.timeout, quiet=args.quiet)
    if left is not None:
        print(
            f"fsync-fuse: error: queue not drained after {args.timeout:.0f}s "
            f"({pending_left(left)}); "
            "still mounted (use --lazy to unmount anyway)",
            file=sys.stderr,
        )
        return 1
    _report_stuck(mnt)
    return _finish(mnt, _fusermount(mnt, False), pid, args)


def _report_stuck(mnt: str) -> None:
    """Items the share refuses stay queued for the next mount: say so."""
    status = control.read_status(mnt) or {}
    stuck = status.get("stuck") or {}
    if stuck.get("count"):
        first = (stuck.get("items") or [{}])[0]
        print(
            f"fsync-fuse: warning: {stuck['count']} items the share refuses stay queued for "
            f"the next mount (first: {first.get('op')} {first.get('path')}: "
            f"{first.get('reason')}); rename or remove them, see `getfattr -n "
            f"user.fsync.status {mnt}`",
            file=sys.stderr,
        )


def _finish(
    mnt: str, proc: subprocess.CompletedProcess[str], pid: int | None, args: argparse.Namespace
) -> int:
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        reason = err[-1] if err else f"exit status {proc.returncode}"
        if "busy" in reason.lower():
            reason += " (files are open; close them or use --lazy)"
        print(f"fsync-fuse: error: cannot unmount {mnt}: {reason}", file=sys.stderr)
        return 1
    if pid is not None:  # the daemon closes its cache on the way out: wait for that
        from cache.system import process_alive  # (imports the cache: only when needed)

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(0.1)
    if not args.quiet:
        print(f"unmounted {mnt}", file=sys.stderr)
    return 0
