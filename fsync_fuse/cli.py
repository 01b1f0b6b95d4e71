"""The `fsync-fuse` command line: one subcommand per job, each defined in its own module.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. A command module imports only what parsing needs at the top and the
rest inside `func`, so `--help` stays fast. To add a command: a module under `commands/`
(talking to the daemon through `fsync_fuse.control`), and its name in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: modules whose `register(subparsers)` adds a command, in --help order. A module that cannot
#: be imported is a bug: it fails loudly (no command may silently disappear).
COMMANDS: list[str] = [
    "fsync_fuse.commands.mount",
    "fsync_fuse.commands.unmount",
    "fsync_fuse.commands.sync_now",
    "remote.emulator.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsync-fuse",
        description=(
            "Mount an Azure file share as a local directory with a bounded local cache: the whole "
            "namespace is visible, content is fetched on demand, and writes go back to the share "
            "asynchronously."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in COMMANDS:
        importlib.import_module(modname).register(sub)
    return parser


def setup_logging(debug: bool, logfile: str | None = None) -> None:
    """One log format for every command; `--debug` turns on our own verbose messages only."""
    handler: logging.Handler
    handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    level = logging.DEBUG if debug else logging.INFO
    for name in ("fsync_fuse", "cache", "remote"):
        logging.getLogger(name).setLevel(level)
    # The SDK logs every request and header at INFO; keep it quiet unless asked.
    logging.getLogger("azure").setLevel(logging.DEBUG if debug else logging.WARNING)


def fstab_style(argv: list[str]) -> list[str]:
    """`mount -t fuse.fsync-fuse SHARE DIR -o OPTS` (and fstab) makes mount.fuse3 run
    `fsync-fuse SHARE DIR -o OPTS`: that is our `mount` command."""
    if len(argv) >= 2 and "://" in argv[0] and not argv[0].startswith("-"):
        return ["mount", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = fstab_style(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not getattr(args, "manages_logging", False):
        setup_logging(args.debug)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
