"""`fsync-fuse mount SHARE MOUNTPOINT`: mount an Azure file share with a local cache."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from fsync_fuse.background import Ready
from fsync_fuse.config import (
    MountConfig,
    default_cache_dir,
    options_to_args,
    parse_size,
    share_id,
)

log = logging.getLogger(__name__)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        type=_size,
        default=parse_size("10G"),
        metavar="SIZE",
        help="bound of the local cache, e.g. 512M, 10G, 1T (default 10G)",
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
        type=_size,
        default=parse_size("64M"),
        metavar="SIZE",
        help="largest read-ahead window of a sequential reader (default 64M)",
    )
    p.add_argument(
        "--attr-timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="close-to-open: opening a file checks it against the share when it was last "
        "checked longer ago than this; a lookup of a name not in a listing this old asks the "
        "share again (default 1)",
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
        help="log file (default: stderr in the foreground, CACHE_DIR/fsync-fuse.log otherwise)",
    )
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="verbose logging"
    )
    p.add_argument(
        "--account-key",
        metavar="KEY",
        help="storage account key (visible in `ps`: prefer AZURE_STORAGE_KEY or "
        "--account-key-file)",
    )
    p.add_argument("--account-key-file", metavar="FILE", help="file holding the account key")
    p.add_argument(
        "--connection-string",
        metavar="CS",
        help="storage connection string (prefer AZURE_STORAGE_CONNECTION_STRING)",
    )
    p.add_argument(
        "--block-size",
        type=_size,
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
    p.set_defaults(func=run, manages_logging=True, _parser=p)


def build_config(args: argparse.Namespace) -> MountConfig:
    from remote.credentials import ConfigError, parse_share_url

    try:
        loc = parse_share_url(args.share)
    except ConfigError as exc:
        raise SystemExit(f"fsync-fuse: error: {exc}") from None
    sid = share_id(loc.account_url, loc.share)
    cache_dir = os.path.abspath(args.cache_dir) if args.cache_dir else str(default_cache_dir(sid))
    creds = {}
    if args.account_key:
        print(
            "fsync-fuse: warning: --account-key is visible to every user in `ps` output; "
            "prefer AZURE_STORAGE_KEY or --account-key-file",
            file=sys.stderr,
        )
        creds["account_key"] = args.account_key
    if args.account_key_file:
        creds["key_file"] = args.account_key_file
    if args.connection_string:
        creds["connection_string"] = args.connection_string
    if args.remote_retries is not None:
        from remote.azure import AzureOptions

        creds["options"] = AzureOptions(retry_total=max(0, args.remote_retries))
    from pathlib import Path

    return MountConfig(
        url=args.share,
        mountpoint=os.path.abspath(args.mountpoint),
        cache_dir=Path(cache_dir),
        share_id=sid,
        share_url=loc.share_url,
        cache_size=args.cache_size,
        block_size=args.block_size,
        writeback_delay=args.writeback_delay,
        read_ahead=args.read_ahead,
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
    )


def run(args: argparse.Namespace) -> int:
    if args.options:
        extra = []
        for opts in args.options:
            extra += options_to_args(opts)
        args.options = []
        args._parser.parse_args([*extra, args.share, args.mountpoint], namespace=args)
    cfg = build_config(args)
    if cfg.block_size & (cfg.block_size - 1) or not 4096 <= cfg.block_size <= 4 << 20:
        print(
            "fsync-fuse: error: --block-size must be a power of two from 4K to 4M", file=sys.stderr
        )
        return 2
    from fsync_fuse.cli import setup_logging

    if cfg.foreground:
        setup_logging(cfg.debug, cfg.log_file)
        return _run_mount(cfg, lambda error: None)

    cfg.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    logfile = cfg.log_file or str(cfg.cache_dir / "fsync-fuse.log")
    from fsync_fuse.background import daemonize

    def child(ready: Ready) -> int:
        setup_logging(cfg.debug, logfile)
        return _run_mount(cfg, ready)

    return daemonize(logfile, child)


def _run_mount(cfg: MountConfig, ready: Ready) -> int:
    import trio

    from fsync_fuse.daemon import MountError, serve

    try:
        return trio.run(serve, cfg, ready)
    except MountError as exc:
        log.error("%s", exc)
        if cfg.foreground and cfg.log_file:
            print(f"fsync-fuse: error: {exc}", file=sys.stderr)
        ready(str(exc))
        return 1
