"""`fsync-fuse restore PATH --from SNAPSHOT [--to DEST]`: put a snapshot's version of a file
or tree back, through the mount.

In place, each regular file is first restored on the share side: the mount copies it from
the snapshot's URL to a hidden name on the share and renames it over the file (no byte passes
through this machine), then lists the directory again so it shows the restored version at
once (`user.fsync.do.restore` on the file under .snapshots/, snapadmin.py). Where that cannot
be done (queued changes or local edits in the way, `--to`, symbolic links, a credential the
share refuses the copy to) the file is copied through the mount: read from
MOUNT/.snapshots/NAME/PATH, written under a temporary name in its directory and renamed over
the target, so a reader never sees half a file. A target with local edits not yet on the
share is first renamed to a conflict copy (`NAME-SITE.EXT`, as multi-site conflicts are):
nothing is lost. Files present now but not in the snapshot are left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
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
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "restore",
        help="bring a file or directory back from a share snapshot",
        description="Restore PATH (a file or a directory tree on a fsync-fuse mount, present "
        "or deleted) as it was in SNAPSHOT, in place or under DEST. Local edits not yet on "
        "the share are kept as a conflict copy beside the restored file; files that exist "
        "now but not in the snapshot are left alone.",
        epilog="example: fsync-fuse restore /mnt/share/reports --from @GMT-2026.12.06-13.45.00",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--from",
        dest="snapshot",
        required=True,
        metavar="SNAPSHOT",
        help="its name (@GMT-..., see `fsync-fuse snapshot list`) or id",
    )
    p.add_argument("--to", dest="dest", metavar="DEST", help="restore there instead of in place")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="a JSON summary on stdout")
    p.set_defaults(func=run)


def _existing_ancestor(path: str) -> str:
    cur = os.path.abspath(path)
    while not os.path.lexists(cur):
        cur = os.path.dirname(cur)
    return cur


def locate(path: str, snapshot: str) -> tuple[str, str, str]:
    """(mountpoint, the snapshot's copy of `path`, this site's name)."""
    mnt = mount_of(_existing_ancestor(path))
    rel = os.path.relpath(os.path.abspath(path), mnt)
    if rel.startswith(".."):
        raise CommandError(f"{path} is not on the mount {mnt}")
    ans = ask(mnt, "snapshot.list")
    if not ans.get("ok"):
        raise CommandError(str(ans.get("error")))
    if not ans.get("dir"):
        raise CommandError(f"{mnt} shows no snapshots (mounted with --no-snapshot-dir)")
    by = {s["name"]: s for s in ans["snapshots"]} | {s["id"]: s for s in ans["snapshots"]}
    if snapshot not in by:
        raise CommandError(
            f"no snapshot {snapshot!r} on the share (`fsync-fuse snapshot list` shows them)"
        )
    src = os.path.join(mnt, ans["dir"], by[snapshot]["name"], rel if rel != "." else "")
    if not os.path.lexists(src):
        raise CommandError(f"{rel} is not in snapshot {by[snapshot]['name']}")
    return mnt, src.rstrip("/"), str(ans.get("site") or "site")


class Restorer:
    def __init__(self, site: str, quiet: bool, in_place: bool) -> None:
        self.site, self.quiet, self.in_place = site, quiet, in_place
        self.files = self.bytes = 0
        self.share_side = 0  # files copied on the share side (no byte through here)
        self.kept: list[str] = []  # conflict copies of local edits

    def plan(self, src: str) -> tuple[int, int]:
        if not os.path.isdir(src) or os.path.islink(src):
            return 1, os.lstat(src).st_size
        files = nbytes = 0
        for dirpath, _dirs, names in os.walk(src):
            for n in names:
                files += 1
                nbytes += os.lstat(os.path.join(dirpath, n)).st_size
        return files, nbytes

    def tree(self, src: str, dest: str, progress: Any) -> None:
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode):
            self.entry(src, dest, progress)
            return
        os.makedirs(dest, exist_ok=True)
        for name in sorted(os.listdir(src)):
            self.tree(os.path.join(src, name), os.path.join(dest, name), progress)
        shutil.copystat(src, dest, follow_symlinks=False)

    def entry(self, src: str, dest: str, progress: Any) -> None:
        st = os.lstat(src)
        if (
            self.in_place
            and stat.S_ISREG(st.st_mode)
            and ask(src, control.ACTION_RESTORE).get("ok")
        ):
            self.files += 1
            self.share_side += 1
            self.bytes += st.st_size
            progress.advance(st.st_size)
            return
        if os.path.lexists(dest) and not os.path.isdir(dest):
            self._keep_local_edits(dest)
        tmp = os.path.join(os.path.dirname(dest), f".fsync-restore-{os.getpid()}")
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), tmp)
        else:
            shutil.copyfile(src, tmp)
            shutil.copystat(src, tmp)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, dest)
        self.files += 1
        self.bytes += st.st_size
        progress.advance(st.st_size)

    def _keep_local_edits(self, dest: str) -> None:
        """A file with edits not on the share yet moves aside to a conflict copy."""
        if os.path.islink(dest) or not info(dest).get("dirty"):
            return
        from fsync_fuse.names import conflict_name

        parent, name = os.path.split(dest)
        for n in range(1000):
            cand = os.path.join(parent, conflict_name(name, self.site, n))
            if not os.path.lexists(cand):
                os.rename(dest, cand)
                self.kept.append(cand)
                print(f"local edits of {dest} kept as {cand}", file=sys.stderr)
                return
        raise CommandError(f"no free name to keep the local edits of {dest}")


def run(args: argparse.Namespace) -> int:
    from fsync_fuse.commands.recall import Progress

    try:
        _mnt, src, site = locate(args.path, args.snapshot)
        dest = os.path.abspath(args.dest or args.path)
        mount_of(_existing_ancestor(dest))
        r = Restorer(site, args.quiet, in_place=args.dest is None)
        files, nbytes = r.plan(src)
        progress = Progress(files, nbytes, quiet=args.quiet or files < 2, label="restore")
        try:
            r.tree(src, dest, progress)
        except KeyboardInterrupt:
            progress.close()
            error(f"interrupted after {count(r.files, 'file')}; run it again to finish")
            return 130
        except OSError as exc:
            raise CommandError(f"{exc.filename or dest}: {exc.strerror or exc}") from None
        progress.close()
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        out = {
            "files": r.files,
            "bytes": r.bytes,
            "share_side": r.share_side,
            "to": dest,
            "kept_local_edits": r.kept,
        }
        print(json.dumps(out, indent=2))
    else:
        side = f", {r.share_side} on the share side" if r.share_side else ""
        print(f"restored {count(r.files, 'file')} ({size(r.bytes)}{side}) to {dest}")
    return 0
