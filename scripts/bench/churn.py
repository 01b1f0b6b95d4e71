"""Workload `churn` (issue 16): metadata churn of small files, as applications make it.

- `churn/sqlite-rollback`, `churn/sqlite-wal`: SQLite, one row inserted per transaction
  (2,000; 100 with --quick), with the default rollback journal and in WAL mode, each
  commit durable (SQLite's default `synchronous=FULL`: an fsync per commit).
- `churn/saves`: editor-style atomic saves (2,000 over 20 files): a temporary file written,
  fsync'ed and renamed over its file. `churn/saves-queued`: the share operations fsync-fuse
  still has queued right after them (coalescing: at most one per file saved);
  `churn/saves-drain`: until the last version of every file is on the share.

Each runs in a child process on every file-system contestant (local disk, fsync-fuse,
rclone), checked afterwards (rows counted, the files' last versions on the share).
Targets: both SQLite rows within 5x local disk; saves-queued below one per file + 1.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time

from .workloads import Bench, FsContestant, _mkdir_settled, attempt, log_value, prof, run_timed

log = logging.getLogger("bench")

SAVED_FILES = 20

_SQLITE = """
import sqlite3, sys
db, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = sqlite3.connect(db, isolation_level=None)
con.execute(f"PRAGMA journal_mode={mode}")
con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
for i in range(n):
    con.execute("BEGIN")
    con.execute("INSERT INTO t (body) VALUES (?)", (f"row {i} " * 20,))
    con.execute("COMMIT")
print(con.execute("SELECT count(*) FROM t").fetchone()[0])
con.close()
"""

_SAVES = """
import os, sys
d, n, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    name = f"f{i % files:02}.txt"
    tmp = os.path.join(d, f".{name}.swp{i}")
    with open(tmp, "wb") as fh:
        fh.write(f"version {i} of {name}\\n".encode() * 50)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, os.path.join(d, name))
"""


def last_versions(n: int, files: int = SAVED_FILES) -> dict[str, str]:
    """The SHA-256 of each saved file's last version."""
    out = {}
    for i in range(max(0, n - files), n):
        name = f"f{i % files:02}.txt"
        out[name] = hashlib.sha256(f"version {i} of {name}\n".encode() * 50).hexdigest()
    return out


def run(b: Bench) -> None:
    n = 100 if b.s.quick else 2000
    tmo = b.s.drain_timeout
    for c in b.fs:
        attempt(b, "churn/saves", c.name, lambda c=c: _mkdir_settled(c, f"churn/{c.name}", tmo))
    for rep in range(b.s.reps):
        log.info("churn: repetition %d/%d", rep + 1, b.s.reps)
        for c in b.fs:
            rel = f"churn/{c.name}/r{rep}"
            for mode in ("delete", "wal"):
                row = f"churn/sqlite-{'rollback' if mode == 'delete' else mode}"
                attempt(b, row, c.name, lambda c=c, rel=rel, row=row, mode=mode: _sqlite(b, c, rel, row, mode, n))  # fmt: skip
            attempt(b, "churn/saves", c.name, lambda c=c, rel=rel: _saves(b, c, rel, n))


def _sqlite(b: Bench, c: FsContestant, rel: str, row: str, mode: str, n: int) -> None:
    d = c.root / rel / row.rpartition("/")[2]
    d.mkdir(parents=True)
    c.settle(b.s.drain_timeout)
    with prof(b, c, row):
        t, out = run_timed([sys.executable, "-c", _SQLITE, str(d / "db.sqlite"), mode, str(n)], b.s.drain_timeout)  # fmt: skip
    log_value(row, c.name, b.results.add(row, c.name, t, ops=n), "s")
    b.results.verify(row, c.name, out.split()[-1] == str(n), f"{n} transactions")


def _saves(b: Bench, c: FsContestant, rel: str, n: int) -> None:
    d = c.root / rel / "saves"
    d.mkdir(parents=True)
    c.settle(b.s.drain_timeout)
    with prof(b, c, "churn/saves"):
        t, _ = run_timed([sys.executable, "-c", _SAVES, str(d), str(n), str(SAVED_FILES)], b.s.drain_timeout)  # fmt: skip
    log_value("churn/saves", c.name, b.results.add("churn/saves", c.name, t, ops=n), "s")
    pending = getattr(c, "pending", None)
    if pending is not None:
        queued = pending().get("ops", 0)
        b.results.add("churn/saves-queued", c.name, 0.0, count=queued)
        log_value("churn/saves-queued", c.name, queued, "operations")
    want = last_versions(n)
    check = None
    if c.name != "local":

        def check() -> bool:
            return b.sdk.download_tree(f"{rel}/saves") == want

    t0 = time.perf_counter()
    c.settle(b.s.drain_timeout, check)
    t = time.perf_counter() - t0
    log_value("churn/saves-drain", c.name, b.results.add("churn/saves-drain", c.name, t), "s")
    local = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}
    b.results.verify("churn/saves", c.name, local == want, f"{n} saves of {SAVED_FILES} files")
