"""`fsync-fuse mount SHARE MOUNTPOINT`: mount an Azure file share with a local cache."""

from __future__ import annotations

import argparse
import fcntl
import logging
import math
import os
import socket
import sys

from fsync_fuse.background import Ready
from fsync_fuse.commands import tiering
from fsync_fuse.commands.common import add_credential_options, size_arg, warn_account_key
from fsync_fuse.config import (
    MountConfig,
    cache_dir_for,
    inside,
    options_to_args,
    parse_size,
    share_id,
)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "mount",
        help="mount a share on a local directory",
        description=(
            "Mount an Azure file share. The whole namespace is visible at once; content is "
            "fetched on demand into a cache bounded by --cache-size, and writes are uploaded "
            "in the background. Returns once the mount is ready unless --foreground."
        ),
        epilog=(
            "Credentials, first match wins: a SAS in the URL, --account-key / "
            "--account-key-file / AZURE_STORAGE_KEY, --connection-string / "
            "AZURE_STORAGE_CONNECTION_STRING, the emulator's development key for "
            "devstoreaccount1, then azure-identity's DefaultAzureCredential."
        ),
    )
    p.add_argument(
        "share",
        metavar="SHARE",
        help="https://ACCOUNT.file.core.windows.net/SHARE[?SAS] or, on the emulator, "
        "http://127.0.0.1:10000/devstoreaccount1/SHARE",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory")
    p.add_argument(
        "--cache-size",
        type=size_arg,
        default=parse_size("10G"),
        metavar="SIZE",
        help="bound of everything in the cache directory as du counts it: cached data, the "
        "index, directories and log, e.g. 512M, 10G, 1T (default 10G; at least about 4.7M)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="default $XDG_CACHE_HOME/fsync-fuse/<share-id>/"
    )
    p.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="stay in the foreground, log to stderr; Ctrl-C drains and unmounts",
    )
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users access the mount (needs user_allow_other in "
        "/etc/fuse.conf unless root)",
    )
    p.add_argument(
        "--writeback-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="upload a file once it has been quiet this long (default 5)",
    )
    p.add_argument(
        "--read-ahead",
        type=size_arg,
        default=parse_size("64M"),
        metavar="SIZE",
        help="largest read-ahead window of a sequential reader (default 64M)",
    )
    p.add_argument(
        "--list-ahead",
        type=int,
        default=4,
        metavar="N",
        help="a tree walk (find, du, rsync) opening directories never listed gets the next N "
        "sibling directories listed in the background, one share call each (default 4; 0: off)",
    )
    p.add_argument(
        "--attr-timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="close-to-open: opening a file checks it against the share when it was last "
        "checked longer ago than this; a lookup of a name not in a listing this old asks the "
        "share again (and the kernel remembers a name found missing until then) (default 1)",
    )
    p.add_argument(
        "--dir-cache-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long ls and stat are answered from a listing (and the kernel's cache) "
        "before the share is listed again; changes this mount learns of reach the kernel at "
        "once (default: --poll-interval, or --attr-timeout when polling is off)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often to look for changes other sites made: recently used directories "
        "every interval, the rest in a slower sweep (default 30; 0 = never)",
    )
    p.add_argument(
        "--site-name",
        metavar="NAME",
        default=None,
        help="this site's name in conflict copies, <name>-<site>.<ext> (default: the hostname)",
    )
    p.add_argument(
        "--snapshot-dir",
        metavar="NAME",
        default=".snapshots",
        help="the read-only directory in the mount root that holds the share's snapshots, one "
        "directory per snapshot named @GMT-YYYY.MM.DD-HH.MM.SS; not listed in the root (find, "
        "du and backups do not walk into it) but reachable by name (default .snapshots)",
    )
    p.add_argument(
        "--no-snapshot-dir",
        action="store_true",
        help="do not show the share's snapshots in the mount",
    )
    p.add_argument(
        "--upload-leases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lease a file on the share from the conflict check to the end of its upload, so "
        "no other site writes it in between (default on; two more calls per upload of a file "
        "already on the share; new files need none)",
    )
    p.add_argument(
        "--fsync",
        choices=("local", "remote"),
        default="local",
        help="local: fsync makes data durable in the cache (default); remote: "
        "fsync returns once the file is on the share",
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        help="log file (default: stderr in the foreground, CACHE_DIR/fsync-fuse.log otherwise; "
        "a log in the cache directory rotates at 1/64 of --cache-size, 64K to 4M, keeping one "
        "older file)",
    )
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="verbose logging"
    )
    add_credential_options(p)
    p.add_argument(
        "--block-size",
        type=size_arg,
        default=parse_size("1M"),
        metavar="SIZE",
        help="cache block size, a power of two (default 1M)",
    )
    p.add_argument(
        "--io-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for the share in a read or fsync before EIO (default 60)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="at unmount, how long to keep uploading before leaving the rest "
        "queued for the next mount (default 30)",
    )
    p.add_argument(
        "--remote-retries",
        type=int,
        default=None,
        metavar="N",
        help="retries of one share request before it counts as failed (default 4)",
    )
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTS",
        help="mount(8)-style options, e.g. -o cache_size=10G,allow_other",
    )
    tiering.add_options(p)
    p.set_defaults(func=run, manages_logging=True, _parser=p)


def build_config(args: argparse.Namespace) -> MountConfig:
    from remote.credentials import ConfigError, parse_share_url

    try:
        loc = parse_share_url(args.share)
    except ConfigError as exc:
        raise SystemExit(f"fsync-fuse: error: {exc}") from None
    sid = share_id(loc.account_url, loc.share)
    cache_dir = cache_dir_for(loc.account_url, loc.share, args.cache_dir)
    creds = {}
    if warn_account_key(args):
        creds["account_key"] = args.account_key
    if args.account_key_file:
        creds["key_file"] = args.account_key_file
    if args.connection_string:
        creds["connection_string"] = args.connection_string
    if args.remote_retries is not None:
        from remote.azure import AzureOptions

        creds["options"] = AzureOptions(retry_total=max(0, args.remote_retries))

    return MountConfig(
        url=args.share,
        mountpoint=os.path.abspath(args.mountpoint),
        cache_dir=cache_dir,
        share_id=sid,
        share_url=loc.share_url,
        cache_size=args.cache_size,
        block_size=args.block_size,
        writeback_delay=args.writeback_delay,
        read_ahead=args.read_ahead,
        list_ahead=args.list_ahead,
        attr_timeout=args.attr_timeout,
        fsync_remote=args.fsync == "remote",
        allow_other=args.allow_other,
        foreground=args.foreground,
        log_file=args.log,
        debug=getattr(args, "debug", False),
        io_timeout=args.io_timeout,
        exit_drain_timeout=args.drain_timeout,
        poll_interval=args.poll_interval,
        dir_cache_time=args.dir_cache_time,
        upload_leases=args.upload_leases,
        site_name=args.site_name or socket.gethostname().split(".")[0] or "site",
        creds=creds,
        policies=tiering.given_policies(args),
        initial_download=args.initial_download,
        metrics=tiering.metrics_address(args.metrics),
        snapshot_dir=None if args.no_snapshot_dir else args.snapshot_dir,
    )


#: the largest write the kernel sends in one request (max_pages: 1 MiB); the cache must be
#: able to hold one, in blocks, or every such write would wait and fail
KERNEL_MAX_WRITE = 1 << 20


class BadInput(Exception):
    """An option or path the mount cannot work with; the message is one line."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def run(args: argparse.Namespace) -> int:
    if args.options:
        extra = []
        for opts in args.options:
            extra += options_to_args(opts)
        args.options = []
        args._parser.parse_args([*extra, args.share, args.mountpoint], namespace=args)
    try:
        check_values(args)
        cfg = build_config(args)
        check_cache_size(cfg)
        check_paths(cfg)
    except BadInput as exc:
        print(f"fsync-fuse: error: {exc}", file=sys.stderr)
        return exc.status
    from fsync_fuse.cli import setup_logging

    if cfg.foreground:
        setup_logging(cfg.debug, cfg.log_path, max_bytes=cfg.log_max_bytes)
        return _run_mount(cfg, lambda error: None)

    logfile = cfg.log_path
    assert logfile is not None
    from fsync_fuse.background import daemonize

    def child(ready: Ready) -> int:
        setup_logging(cfg.debug, logfile, max_bytes=cfg.log_max_bytes)
        return _run_mount(cfg, ready)

    return daemonize(logfile, child)


def check_values(args: argparse.Namespace) -> None:
    """Option values the mount cannot work with (BadInput, status 2)."""
    seconds = (
        ("--writeback-delay", args.writeback_delay, False),
        ("--attr-timeout", args.attr_timeout, False),
        ("--dir-cache-time", args.dir_cache_time, False),
        ("--poll-interval", args.poll_interval, False),
        ("--drain-timeout", args.drain_timeout, False),
        ("--io-timeout", args.io_timeout, True),
    )
    for flag, value, positive in seconds:
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            need = "more than 0" if positive else "0 or more"
            raise BadInput(f"{flag} {value:g}: must be a number of seconds, {need}")
    for flag, count in (
        ("--remote-retries", args.remote_retries),
        ("--list-ahead", args.list_ahead),
    ):
        if count is not None and count < 0:
            raise BadInput(f"{flag} {count}: must be 0 or more")
    try:
        tiering.metrics_address(args.metrics)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    from cache import human_size

    bs = args.block_size
    if bs & (bs - 1) or not 4096 <= bs <= 4 << 20:
        raise BadInput(f"--block-size {human_size(bs)}: must be a power of two from 4K to 4M")
    if not args.no_snapshot_dir:
        from fsync_fuse.names import why_invalid

        why = why_invalid(args.snapshot_dir)
        if why is None and "/" in args.snapshot_dir:
            why = "contains a /"
        if why:
            raise BadInput(f"--snapshot-dir {args.snapshot_dir!r}: {why}")
    if args.site_name is not None:
        from fsync_fuse.names import why_invalid

        name = args.site_name
        why = why_invalid(name)
        if why is None and "." in name:
            why = "contains a dot (conflict copies are named NAME-SITE.EXT)"
        if why is None and len(name.encode()) > 63:
            why = "is longer than 63 bytes"
        if why:
            raise BadInput(f"--site-name {name!r}: {why}")


def check_cache_size(cfg: MountConfig) -> None:
    """--cache-size must hold MIN_BLOCKS blocks and a kernel write in blocks, plus the cache
    directory's index, directories and log (measured when the directory exists)."""
    from cache import human_size, minimum_size
    from cache.datafile import metadata_allowance
    from cache.footprint import MIN_BLOCKS

    bs = cfg.block_size
    blocks = KERNEL_MAX_WRITE // bs + 1  # an unaligned write touches one more
    data = max(MIN_BLOCKS * bs, blocks * bs + metadata_allowance(blocks))
    # a log in the cache directory counts as its reserve: a longer one (an older version's)
    # is cut to size when logging starts
    log = cfg.log_path if cfg.log_max_bytes else None
    ignore: list[str] = []
    if log and os.path.dirname(os.path.realpath(log)) == os.path.realpath(cfg.cache_dir):
        ignore = [os.path.basename(log), os.path.basename(log) + ".1"]
    need = minimum_size(cfg.cache_dir, bs, other_reserve=cfg.log_reserve, data=data, ignore=ignore)
    if cfg.cache_size < need:
        raise BadInput(
            f"--cache-size {human_size(cfg.cache_size)} is too small: it must be at least "
            f"{human_size(need)} here ({human_size(data)} for data, to hold a 1M write in "
            f"blocks of {human_size(bs)}; the rest for the cache directory's index, "
            "directories and log)"
        )


def check_paths(cfg: MountConfig) -> None:
    """The mountpoint, cache directory and log file, before going to the background
    (BadInput, status 1): a problem is one line here, not a traceback or a daemon's note."""
    from fsync_fuse.daemon import MountError, check_mountpoint

    try:
        check_mountpoint(cfg.mountpoint)
    except MountError as exc:
        raise BadInput(str(exc), 1) from None
    cdir = cfg.cache_dir
    if inside(cdir, cfg.mountpoint):
        raise BadInput(f"cache directory {cdir} is inside the mountpoint {cfg.mountpoint}", 1)
    if inside(cfg.mountpoint, cdir):
        raise BadInput(f"mountpoint {cfg.mountpoint} is inside the cache directory {cdir}", 1)
    if os.path.lexists(cdir) and not os.path.isdir(cdir):
        raise BadInput(f"cache directory {cdir} is not a directory", 1)
    try:
        cdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cache directory {cdir}: cannot create it: {_reason(exc)}", 1) from None
    try:
        fd = os.open(cdir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BadInput(
            f"cache directory {cdir}: cannot create files in it: {_reason(exc)}", 1
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BadInput(
            f"cache directory {cdir} is in use by another fsync-fuse mount "
            "(give this mount its own --cache-dir)",
            1,
        ) from None
    except OSError:
        pass  # a filesystem without locks: the daemon reports it
    finally:
        os.close(fd)
    log = cfg.log_path
    if log is not None:
        try:
            os.close(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise BadInput(f"log file {log}: cannot write it: {_reason(exc)}", 1) from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _run_mount(cfg: MountConfig, ready: Ready) -> int:
    import trio

    from fsync_fuse.daemon import MountError, serve

    try:
        return trio.run(serve, cfg, ready)
    except MountError as exc:
        if cfg.foreground and cfg.log_path is None:
            print(f"fsync-fuse: error: {exc}", file=sys.stderr)  # the log is stderr
        else:
            log.error("%s", exc)
            if cfg.foreground:
                print(f"fsync-fuse: error: {exc}", file=sys.stderr)
        ready(str(exc))
        return 1
