"""Workloads 1-7 of issue #5 and the emulator-alone figures.

Every repetition runs every contestant in turn (interleaved, so drift on this shared machine
hits all of them alike). Timed work on a filesystem runs as a separate process (dd, fio, cp,
tar, find, sha256sum) with a timeout, so a hung mount cannot hang the harness; the direct SDK
contestant runs in-process (scripts/bench/sdk.py). Data read back is checked (untimed where
checking would cost more than the work) and recorded as `verified` in the results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import trees
from .machine import REPO, drop_caches, env_without_proxies, fio_path, rss_bytes
from .mounts import FsyncFuse, LocalDisk, MountFailed, Rclone
from .profiling import Profiler
from .report import Results
from .sdk import Sdk, curl_get, curl_put
from .settings import KiB, Settings

log = logging.getLogger("bench")

FsContestant = LocalDisk | FsyncFuse | Rclone
BIG = "data/big.bin"


@dataclass
class Bench:
    """Everything a workload needs: settings, the emulator's SDK view, the contestants."""

    s: Settings
    work: Path
    sdk: Sdk
    results: Results
    fs: list[FsContestant]
    local_root: Path
    big_sha: str = ""
    #: trees of small files by workload name (smallfiles.py)
    trees: dict[str, Any] = field(default_factory=dict)
    make_mount: Callable[[str, str], FsContestant] | None = None  # (kind, share) -> new mount
    profiler: Profiler = field(default_factory=lambda: Profiler(Path("."), False))
    emulator_pid: int | None = None  # for CPU accounting (smallfiles.py)
    share_url: str = ""  # the emulator's URL of the share (migrate.py)

    def want(self, name: str) -> bool:
        return name in self.s.contestants

    @property
    def mounts(self) -> list[FsContestant]:
        return [c for c in self.fs if not isinstance(c, LocalDisk)]


# ---------------------------------------------------------------------- helpers


def prof(b: Bench, c: FsContestant, label: str):
    """py-spy around a timed step of fsync-fuse when --profile is on (first time per label)."""
    return b.profiler.record(c.daemon_pid() if isinstance(c, FsyncFuse) else None, label)


def run_timed(
    cmd: list[str], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, str]:
    """Wall time of a command that must succeed; its stdout+stderr for parsing. `env`: added
    to the environment (secrets go there, never on a command line)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**env_without_proxies(), **(env or {})},
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr[-600:]}")
    return elapsed, proc.stdout + proc.stderr


def attempt(b: Bench, row: str, who: str, fn: Callable[[], None]) -> None:
    """Run one measurement; a failure is recorded against (row, contestant) and the run goes on."""
    try:
        fn()
    except (Exception, subprocess.TimeoutExpired) as exc:  # noqa: BLE001 - reported, not fatal
        msg = f"{type(exc).__name__}: {exc}"
        log.error("%s %s failed: %s", row, who, msg)
        log.debug("%s", traceback.format_exc())
        b.results.error(row, who, msg[:2000])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256sum(path: Path, timeout: float) -> str:
    _, out = run_timed(["sha256sum", str(path)], timeout)
    return out.split()[0]


def dd_read(path: Path, expect: int, timeout: float) -> float:
    """Seconds to read the whole file with 1 MiB reads; the byte count must match."""
    elapsed, out = run_timed(["dd", f"if={path}", "of=/dev/null", "bs=1M"], timeout)
    m = re.search(r"^(\d+) bytes", out, re.MULTILINE)
    if not m or int(m.group(1)) != expect:
        raise OSError(f"read {m.group(1) if m else '?'} bytes of {expect} from {path}")
    return elapsed


def log_value(row: str, who: str, value: float, unit: str) -> None:
    log.info("%-26s %-10s %10.3f %s", row, who, value, unit)


def drain_check(b: Bench, share_path: str, size: int) -> Callable[[], bool]:
    return lambda: b.sdk.size_of(share_path) == size


# ---------------------------------------------------------------------- 1 + 2: sequential read


def seq_read(b: Bench) -> None:
    size = b.s.file_size
    tmo = b.s.drain_timeout
    for rep in range(b.s.reps):
        log.info("seq-read: repetition %d/%d", rep + 1, b.s.reps)
        for c in b.fs:

            def cold(c: FsContestant = c) -> None:
                c.cold()
                with prof(b, c, "seq-read/cold"):
                    t = dd_read(c.root / BIG, size, tmo)
                log_value(
                    "seq-read/cold",
                    c.name,
                    b.results.add("seq-read/cold", c.name, t, bytes=size),
                    "MB/s",
                )

            attempt(b, "seq-read/cold", c.name, cold)

            def warm_dropped(c: FsContestant = c) -> None:
                drop_caches()
                with prof(b, c, "seq-read/warm-dropped"):
                    t = dd_read(c.root / BIG, size, tmo)
                v = b.results.add("seq-read/warm-dropped", c.name, t, bytes=size)
                log_value("seq-read/warm-dropped", c.name, v, "MB/s")

            def warm_page(c: FsContestant = c) -> None:
                with prof(b, c, "seq-read/warm-pagecache"):
                    t = dd_read(c.root / BIG, size, tmo)
                v = b.results.add("seq-read/warm-pagecache", c.name, t, bytes=size)
                log_value("seq-read/warm-pagecache", c.name, v, "MB/s")

            attempt(b, "seq-read/warm-dropped", c.name, warm_dropped)
            attempt(b, "seq-read/warm-pagecache", c.name, warm_page)
        if b.want("sdk"):
            _sdk_download(b)
    for c in b.fs:

        def check(c: FsContestant = c) -> None:
            ok = sha256sum(c.root / BIG, tmo) == b.big_sha
            b.results.verify("seq-read/cold", c.name, ok, "sha256 of the whole file")

        attempt(b, "seq-read/cold", c.name, check)


def _sdk_download(b: Bench) -> None:
    dest = b.work / "sdk" / "big.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)

    def run() -> None:
        t0 = time.perf_counter()
        n = b.sdk.download(BIG, dest)
        t = time.perf_counter() - t0
        log_value("seq-read/cold", "sdk", b.results.add("seq-read/cold", "sdk", t, bytes=n), "MB/s")
        b.results.verify("seq-read/cold", "sdk", sha256_file(dest) == b.big_sha)
        dest.unlink()

    attempt(b, "seq-read/cold", "sdk", run)


# ---------------------------------------------------------------------- 3: random reads


def fio_randread(path: Path, size: int, bs: int, ios: int, runtime: float) -> tuple[int, float]:
    """(reads done, seconds) of one fio job; a Python reader where fio is missing."""
    timeout = runtime * 3 + 120
    fio = fio_path()
    if fio is None:
        _, out = run_timed(
            [
                sys.executable,
                "-m",
                "scripts.bench.randread",
                str(path),
                str(size),
                str(bs),
                str(ios),
                str(runtime),
            ],
            timeout,
            cwd=REPO,
        )
        res = json.loads(out.strip().splitlines()[-1])
        return res["ios"], res["seconds"]
    cmd = [
        fio, "--name=randread", f"--filename={path}", "--readonly", "--rw=randread",
        f"--bs={bs}", "--ioengine=psync", "--iodepth=1", "--numjobs=1", f"--size={size}",
        f"--io_size={ios * bs}", f"--runtime={runtime}", "--randrepeat=1", "--randseed=42",
        "--norandommap", "--invalidate=1", "--output-format=json",
    ]  # fmt: skip
    _, out = run_timed(cmd, timeout)
    data = json.loads(out[out.index("{") :])
    job = data["jobs"][0]
    if job.get("error"):
        raise OSError(f"fio error {job['error']}")
    rd = job["read"]
    return int(rd["total_ios"]), rd["runtime"] / 1000.0


def rand_read(b: Bench) -> None:
    size = b.s.file_size
    cases = [("4k", 4 * KiB, b.s.rand_ios_4k), ("64k", 64 * KiB, b.s.rand_ios_64k)]
    for rep in range(b.s.reps):
        log.info("rand-read: repetition %d/%d", rep + 1, b.s.reps)
        for label, bs, ios in cases:
            for temp in ("cold", "warm"):
                row = f"rand-read/{label}-{temp}"
                for c in b.fs:

                    def one(
                        c: FsContestant = c,
                        bs: int = bs,
                        ios: int = ios,
                        temp: str = temp,
                        row: str = row,
                    ) -> None:
                        if temp == "cold":
                            c.cold()
                        else:  # the whole file in the contestant's cache, page cache dropped
                            dd_read(c.root / BIG, size, b.s.drain_timeout)
                            drop_caches()
                        with prof(b, c, row):
                            n, t = fio_randread(c.root / BIG, size, bs, ios, b.s.rand_runtime)
                        log_value(
                            row, c.name, b.results.add(row, c.name, t, ops=n, bytes=n * bs), "IOPS"
                        )

                    attempt(b, row, c.name, one)
                if b.want("sdk") and temp == "cold":

                    def sdk_one(bs: int = bs, ios: int = ios, row: str = row) -> None:
                        n, t = b.sdk.random_reads(BIG, size, bs, ios, b.s.rand_runtime)
                        log_value(
                            row, "sdk", b.results.add(row, "sdk", t, ops=n, bytes=n * bs), "IOPS"
                        )

                    attempt(b, row, "sdk", sdk_one)


# ---------------------------------------------------------------------- 4: sequential write


def seq_write(b: Bench) -> None:
    size = b.s.file_size
    src = b.local_root / BIG
    tmo = b.s.drain_timeout
    for c in b.fs:
        attempt(b, "seq-write/close", c.name, lambda c=c: _mkdir_settled(c, f"w/{c.name}", tmo))
    for rep in range(b.s.reps):
        log.info("seq-write: repetition %d/%d", rep + 1, b.s.reps)
        dd_read(src, size, tmo)  # the source in the page cache: we time the writer
        for c in b.fs:
            rel = f"w/{c.name}/big-{rep}.bin"

            def one(c: FsContestant = c, rel: str = rel, rep: int = rep) -> None:
                with prof(b, c, "seq-write/close"):
                    t_close, _ = run_timed(["cp", str(src), str(c.root / rel)], tmo)
                log_value(
                    "seq-write/close",
                    c.name,
                    b.results.add("seq-write/close", c.name, t_close, bytes=size),
                    "MB/s",
                )
                with prof(b, c, "seq-write/drain"):
                    t0 = time.perf_counter()
                    c.settle(tmo, drain_check(b, rel, size) if c.name != "local" else None)
                    t_drain = time.perf_counter() - t0
                log_value(
                    "seq-write/drain",
                    c.name,
                    b.results.add("seq-write/drain", c.name, t_drain),
                    "s",
                )
                if c.name != "local":
                    up = max(t_drain - b.s.writeback_delay, 1e-3)
                    v = b.results.add(
                        "seq-write/upload", c.name, up, bytes=size, drain_seconds=t_drain
                    )
                    log_value("seq-write/upload", c.name, v, "MB/s")
                if rep == 0:
                    got = sha256_file(c.root / rel) if c.name == "local" else b.sdk.sha256_of(rel)
                    b.results.verify(
                        "seq-write/close",
                        c.name,
                        got == b.big_sha,
                        "sha256 of the written file (on the share for mounts)",
                    )

            attempt(b, "seq-write/close", c.name, one)
            attempt(b, "seq-write/close", c.name, lambda c=c, rel=rel: _remove(c, rel, tmo))
        if b.want("sdk"):
            rel = f"w/sdk/big-{rep}.bin"

            def sdk_one(rel: str = rel, rep: int = rep) -> None:
                t0 = time.perf_counter()
                b.sdk.upload(src, rel)
                t = time.perf_counter() - t0
                log_value(
                    "seq-write/upload",
                    "sdk",
                    b.results.add("seq-write/upload", "sdk", t, bytes=size),
                    "MB/s",
                )
                if rep == 0:
                    b.results.verify("seq-write/upload", "sdk", b.sdk.sha256_of(rel) == b.big_sha)
                b.sdk.share.get_file_client(rel).delete_file()

            attempt(b, "seq-write/upload", "sdk", sdk_one)


def _mkdir_settled(c: FsContestant, rel: str, timeout: float) -> None:
    (c.root / rel).mkdir(parents=True, exist_ok=True)
    c.settle(timeout)


def _remove(c: FsContestant, rel: str, timeout: float) -> None:
    p = c.root / rel
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
    c.settle(timeout)


# ---------------------------------------------------------------------- 6: metadata


def find_stat(root: Path, timeout: float) -> tuple[float, dict[str, int]]:
    """Seconds for `find -printf '%y %s'` (an lstat of every entry), and what it found."""
    elapsed, out = run_timed(["find", str(root), "-mindepth", "1", "-printf", "%y %s\n"], timeout)
    entries = files = nbytes = 0
    for line in out.splitlines():
        kind, _, sz = line.partition(" ")
        entries += 1
        if kind == "f":
            files += 1
            nbytes += int(sz)
    return elapsed, {"entries": entries, "files": files, "bytes": nbytes}


def metadata(b: Bench) -> None:
    want = trees.summary(b.s.entries)
    expect = {k: want[k] for k in ("entries", "files", "bytes")}
    tmo = b.s.drain_timeout
    for rep in range(b.s.reps):
        log.info("metadata: repetition %d/%d", rep + 1, b.s.reps)
        for c in b.fs:

            def one(c: FsContestant = c) -> None:
                c.cold()
                for temp in ("cold", "warm"):
                    row = f"metadata/{temp}"
                    with prof(b, c, row):
                        t, found = find_stat(c.root / "meta", tmo)
                    log_value(row, c.name, b.results.add(row, c.name, t, ops=found["entries"]), "s")
                    b.results.verify(row, c.name, found == expect, json.dumps(found))

            attempt(b, "metadata/cold", c.name, one)
        if b.want("sdk"):

            def sdk_one() -> None:
                t0 = time.perf_counter()
                found = b.sdk.list_tree("meta")
                t = time.perf_counter() - t0
                log_value(
                    "metadata/cold",
                    "sdk",
                    b.results.add("metadata/cold", "sdk", t, ops=found["entries"]),
                    "s",
                )
                b.results.verify("metadata/cold", "sdk", found == expect, json.dumps(found))

            attempt(b, "metadata/cold", "sdk", sdk_one)


# ---------------------------------------------------------------------- 7: memory


def memory(b: Bench, share: str) -> None:
    """A fresh mount of the big namespace, one listing, then the daemon's RSS (once: slow)."""
    want = trees.summary(b.s.namespace_entries)
    expect = {k: want[k] for k in ("entries", "files", "bytes")}
    assert b.make_mount is not None
    for c in b.mounts:
        name = c.name

        def one(name: str = name) -> None:
            m = b.make_mount(name, share)
            try:
                m.wipe()
                m.start()
                drop_caches()
                with prof(b, m, "memory/list"):
                    t, found = find_stat(m.root, b.s.drain_timeout)
                pid = m.daemon_pid()
                if pid is None:
                    raise MountFailed(f"{name}: no daemon pid")
                mem = rss_bytes(pid)
                log_value(
                    "memory/list",
                    name,
                    b.results.add("memory/list", name, t, ops=found["entries"]),
                    "s",
                )
                v = b.results.add(
                    "memory/rss",
                    name,
                    0.0,
                    bytes=mem["VmRSS"],
                    peak_bytes=mem.get("VmHWM"),
                    entries=found["entries"],
                )
                log_value("memory/rss", name, v, "MiB")
                if "RssAnon" in mem:
                    for row, key in (("memory/anon", "RssAnon"), ("memory/file", "RssFile")):
                        v = b.results.add(row, name, 0.0, bytes=mem[key])
                        log_value(row, name, v, "MiB")
                b.results.verify("memory/list", name, found == expect, json.dumps(found))
            finally:
                m.stop()
                m.wipe()

        attempt(b, "memory/rss", name, one)


# ---------------------------------------------------------------------- emulator alone


def emulator_alone(b: Bench) -> None:
    """What the emulator delivers on this machine, through the Python SDK and through curl
    (no Python client at all); the metadata tree is always loaded when this runs."""
    size = b.s.file_size
    n = b.s.sdk_concurrency
    n_small = min(b.s.small_files or 500, 500)
    for rep in range(b.s.reps):
        log.info("emulator alone: repetition %d/%d", rep + 1, b.s.reps)

        def listing() -> tuple[float, int]:
            t0 = time.perf_counter()
            found = b.sdk.list_tree("meta", concurrency=1)
            return time.perf_counter() - t0, found["entries"]

        steps: list[tuple[str, Callable[..., tuple[float, int]], str]] = [
            ("emulator/get-1", lambda: (b.sdk.get_throughput(BIG, size, 1), size), "bytes"),
            ("emulator/get-n", lambda: (b.sdk.get_throughput(BIG, size, n), size), "bytes"),
            ("emulator/put-n",
             lambda rep=rep: (b.sdk.put_throughput(f"emu/put-{rep}.bin", size, n), size), "bytes"),
            ("emulator/get-curl", lambda: (curl_get(b.sdk, BIG, size, n), size), "bytes"),
            ("emulator/put-curl",
             lambda rep=rep: (curl_put(b.sdk, f"emu/curl-{rep}.bin", size, n, b.work), size), "bytes"),
            ("emulator/props", lambda: (b.sdk.properties_rate(BIG, 200), 200), "ops"),
            ("emulator/create-small",
             lambda rep=rep: (b.sdk.small_creates(f"emu/small-{rep}", n_small), n_small), "ops"),
            ("emulator/list", listing, "ops"),
        ]  # fmt: skip
        for row, fn, what in steps:

            def one(
                row: str = row, fn: Callable[..., tuple[float, int]] = fn, what: str = what
            ) -> None:
                t, amount = fn()
                v = b.results.add(row, "emulator", t, **{what: amount})
                log_value(row, "emulator", v, "MB/s" if what == "bytes" else "/s")

            attempt(b, row, "emulator", one)
