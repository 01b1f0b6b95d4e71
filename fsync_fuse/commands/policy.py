"""`fsync-fuse set MOUNTPOINT [NAME VALUE]`: the tiering policies of a running mount.

Without NAME and VALUE it shows them; with them it changes one now. The change is kept in
the cache's index, so it outlives a remount (a mount option given explicitly wins at the
next mount). Only the user who mounted the share, and root, may change them. Asked through
`user.fsync.do.set.NAME=VALUE` (control.py); the daemon checks the value.
"""

from __future__ import annotations

import argparse
import json
import os

from fsync_fuse import control
from fsync_fuse.commands.common import CommandError, error, is_mount_root, why


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "set",
        help="show or change a mount's tiering policies at run time",
        description="Show the tiering policies of a mounted share, or change one now (kept "
        "across remounts). Policies: min_free_space PCT (keep PCT%% of the cache volume "
        "free), tier_after DURATION (tier content unused that long, e.g. 30d, 12h, 90s; off), "
        "proactive_recall on|off (fetch new versions of used files changed elsewhere).",
        epilog="examples: fsync-fuse set /mnt/share; fsync-fuse set /mnt/share tier_after 30d",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("name", nargs="?", metavar="NAME", help="a policy (see above)")
    p.add_argument("value", nargs="?", metavar="VALUE", help="its new value")
    p.add_argument("--json", action="store_true", help="the policies as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if not is_mount_root(mnt):
        return error(f"{args.mountpoint} is not the mountpoint of a fsync-fuse mount")
    if args.name is not None and args.value is None:
        return error(f"give a value for {args.name} (see `fsync-fuse set --help`)")
    try:
        if args.name is None:
            policies = control.read_json(mnt, control.XATTR_SETTINGS)
        else:
            ans = control.set_policy(mnt, args.name, args.value)
            if not ans.get("ok"):
                raise CommandError(f"cannot set {args.name}: {ans.get('error')}")
            policies = ans.get("policies") or {}
    except CommandError as exc:
        return error(str(exc))
    except OSError as exc:
        return error(why(exc, mnt))
    except ValueError:
        return error(f"{mnt}: the mount's answer is not JSON")
    if args.json:
        print(json.dumps(policies, indent=2))
    else:
        if args.name is not None:
            print(f"{args.name} set to {policies.get(args.name, args.value)}")
        for name, value in sorted(policies.items()):
            print(f"{name} = {value}")
    return 0
