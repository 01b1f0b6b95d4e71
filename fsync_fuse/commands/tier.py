"""`fsync-fuse tier PATH... [--dry-run]`: give the cache's room back now.

Every file at or below the paths that has clean cached content loses it (it stays in the
namespace and is fetched again on demand); dirty files (not on the share yet) and pinned
files are skipped and counted. `--dry-run` lists what would go and changes nothing. Asked
file by file through `user.fsync.do.tier` (control.py).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fsync_fuse import control
from fsync_fuse.commands.common import (
    CommandError,
    ask,
    count,
    error,
    info,
    mount_of,
    size,
    walk,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "tier",
        help="evict the clean cached content of files now",
        description="Tier files now: their clean cached content is evicted (they stay "
        "visible and are fetched again when read). Dirty files (not on the share yet) and "
        "pinned files are skipped and counted.",
        epilog="example: fsync-fuse tier --dry-run /mnt/share/archive",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    p.add_argument("--pattern", metavar="GLOB", help="only files whose name matches")
    p.add_argument(
        "-n", "--dry-run", action="store_true", help="list what would be tiered, change nothing"
    )
    p.add_argument("--json", action="store_true", help="a JSON summary on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = freed = 0
    skipped = {"dirty": 0, "pinned": 0}
    listed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        for path in args.paths:
            mount_of(path)
        for f in walk(args.paths, args.pattern):
            i = info(f.path)
            cached = int(i.get("cached") or 0)
            if i.get("pinned"):
                skipped["pinned"] += 1
                continue
            if i.get("dirty") or i.get("state") == "dirty":
                skipped["dirty"] += 1
                continue
            if cached == 0:
                continue
            if args.dry_run:
                files += 1
                freed += cached
                listed.append({"path": f.path, "cached": cached})
                if not args.json:
                    print(f"would tier {f.path} ({size(cached)})")
                continue
            ans = ask(f.path, control.ACTION_TIER)
            if not ans.get("ok"):
                failed.append({"path": f.path, "error": ans.get("error")})
                error(f"cannot tier {f.path}: {ans.get('error')}")
            elif ans.get("skipped") in skipped:
                skipped[str(ans["skipped"])] += 1
            else:
                files += 1
                freed += int(ans.get("freed") or 0)
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        out: dict[str, Any] = {"files": files, "freed": freed, "skipped": skipped}
        out["dry_run"] = args.dry_run
        if args.dry_run:
            out["would"] = listed
        out["failed"] = failed
        print(json.dumps(out, indent=2))
    else:
        verb = "would tier" if args.dry_run else "tiered"
        print(
            f"{verb} {count(files, 'file')}, {'would free' if args.dry_run else 'freed'} "
            f"{size(freed)}; "
            f"skipped {skipped['dirty']} dirty and {skipped['pinned']} pinned"
        )
    return 1 if failed else 0
