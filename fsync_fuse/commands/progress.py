"""Progress of a long command: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from fsync_fuse.commands.common import duration, rate, size

#: a progress line at most this often when stderr is not a terminal
PLAIN_EVERY = 1.0


class Progress:
    """tqdm on a terminal; plain lines (at most one per PLAIN_EVERY) otherwise."""

    def __init__(self, files: int, nbytes: int, *, quiet: bool, label: str = "recall") -> None:
        self.files, self.nbytes = files, nbytes
        self.label = label
        self.done_files = self.done_bytes = 0
        self.start = self._last = time.monotonic()
        self.quiet = quiet
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=nbytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self.bar.set_postfix_str(f"0/{files} files")

    def advance(self, nbytes: int) -> None:
        self.done_files += 1
        self.done_bytes += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix_str(f"{self.done_files}/{self.files} files", refresh=False)
        elif not self.quiet and time.monotonic() - self._last >= PLAIN_EVERY:
            self.line()

    def line(self) -> None:
        self._last = now = time.monotonic()
        elapsed = now - self.start
        bps = self.done_bytes / elapsed if elapsed > 0 else None
        left = self.nbytes - self.done_bytes
        eta = duration(left / bps) if bps else "?"
        print(
            f"{self.label}: {self.done_files}/{self.files} files, {size(self.done_bytes)}/"
            f"{size(self.nbytes)}, {rate(bps)}, ETA {eta}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet:
            self.line()
