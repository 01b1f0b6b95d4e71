"""`fsync-fuse emulator` / `python -m remote.emulator`: run the Azure Files emulator."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .defaults import DEFAULT_ACCOUNT, DEFAULT_KEY

if TYPE_CHECKING:
    import trio

    from .app import Emulator

log = logging.getLogger("remote.emulator")

DESCRIPTION = """\
Run a local Azure Files-compatible server (the File REST API as the official SDKs and rclone's
azurefiles backend use it: shares, snapshots, directories, files, ranges, leases, rename, copy,
SharedKey and SAS authentication). Data is kept under --data and survives restarts.

URLs are path-style: http://HOST:PORT/ACCOUNT/SHARE/dir/file. Connection string for the SDK:

  DefaultEndpointsProtocol=http;AccountName=ACCOUNT;AccountKey=KEY;
  FileEndpoint=http://HOST:PORT/ACCOUNT;

Admin endpoint (no auth): GET|PUT|DELETE /_admin/faults (JSON: latency_ms, error_rate,
error_status 500|503, drop_rate, outage_seconds), GET|DELETE /_admin/stats.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=10000, help="TCP port (default 10000)")
    p.add_argument(
        "--data", required=True, type=Path, help="directory for the database and file content"
    )
    p.add_argument(
        "--account", default=DEFAULT_ACCOUNT, help=f"account name (default {DEFAULT_ACCOUNT})"
    )
    p.add_argument(
        "--key", default=DEFAULT_KEY, help="base64 account key (default: the well-known dev key)"
    )
    p.add_argument(
        "--full-md5",
        action="store_true",
        help="answer every Put Range with its Content-MD5 as the service does (by default only "
        "bodies under 256 KiB or with a client Content-MD5 get one: MD5 would cap uploads)",
    )
    p.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help='initial fault injection, e.g. \'{"latency_ms": 20, "error_rate": 0.05}\'',
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `fsync-fuse emulator` (called by fsync_fuse.cli for each command module)."""
    p = subparsers.add_parser(
        "emulator",
        help="run the local Azure Files emulator",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio  # (the app and trio only when the command runs: `fsync-fuse --help` stays fast)

    from .app import Emulator

    args.data.mkdir(parents=True, exist_ok=True)
    try:
        app = Emulator(args.data, account=args.account, key=args.key, full_md5=args.full_md5)
    except ValueError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    if args.faults:
        try:
            app.faults.update(json.loads(args.faults))
        except (ValueError, TypeError) as exc:
            print(f"emulator: bad --faults: {exc}", file=sys.stderr)
            return 2
    try:
        trio.run(_main, app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0


async def _main(app: Emulator, host: str, port: int) -> None:
    import trio

    from .server import serve

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        await nursery.start(serve, app, host, port)
        log.info(
            "Azure Files emulator for account %s on http://%s:%d/%s",
            app.account,
            host,
            port,
            app.account,
        )


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            log.info("stopping")
            scope.cancel()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m remote.emulator",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args)
