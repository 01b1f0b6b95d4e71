"""`fsync-fuse versions PATH`: a file's distinct versions across the share's snapshots."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from fsync_fuse import control
from fsync_fuse.commands.common import CommandError, ask, error, mount_of, size


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "versions",
        help="list a file's versions in the share's snapshots",
        description="List the distinct versions of a file across the share's snapshots, oldest "
        "first: size, last-write time and the snapshots holding each (snapshots that hold the "
        "same version, by ETag, are one line; nothing is downloaded). Bring one back with "
        "`fsync-fuse restore PATH --from SNAPSHOT`.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="a JSON answer on stdout")
    p.set_defaults(func=run)


def _when(ns: int | None) -> str:
    if not ns:
        return "?"
    t = datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def run(args: argparse.Namespace) -> int:
    try:
        mount_of(args.path)
        ans: dict[str, Any] = ask(args.path, control.ACTION_VERSIONS)
        if not ans.get("ok"):
            raise CommandError(f"{args.path}: {ans.get('error')}")
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        print(json.dumps({k: v for k, v in ans.items() if k != "ok"}, indent=2))
        return 0
    versions = ans["versions"]
    if not versions:
        print(f"{args.path}: in no snapshot")
    for i, v in enumerate(versions, 1):
        snaps = v["snapshots"]
        where = snaps[0] if len(snaps) == 1 else f"{snaps[0]} .. {snaps[-1]} ({len(snaps)})"
        print(f"{i}. {size(v['size']):>10}  written {_when(v['mtime_ns'])}  in {where}")
    cur = ans.get("current")
    if cur is not None:
        same = f" (as in {cur['same_as']})" if cur.get("same_as") else ""
        print(f"now {size(cur['size']):>10}  written {_when(cur['mtime_ns'])}{same}")
    return 0
