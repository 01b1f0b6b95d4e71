"""`fsync-fuse migrate SRC_DIR SHARE_URL[/PATH]`: copy an existing tree into the share, with
the mount's metadata conventions, in parallel, resumable and incremental.

The source is scanned (migration/source.py: what the share cannot hold is reported, or
renamed with --rename-invalid), then copied (migration/copier.py) with --threads calls in
flight; the journal (migration/journal.py, in --state or beside --cache-dir) records what
reached the share, so running the same command again copies only what is new or changed and
a killed run resumes. A summary goes to stderr, the full report to --report FILE (JSON) or,
with --json, to stdout. Exit status: 0 when everything was copied, 1 when anything failed or
was skipped, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fsync_fuse.commands.common import (
    add_credential_options,
    counter,
    duration,
    error,
    size,
    size_arg,
    warn_account_key,
)

MAX_THREADS = 64
_threads = counter(1, MAX_THREADS)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="copy an existing directory tree into the share (resumable, incremental)",
        description="Copy SRC_DIR into the share (or a directory of it: SHARE_URL/PATH) so "
        "that a mount anywhere shows it as it was: files, directories (empty ones too), "
        "symlinks, fifos and device nodes, with mode, owner, group and modification time (kept "
        "to the share's 100 ns). Nothing on the share is overwritten unless this migration put "
        "it there and the source changed since. Names the share cannot hold are reported (or "
        "renamed with --rename-invalid), never dropped silently. Run it again to copy what is "
        "new or changed since; a run that was killed resumes where it stopped.",
        epilog="example: fsync-fuse migrate /srv/files "
        "https://acct.file.core.windows.net/share/files --state /var/lib/fsync-migrate "
        "--report migrate.json",
    )
    p.add_argument("source", metavar="SRC_DIR", help="the directory to copy")
    p.add_argument(
        "share",
        metavar="SHARE_URL[/PATH]",
        help="the share (with a SAS, or credentials below), optionally a directory in it",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        default=16,
        metavar="N",
        help=f"calls in flight at once, files and 4 MiB ranges alike (1-{MAX_THREADS}, default 16)",
    )
    p.add_argument(
        "--state", metavar="DIR", help="where the journal lives (default: CACHE_DIR/migrate)"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the cache directory of the mount this share will get; the journal goes in "
        "DIR/migrate (default: the mount's default cache directory)",
    )
    p.add_argument(
        "--delete",
        action="store_true",
        help="also remove from the share what this migration copied there and the source no "
        "longer has (never anything else, nor anything changed on the share since)",
    )
    p.add_argument(
        "--rename-invalid",
        action="store_true",
        help="give names the share cannot hold a safe name (reported) instead of skipping them",
    )
    p.add_argument(
        "--owner",
        metavar="UID:GID",
        help="the user a mount will run as: entries owned by it with default modes carry no "
        "POSIX metadata, as the mount stores them (default: the user running migrate)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="after the first pass, keep following the source (inotify) and copy changes "
        "within seconds, until Ctrl-C or SIGTERM; with --delete, removals and renames too",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="after copying, compare every copied file's size and Content-MD5 (set when it "
        "was copied) on the share with the source's, read again; differences are reported",
    )
    p.add_argument(
        "--cutover",
        action="store_true",
        help="after this (last) pass, make the source the mount's cache: the mount's cache "
        "directory (--cache-dir, or the default) is filled from the source, so a mount of the "
        "share on it serves every copied file with no download. Stop the users first; the "
        "cache directory must not be mounted",
    )
    p.add_argument(
        "--cache-size",
        type=size_arg,
        default=10 << 30,
        metavar="SIZE",
        help="with --cutover: the cache's bound, as the mount will have it (default 10G); "
        "files that do not fit are left to be fetched on demand",
    )
    p.add_argument("--report", metavar="FILE", help="write the full report (JSON) to FILE")
    p.add_argument("--json", action="store_true", help="print the report (JSON) on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    add_credential_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from fsync_fuse.commands.progress import Progress
    from fsync_fuse.config import cache_dir_for
    from fsync_fuse.migration.run import Failed, Job, migrate
    from remote.credentials import ConfigError, parse_share_url, split_share_path

    src = os.path.abspath(args.source)
    if not os.path.isdir(src):
        return _bad(f"{args.source}: not a directory")
    try:
        share_url, below = split_share_path(args.share)
        loc = parse_share_url(share_url)
        owner = _owner(args.owner)
    except (ConfigError, ValueError) as exc:
        return _bad(str(exc))
    quiet = args.quiet or args.json
    cache_dir = cache_dir_for(loc.account_url, loc.share, args.cache_dir)
    job = Job(
        src=src,
        share_url=share_url,
        below=below,
        state=Path(args.state) if args.state else cache_dir / "migrate",
        owner=owner,
        threads=args.threads,
        delete=args.delete,
        rename_invalid=args.rename_invalid,
        watch=args.watch,
        verify=args.verify,
        cutover_cache=cache_dir if args.cutover else None,
        cache_size=args.cache_size,
        account_key=warn_account_key(args),
        account_key_file=args.account_key_file,
        connection_string=args.connection_string,
        progress=lambda files, nbytes: Progress(files, nbytes, quiet=quiet, label="migrate"),
        say=(lambda line: None) if quiet else lambda line: print(line, file=sys.stderr, flush=True),
    )
    try:
        report = trio.run(migrate, job)
    except Failed as exc:
        return _bad(str(exc))
    except KeyboardInterrupt:
        print("fsync-fuse: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    if not args.quiet:
        _summary(report)
    return 1 if report["failed"] or report["invalid"] or report["mismatched"] else 0


def _bad(message: str) -> int:
    """Bad input or a share that cannot be used: one line, exit status 2."""
    error(message)
    return 2


def _summary(r: dict[str, Any]) -> None:
    print(
        f"migrate: {r['entries']} entries in {r['source']}: "
        f"{r['copied']} copied, {r['unchanged']} unchanged"
        + (
            f", {r['resumed_finished']} found finished by an earlier run"
            if r["resumed_finished"]
            else ""
        )
        + (f", {r['deleted']} deleted" if r["deleted"] else "")
        + (f", {r['verified']} verified" if r["verified"] is not None else "")
        + f"; {size(r['bytes_sent'])} sent in {duration(r['seconds'])}",
        file=sys.stderr,
    )
    for key, what in (
        ("renamed", "renamed (the share cannot hold their names)"),
        ("hardlinks", "hard links copied as separate files"),
        ("invalid", "skipped: the share cannot hold them"),
        ("failed", "failed"),
        ("kept_on_share", "not deleted from the share"),
        ("mismatched", "differ from the source (--verify)"),
    ):
        items = r[key]
        if not items:
            continue
        print(f"  {len(items)} {what}:", file=sys.stderr)
        for it in items[:10]:
            detail = it.get("reason") or f"same file as {it.get('same_as')}"
            extra = f" -> {it['share_path']}" if "share_path" in it else ""
            print(f"    {it['path']}{extra}: {detail}", file=sys.stderr)
        if len(items) > 10:
            print(f"    ... and {len(items) - 10} more (see --report)", file=sys.stderr)


def _owner(text: str | None) -> tuple[int, int]:
    if text is None:
        return os.geteuid(), os.getegid()
    uid, sep, gid = text.partition(":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        raise ValueError(f"--owner {text!r}: expected UID:GID (numbers)")
    return int(uid), int(gid)
