"""`fsync-fuse sync-now MOUNTPOINT`: look for changes on the share now, not at the next poll.

The daemon re-lists every directory it has a listing of when asked (control.request_sync);
the request returns when that pass is done, so changes made elsewhere before this command
are visible when it returns.
"""

from __future__ import annotations

import argparse
import os
import sys

from fsync_fuse import control


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sync-now",
        help="re-list the share now so changes made elsewhere show at once",
        description="Force a full change-detection pass on a mounted share and wait for it.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if not os.path.ismount(mnt):
        print(f"fsync-fuse: error: {mnt} is not mounted", file=sys.stderr)
        return 1
    try:
        control.request_sync(mnt)
    except OSError as exc:
        print(f"fsync-fuse: error: sync-now on {mnt}: {exc.strerror}", file=sys.stderr)
        return 1
    if not args.quiet:
        st = control.read_status(mnt)
        if st is not None:
            print(
                f"synced {mnt}: {st.get('ops', 0)} operations and {st.get('files', 0)} files "
                f"waiting to upload, {st.get('conflicts', 0)} conflicts so far",
                file=sys.stderr,
            )
        else:
            print(f"synced {mnt}", file=sys.stderr)
    return 0
