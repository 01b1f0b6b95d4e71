"""`fsync-fuse snapshot create|list|delete`: the share's snapshots, made and pruned through a
running mount (its credentials; snapadmin.py does the work)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fsync_fuse import control
from fsync_fuse.commands.common import (
    CommandError,
    ask,
    counter,
    drain_and_wait,
    error,
    is_mount_root,
    mount_of,
    pending_left,
)

EPILOG = """\
Snapshots appear inside every mount as MOUNTPOINT/.snapshots/@GMT-YYYY.MM.DD-HH.MM.SS/.
A scheduled backup is one timer running, e.g.:
  fsync-fuse snapshot create /mnt/share --keep-daily 7 --keep-hourly 24
--keep* only ever delete snapshots fsync-fuse made (marked with snapshot metadata)."""


_count = counter(1)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "snapshot",
        help="make, list and delete share snapshots (cloud-side backups)",
        description="Share snapshots: read-only copies of the whole share kept by the service.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser(
        "create",
        help="snapshot the share once what this mount queued is on it",
        description="Make a share snapshot. By default it first waits until everything "
        "queued on this mount has reached the share, so the snapshot holds what users of the "
        "mount see; prints the snapshot's name.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT", help="default: the mount of .")
    c.add_argument(
        "--wait-for-uploads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until this mount's queue is on the share first (default on)",
    )
    c.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="give up (no snapshot made) when uploads take longer (default 3600)",
    )
    c.add_argument("--keep", type=_count, metavar="N", help="keep the newest N of ours")
    c.add_argument(
        "--keep-daily", type=_count, metavar="N", help="keep the newest of each of N days"
    )
    c.add_argument(
        "--keep-hourly", type=_count, metavar="N", help="keep the newest of each of N hours"
    )
    c.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    c.add_argument("--json", action="store_true", help="a JSON answer on stdout")
    c.set_defaults(func=run_create)

    ls = verbs.add_parser("list", help="list the share's snapshots, oldest first")
    ls.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT", help="default: the mount of .")
    ls.add_argument("--json", action="store_true", help="a JSON list on stdout")
    ls.set_defaults(func=run_list)

    d = verbs.add_parser(
        "delete",
        help="delete one snapshot",
        description="Delete a share snapshot by name (@GMT-...) or id. Snapshots fsync-fuse "
        "did not make (Azure Backup's, a person's) need --force.",
    )
    d.add_argument("name", metavar="NAME")
    d.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT", help="default: the mount of .")
    d.add_argument("--force", action="store_true", help="also a snapshot fsync-fuse did not make")
    d.add_argument("--json", action="store_true", help="a JSON answer on stdout")
    d.set_defaults(func=run_delete)


def _root(mountpoint: str | None) -> str:
    mnt = mount_of(mountpoint or os.getcwd())
    if mountpoint and not is_mount_root(mountpoint):
        raise CommandError(f"{mountpoint} is not the root of a fsync-fuse mount (use {mnt})")
    return mnt


def _answer(mnt: str, action: str) -> dict[str, Any]:
    ans = ask(mnt, action)
    if not ans.get("ok"):
        raise CommandError(str(ans.get("error")))
    return ans


def run_create(args: argparse.Namespace) -> int:
    try:
        mnt = _root(args.mountpoint)
        wait = None
        if args.wait_for_uploads:
            try:
                left = drain_and_wait(mnt, args.timeout, quiet=args.quiet)
            except KeyboardInterrupt:
                error("interrupted while waiting for uploads; no snapshot made")
                return 130
            if left is not None:
                return error(
                    f"uploads not done after {args.timeout:.0f}s ({pending_left(left)}); "
                    "no snapshot made"
                )
            wait = 60  # what arrived meanwhile
        ans = _answer(
            mnt,
            control.with_args(
                "snapshot.create",
                wait=wait,
                keep=args.keep,
                keep_daily=args.keep_daily,
                keep_hourly=args.keep_hourly,
            ),
        )
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        print(json.dumps({k: v for k, v in ans.items() if k != "ok"}, indent=2))
        return 0
    print(ans["name"])
    for name in ans.get("pruned") or []:
        print(f"pruned {name}", file=sys.stderr)
    if ans.get("stuck"):
        print(
            f"fsync-fuse: warning: {ans['stuck']} items the share refuses are not in the "
            "snapshot (`fsync-fuse status` lists them)",
            file=sys.stderr,
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    try:
        snaps = _answer(_root(args.mountpoint), "snapshot.list")["snapshots"]
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        print(json.dumps(snaps, indent=2))
        return 0
    if not snaps:
        print("no snapshots")
    for s in snaps:
        made = f"fsync-fuse ({s['site']})" if s.get("ours") else "other"
        print(f"{s['name']}  {s['time']}  {made}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    try:
        ans = _answer(
            _root(args.mountpoint),
            control.with_args("snapshot.delete", name=args.name, force=1 if args.force else None),
        )
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        print(json.dumps({k: v for k, v in ans.items() if k != "ok"}, indent=2))
    else:
        print(f"deleted {ans['name']}")
    return 0
