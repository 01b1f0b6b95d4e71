"""`--profile`: py-spy samples the fsync-fuse daemon around each timed step of the first
repetition, so a missed target comes with the profile that explains it.

Each step writes collapsed stacks (`WORK/profiles/<row>.txt`, flamegraph.pl / speedscope
input) and a summary of the hottest functions (self and inclusive share of samples) that goes
into the JSON under `profiles`. Sampling costs CPU on a small machine: figures of a profiled
run are for diagnosis, not for the record.
"""

from __future__ import annotations

import collections
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("bench")


def pyspy_path() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def summarize(path: Path, top: int = 15) -> dict:
    """Top functions by self and by inclusive samples from a collapsed-stack file."""
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def pct(c: collections.Counter[str], k: int) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in c.most_common(k)] if total else []

    return {"samples": total, "self": pct(self_n, top), "inclusive": pct(incl, 4 * top)}


class Profiler:
    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.out_dir = out_dir
        self.exe = pyspy_path() if enabled else None
        self.enabled = enabled and self.exe is not None
        self.summaries: dict[str, dict] = {}
        if enabled and self.exe is None:
            log.warning("--profile: py-spy not found (pip install py-spy); not profiling")

    @contextmanager
    def record(self, pid: int | None, label: str) -> Iterator[None]:
        """Sample `pid` while the block runs (once per label; no-op when disabled)."""
        if not self.enabled or pid is None or label in self.summaries:
            yield
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / (label.replace("/", "_") + ".txt")
        # --gil: only the thread holding the GIL is sampled. The daemon is one Python process
        # whose threads mostly wait on sockets; what costs is what holds the interpreter.
        cmd = [self.exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
               "--output", str(out), "--nonblocking", "--gil"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)  # attach before the work starts
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if out.exists():
                self.summaries[label] = {"file": str(out), **summarize(out)}
            else:
                log.warning("py-spy wrote no profile for %s: %s", label, err.decode()[-300:])
