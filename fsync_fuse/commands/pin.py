"""`fsync-fuse pin PATH...` / `fsync-fuse unpin PATH...`: what stays local.

A pinned file is recalled in the background and never tiered; a pinned directory pins
everything in it and whatever is created in it later, at any depth. Pins persist across
remounts and count against the cache: pinning more than fits fails with the cache's message,
before anything is evicted. Asked through `user.fsync.do.pin` / `do.unpin` (control.py).
"""

from __future__ import annotations

import argparse
import json

from fsync_fuse import control
from fsync_fuse.commands.common import CommandError, ask, count, error, mount_of


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, action, text in (
        (
            "pin",
            control.ACTION_PIN,
            "Keep files local: a pinned file is recalled in the background and never tiered; "
            "a pinned directory pins everything in it and whatever is created in it later, at "
            "any depth. Pins persist across remounts and count against --cache-size: pinning "
            "more than fits fails (exit 1) and changes nothing.",
        ),
        (
            "unpin",
            control.ACTION_UNPIN,
            "Remove pins: the files become ordinary cached content again (tiered by the "
            "policies). A file still under a pinned directory stays pinned.",
        ),
    ):
        p = subparsers.add_parser(
            name,
            help=text.split(":")[0].lower() if name == "pin" else "remove pins",
            description=text,
            epilog=f"example: fsync-fuse {name} /mnt/share/projects/current",
        )
        p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
        p.add_argument("--json", action="store_true", help="one JSON answer per PATH")
        p.set_defaults(func=run, action=action, verb=name)


def run(args: argparse.Namespace) -> int:
    status = 0
    answers = []
    for path in args.paths:
        try:
            mount_of(path)
        except CommandError as exc:
            status = error(str(exc))
            answers.append({"path": path, "ok": False, "error": str(exc)})
            continue
        ans = ask(path, args.action)
        answers.append({"path": path, **ans})
        if not ans.get("ok"):
            status = error(f"cannot {args.verb} {path}: {ans.get('error')}")
        elif not args.json:
            n = ans.get("files", 0)
            if args.verb == "pin":
                print(
                    f"pinned {path} ({count(n, 'file')} newly pinned; recalled in the background)"
                )
            else:
                print(f"unpinned {path} ({count(n, 'file')})")
    if args.json:
        print(json.dumps(answers, indent=2))
    return status
