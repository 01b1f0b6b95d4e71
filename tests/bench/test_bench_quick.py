"""The benchmark harness in --quick mode: it runs end to end against the real emulator, real
mounts and the real SDK, and every byte and name read back is the one written. No timing
asserts: the figures of a smoke run on a shared machine mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench.machine import rclone_path

REPO = Path(__file__).resolve().parents[2]

needs_fuse = pytest.mark.skipif(
    not os.access("/dev/fuse", os.W_OK) or os.geteuid() != 0,
    reason="mounting needs /dev/fuse and root",
)

# Rows every contestant must have figures for in a full --quick run.
CHURN_ROWS = ["churn/sqlite-rollback", "churn/sqlite-wal", "churn/saves", "churn/saves-drain"]
FS_ROWS = [
    "seq-read/cold",
    "seq-read/warm-dropped",
    "seq-read/warm-pagecache",
    "rand-read/4k-cold",
    "rand-read/4k-warm",
    "rand-read/64k-cold",
    "rand-read/64k-warm",
    "seq-write/close",
    "seq-write/drain",
    "small-files/extract",
    "small-files/drain",
    "small-files/read-warm",
    "small-files/read-cold",
    "headers/extract",
    "headers/drain",
    "headers/read-warm",
    "headers/read-cold",
    "metadata/cold",
    "metadata/warm",
    *CHURN_ROWS,
]
MIGRATE_ROWS = ["migrate/small", "migrate/large"]
MOUNT_ROWS = [
    *FS_ROWS,
    "seq-write/upload",
    "memory/list",
    "memory/rss",
    "headers/cpu",
    *MIGRATE_ROWS,
]
EXPECTED_FS_ONLY = ["churn/saves-queued"]  # what only fsync-fuse can tell
EXPECTED = {
    "local": FS_ROWS,
    "sdk": [
        "seq-read/cold",
        "rand-read/4k-cold",
        "rand-read/64k-cold",
        "seq-write/upload",
        "small-files/extract",
        "small-files/read-cold",
        "headers/extract",
        "headers/read-cold",
        "metadata/cold",
        *MIGRATE_ROWS,
    ],
    "fsync-fuse": [*MOUNT_ROWS, *EXPECTED_FS_ONLY],
    "rclone": MOUNT_ROWS,
    "emulator": [
        "emulator/get-1",
        "emulator/get-n",
        "emulator/put-n",
        "emulator/get-curl",
        "emulator/put-curl",
        "emulator/props",
        "emulator/create-small",
        "emulator/list",
    ],
}
# Rows whose data is read back and compared (content hashes, or names + sizes of the tree).
VERIFIED_CHURN = ["churn/sqlite-rollback", "churn/sqlite-wal", "churn/saves"]
VERIFIED = {
    "local": ["seq-read/cold", "seq-write/close", "small-files/read-warm",
              "small-files/read-cold", "headers/read-warm", "headers/read-cold",
              "metadata/cold", "metadata/warm", *VERIFIED_CHURN],
    "sdk": ["seq-read/cold", "seq-write/upload", "small-files/read-cold", "headers/read-cold",
            "metadata/cold"],
    "fsync-fuse": ["seq-read/cold", "seq-write/close", "small-files/read-warm",
                   "small-files/read-cold", "headers/read-warm", "headers/read-cold",
                   "metadata/cold", "metadata/warm", "memory/list", *MIGRATE_ROWS,
                   *VERIFIED_CHURN],
}  # fmt: skip
VERIFIED["rclone"] = VERIFIED["fsync-fuse"]


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(path))]


@needs_fuse
def test_quick_run_all_contestants(tmp_path):
    contestants = ["local", "sdk", "fsync-fuse", "emulator"]
    if rclone_path():
        contestants.append("rclone")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--quick", "--out", str(out),
         "--work-dir", str(tmp_path / "work"), "--contestants", ",".join(contestants)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    log = proc.stdout[-4000:] + proc.stderr[-6000:]
    try:
        assert not _mounts_under(tmp_path), f"mounts left behind:\n{log}"
        assert proc.returncode == 0, log
        (js,) = out.glob("bench-*.json")
        (md,) = out.glob("bench-*.md")
        data = json.loads(js.read_text())
        rows = data["rows"]
        for who in contestants:
            for row in EXPECTED[who]:
                cell = rows.get(row, {}).get(who)
                assert cell is not None, f"no figure for {row} / {who}\n{log}"
                assert cell["errors"] == [], (row, who, cell["errors"])
                assert len(cell["values"]) == 1 and cell["values"][0] > 0, (row, who, cell)
            for row in VERIFIED.get(who, []):
                assert rows[row][who]["verified"] is True, (row, who, rows[row][who]["notes"])
        assert data["machine"]["cores"] and data["machine"]["memory_bytes"]
        assert data["versions"]["fsync-fuse"]
        assert data["settings"]["quick"] is True
        assert {"local", "sdk"} <= set(data["ratios"]["seq-read/cold"])
        statuses = {t["row"]: t["status"] for t in data["targets"]}
        assert set(statuses.values()) <= {"PASS", "MISS"}, statuses
        table = md.read_text()
        assert "| 1 cold sequential read |" in table and table in proc.stdout
    finally:
        for m in _mounts_under(tmp_path):
            subprocess.run(["fusermount3", "-u", "-z", m], check=False)


def test_python_random_reader(tmp_path):
    """The fallback used where fio is not installed reads real, aligned blocks."""
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(1 << 20))
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench.randread", str(f), str(1 << 20), "4096", "50", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["ios"] == 50 and res["seconds"] > 0


def test_short_file_is_an_error_for_the_python_reader(tmp_path):
    f = tmp_path / "short.bin"
    f.write_bytes(b"x" * 1000)
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench.randread", str(f), str(1 << 20), "4096", "50", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "short read" in proc.stderr
