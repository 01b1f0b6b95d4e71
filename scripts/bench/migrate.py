"""Workload `migrate` (issue 17): filling the share from a local tree.

Two sources, each copied into a fresh directory of the share per repetition:
- `migrate/small`: the small-files tree (the sdist, extracted), thousands of small files;
- `migrate/large`: one file of --file-size.
Contestants: `fsync-fuse migrate` (fresh journal each time), `rclone copy` (azurefiles
backend, as many transfers as migrate has threads) and the direct SDK upload of the same
files (scripts/bench/sdk.py: parallel ranged PUTs, as many streams as --sdk-concurrency), run
as a process of its own like migrate (sdk_upload.py): both pay an interpreter's start.
Targets: small >= 1.5x rclone; large >= 0.9x the SDK.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import sdk_upload
from .machine import REPO, make_file, rclone_env, rclone_path
from .settings import human_size
from .workloads import Bench, attempt, log_value, run_timed

log = logging.getLogger("bench")

THREADS = 16


def run(b: Bench, url: str) -> None:
    """`url`: the share URL fsync-fuse migrate gets (the emulator's)."""
    small = _small_source(b)
    large = b.work / "migrate-large"
    if not large.exists():
        large.mkdir()
        make_file(large / "big.bin", b.s.file_size)
    nfiles = sum(len(files) for _, _, files in os.walk(small))
    sources = (("migrate/small", small, nfiles), ("migrate/large", large, 1))
    for rep in range(b.s.reps):
        log.info("migrate: repetition %d/%d", rep + 1, b.s.reps)
        for row, src, n in sources:
            nbytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
            prefix = f"{row}/r{rep}"

            def ours(row: str = row, src: Path = src, prefix: str = prefix, n: int = n, nbytes: int = nbytes) -> None:  # fmt: skip
                state = b.work / "migrate-state" / prefix
                shutil.rmtree(state, ignore_errors=True)
                cmd = [sys.executable, "-m", "fsync_fuse", "migrate", str(src), f"{url}/{prefix}/fsync",
                       "--state", str(state), "--threads", str(THREADS), "-q"]  # fmt: skip
                t, _ = run_timed(cmd, b.s.drain_timeout, cwd=REPO)
                log_value(row, "fsync-fuse", b.results.add(row, "fsync-fuse", t, ops=n, bytes=nbytes), "s")  # fmt: skip
                b.results.verify(
                    row, "fsync-fuse", b.sdk.list_tree(f"{prefix}/fsync")["files"] == n
                )

            attempt(b, row, "fsync-fuse", ours)
            if b.want("rclone") and rclone_path() is not None:

                def theirs(row: str = row, src: Path = src, prefix: str = prefix, n: int = n, nbytes: int = nbytes) -> None:  # fmt: skip
                    t = _rclone_copy(b, src, f"{prefix}/rclone")
                    log_value(row, "rclone", b.results.add(row, "rclone", t, ops=n, bytes=nbytes), "s")  # fmt: skip
                    b.results.verify(
                        row, "rclone", b.sdk.list_tree(f"{prefix}/rclone")["files"] == n
                    )

                attempt(b, row, "rclone", theirs)
            if b.want("sdk"):

                def sdk(row: str = row, src: Path = src, prefix: str = prefix, n: int = n, nbytes: int = nbytes) -> None:  # fmt: skip
                    # a process of its own, as `fsync-fuse migrate` is (sdk_upload.py)
                    dest = f"{prefix}/sdk" if n > 1 else f"{prefix}/sdk/big.bin"
                    cmd = [sys.executable, "-m", "scripts.bench.sdk_upload", b.sdk.share_name,
                           str(src if n > 1 else src / "big.bin"), dest,
                           "--concurrency", str(b.sdk.concurrency)]  # fmt: skip
                    env = {sdk_upload.ENV: b.sdk.connection_string}
                    t, _ = run_timed(cmd, b.s.drain_timeout, cwd=REPO, env=env)
                    log_value(row, "sdk", b.results.add(row, "sdk", t, ops=n, bytes=nbytes), "s")
                    b.results.verify(row, "sdk", b.sdk.list_tree(f"{prefix}/sdk")["files"] == n)

                attempt(b, row, "sdk", sdk)
    log.info("migrate sources: %d small files; one file of %s", nfiles, human_size(b.s.file_size))


def _small_source(b: Bench) -> Path:
    tree = b.trees["small-files"]
    src = b.work / "migrate-small"
    if not src.exists():
        src.mkdir()
        subprocess.run(["tar", "-xf", str(tree.tar), "-C", str(src)], check=True)
    return src


def _rclone_copy(b: Bench, src: Path, dest: str) -> float:
    exe = rclone_path()
    assert exe is not None
    env = rclone_env(b.sdk.connection_string, b.sdk.share_name, b.work)
    cmd = [exe, "copy", str(src), f"bench:{dest}", "--transfers", str(THREADS),
           "--checkers", str(THREADS)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=b.s.drain_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"rclone copy exited {proc.returncode}: {proc.stderr[-600:]}")
    return time.perf_counter() - t0
