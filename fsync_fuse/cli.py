"""The `fsync-fuse` command line: one subcommand per job, each defined in its own module.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. A command module imports only what parsing needs at the top and the
rest inside `func`, so `--help` stays fast. To add a command: a module under `commands/`
(talking to the daemon through `fsync_fuse.control`), and its name in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import logging.handlers
import os
import sys
from typing import NoReturn

#: modules whose `register(subparsers)` adds a command, in --help order. A module that cannot
#: be imported is a bug: it fails loudly (no command may silently disappear).
COMMANDS: list[str] = [
    "fsync_fuse.commands.mount",
    "fsync_fuse.commands.unmount",
    "fsync_fuse.commands.sync_now",
    "fsync_fuse.commands.status",
    "fsync_fuse.commands.pin",
    "fsync_fuse.commands.recall",
    "fsync_fuse.commands.tier",
    "fsync_fuse.commands.policy",
    "fsync_fuse.commands.snapshot",
    "fsync_fuse.commands.versions",
    "fsync_fuse.commands.restore",
    "fsync_fuse.commands.migrate",
    "remote.emulator.cli",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not the usage block): what was wrong and
    where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fsync-fuse: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fsync-fuse",
        description=(
            "Mount an Azure file share as a local directory with a bounded local cache: the whole "
            "namespace is visible, content is fetched on demand, and writes go back to the share "
            "asynchronously."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for modname in COMMANDS:
        importlib.import_module(modname).register(sub)
    return parser


class RotatingLog(logging.handlers.RotatingFileHandler):
    """A log file that never grows past `max_bytes`, with one older file beside it (`.1`): so
    a log in the cache directory fits the space reserved for it there (footprint.py).

    Unlike the standard handler it counts bytes, not characters, clips a record to a quarter
    of the limit (so one always fits), creates files with mode 0600, and moves stdout and
    stderr along when they were the log (a background daemon's are: background.py)."""

    def __init__(self, filename: str, max_bytes: int) -> None:
        self.record_limit = max(1024, max_bytes // 16)  # characters: at most 4 bytes each
        trim(filename, max_bytes)
        trim(filename + ".1", max_bytes)
        super().__init__(filename, maxBytes=max_bytes, backupCount=1, encoding="utf-8")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if len(text) > self.record_limit:
            text = f"{text[: self.record_limit]}... [{len(text) - self.record_limit} more cut]"
        return text

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        msg = f"{self.format(record)}\n".encode(errors="replace")
        self.stream.seek(0, 2)
        return self.stream.tell() + len(msg) >= self.maxBytes

    def doRollover(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        old = os.fstat(self.stream.fileno())
        movers = [fd for fd in (1, 2) if _same_file(fd, old)]
        super().doRollover()
        if self.stream is not None:
            for fd in movers:
                os.dup2(self.stream.fileno(), fd)

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def _same_file(fd: int, st: os.stat_result) -> bool:
    try:
        mine = os.fstat(fd)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def trim(path: str, max_bytes: int) -> None:
    """A log file larger than `max_bytes` (left by an older version) keeps its last half.
    Best effort: a file that cannot be opened is left as it is (opening it for the log says
    why)."""
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, 2)
            if size <= max_bytes:
                return
            keep = max_bytes // 2
            fh.seek(size - keep)
            tail = fh.read(keep)
            fh.seek(0)
            fh.truncate()
            fh.write(tail)
    except OSError:
        pass


def setup_logging(debug: bool, logfile: str | None = None, *, max_bytes: int = 0) -> None:
    """One log format for every command; `--debug` turns on our own verbose messages only.
    `max_bytes`: the log file rotates at this size, keeping one older file (RotatingLog)."""
    handler: logging.Handler
    if logfile and max_bytes:
        handler = RotatingLog(logfile, max_bytes)
    elif logfile:
        handler = logging.FileHandler(logfile)
    else:
        handler = logging.StreamHandler(sys.stderr)
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
