"""The operator's commands through real mounts and the CLI as a subprocess: status (of a
mount, of paths, --dirty, --next), pin/unpin, recall (parallel, progress, Ctrl-C and resume,
the cache floor), tier, set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.mount.helpers import REPO, env, eventually, read, write

pytestmark = pytest.mark.mount

KiB, MiB = 1 << 10, 1 << 20


def cli(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsync_fuse", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=timeout,
    )


def ok(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = cli(*args, timeout=timeout)
    assert r.returncode == 0, f"fsync-fuse {args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def status(mnt) -> dict:
    return json.loads(os.getxattr(mnt, "user.fsync.status"))


def state(path) -> str:
    return os.getxattr(path, "user.fsync.state").decode()


def one_line_error(r: subprocess.CompletedProcess[str], word: str) -> None:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("fsync-fuse: error:")]
    assert r.returncode != 0 and errors and word in errors[-1], (r.returncode, r.stderr)


def test_status_of_a_mount_and_of_paths(mounter, share, share_url):
    """Mount-wide status, per-path status (with a conflict copy beside a file), --dirty
    oldest first, --next, each also as JSON."""
    share.put("docs/report.txt", b"r" * 300 * KiB)
    share.put("docs/report-siteB.txt", b"other version")  # what conflict_name makes
    share.put("docs/cold.bin", b"c" * 200 * KiB)
    m = mounter(share_url, args=["--cache-size", "64M", "--writeback-delay", "60"])
    assert read(m.mnt / "docs/report.txt") == b"r" * 300 * KiB
    write(m.mnt / "older.txt", b"1" * 5000)
    time.sleep(0.05)  # distinct mtimes: the dirty list is ordered by them
    write(m.mnt / "docs/newer.txt", b"2" * 7000)

    r = ok("status", m.mnt)
    for word in (share_url, "reachable", "cache:", "queue:", "hit rate:", "polling:"):
        assert word in r.stdout, r.stdout
    st = json.loads(ok("status", "--json", m.mnt).stdout)
    assert st["mount"]["share"] == share_url
    assert st["share"]["reachable"] is True
    assert st["cache"]["bound"] == 64 * MiB and st["cache"]["data"] >= 300 * KiB
    assert st["counts"]["entries"] >= 6 and st["counts"]["cached"] >= 3
    assert st["files"] == 2 and st["counts"]["dirty"] == 2  # pending files, and in counts
    assert st["hits"]["since_mount"]["miss_reads"] >= 1
    assert "tier_after" in st["policies"]

    r = ok("status", m.mnt / "docs/report.txt", m.mnt / "docs/cold.bin", m.mnt / "docs")
    lines = r.stdout.splitlines()
    assert "local" in lines[0] and "100%" in lines[0], r.stdout
    assert "conflict copies beside it: report-siteB.txt" in r.stdout
    assert any(ln.startswith(f"{m.mnt / 'docs/cold.bin'}: tiered") for ln in lines), r.stdout
    assert any("directory" in ln and "4 files directly in it" in ln for ln in lines), r.stdout
    r = ok("status", "--json", m.mnt / "docs/report.txt", m.mnt / "docs/cold.bin")
    infos = json.loads(r.stdout)
    assert infos[0]["state"] == "local" and infos[0]["cached"] == 300 * KiB
    assert infos[0]["conflicts"] == ["report-siteB.txt"] and infos[0]["heat"] > 0
    assert infos[0]["last_access"] is not None and not infos[0]["pinned"]
    assert infos[1]["state"] == "tiered" and infos[1]["cached"] == 0

    dirty = json.loads(ok("status", "--dirty", "--json", m.mnt).stdout)
    assert [f["path"] for f in dirty["files"]] == ["/older.txt", "/docs/newer.txt"]
    assert dirty["count"] == 2 and dirty["files"][0]["size"] == 5000
    assert "oldest change first" in ok("status", "--dirty", m.mnt).stdout

    nxt = json.loads(ok("status", "--next", "5", "--json", m.mnt).stdout)
    assert "/docs/report.txt" in [f["path"] for f in nxt["files"]]
    assert all(f["reason"] in ("heat", "date") for f in nxt["files"])
    assert "next to tier" in ok("status", "--next", "5", m.mnt).stdout

    # outside a mount: one line, non-zero
    one_line_error(cli("status", "/tmp"), "not on a fsync-fuse mount")
    one_line_error(cli("status", m.mnt / "missing"), "no such file")
    assert m.stop() == 0


def test_pinned_directory_keeps_what_is_created_in_it(mounter, share, share_url):
    """Pin a directory, then create files in a new subdirectory of it: they are pinned
    (inherited), local, and stay local while 4x the cache of other data is read. Pinning
    more than fits fails clearly and pins nothing. (Needs parts C and F: pins.)"""
    for i in range(16):
        share.put(f"other/o{i:02}.bin", bytes([i]) * (4 * MiB))
    share.put("big/a.bin", b"a" * (12 * MiB))
    share.put("big/b.bin", b"b" * (12 * MiB))
    m = mounter(share_url, args=["--cache-size", "16M", "--writeback-delay", "0.1"])
    os.mkdir(m.mnt / "keep")
    r = ok("pin", m.mnt / "keep")
    assert "pinned" in r.stdout
    os.makedirs(m.mnt / "keep/new/deeper")
    files = {f"keep/new/deeper/f{i}.bin": os.urandom(256 * KiB) for i in range(6)}
    for rel, data in files.items():
        write(m.mnt / rel, data)
    m.wait_drained()
    for rel in files:
        assert state(m.mnt / rel) == "local,pinned", rel
    info = json.loads(ok("status", "--json", m.mnt / "keep/new/deeper/f0.bin").stdout)
    assert info["pinned"] and info["inherited"]
    assert "pinned (inherited" in ok("status", m.mnt / "keep/new/deeper/f0.bin").stdout

    for i in range(16):  # 64 MiB through a 16 MiB cache
        assert read(m.mnt / f"other/o{i:02}.bin") == bytes([i]) * (4 * MiB)
    for rel in files:
        assert state(m.mnt / rel) == "local,pinned", rel
    assert all(read(m.mnt / rel) == data for rel, data in files.items())

    r = cli("pin", m.mnt / "big")
    one_line_error(r, "cannot pin")
    assert not json.loads(os.getxattr(m.mnt / "big/a.bin", "user.fsync.info"))["pinned"]

    ok("unpin", m.mnt / "keep")
    assert not json.loads(os.getxattr(m.mnt / "keep/new/deeper/f0.bin", "user.fsync.info"))[
        "pinned"
    ]
    assert m.stop() == 0


def test_recall_in_parallel_with_progress_resume_and_tier(mounter, share, share_url, emulator):
    """recall of 200 files: --threads 16 keeps 16 recalls in flight at the daemon (--threads
    1 one), progress shows, Ctrl-C stops it (130) and the rerun fetches only what is left;
    `tier` then `status` shows them tiered and the bytes freed. (Needs part F: the Recaller
    and the action path of getxattr.) The speed-up itself is measured by
    scripts/bench_recall.py."""
    n = 200
    for i in range(n):
        share.put(f"proj/d{i % 4}/f{i:03}.dat", os.urandom(8 * KiB + i))
    m = mounter(share_url, args=["--cache-size", "64M"])
    emulator.set_faults(latency_ms=20)
    try:
        paths = [m.mnt / f"proj/d{i % 4}/f{i:03}.dat" for i in range(n)]

        r = ok("recall", "--threads", "1", m.mnt / "proj")
        assert f"recall: {n} files to fetch" in r.stderr
        assert f"recall: {n}/{n} files" in r.stderr  # the last progress line
        assert f"recalled {n} files" in r.stdout
        assert all(state(p) == "local" for p in paths)
        assert status(m.mnt)["recall"]["max_parallel_requests"] == 1

        r = ok("tier", "--json", m.mnt / "proj")
        tiered = json.loads(r.stdout)
        assert tiered["files"] == n and tiered["freed"] >= sum(8 * KiB + i for i in range(n))
        assert all(state(p) == "tiered" for p in paths)
        assert "tiered" in ok("status", paths[0]).stdout.splitlines()[0]
        st = status(m.mnt)
        assert st["evictions"]["command"]["bytes"] >= tiered["freed"] * 0.9

        r = ok("recall", "--threads", "16", "--json", m.mnt / "proj")
        assert json.loads(r.stdout)["files"] == n
        assert status(m.mnt)["recall"]["max_parallel_requests"] >= 8
        assert all(state(p) == "local" for p in paths)

        # Ctrl-C in the middle, then the same command again; a slower share keeps the middle
        # long (a loaded machine may take seconds to notice the 20th recall)
        ok("tier", m.mnt / "proj")
        emulator.set_faults(latency_ms=150)
        before = status(m.mnt)["recall"]["requests"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "fsync_fuse", "recall", "--threads", "1", str(m.mnt / "proj")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env(),
        )
        eventually(
            lambda: status(m.mnt)["recall"]["requests"] - before >= 20,
            timeout=120,
            what="20 recalls",
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (out, err)
        assert "interrupted" in err and "run the same command again" in err
        local = sum(state(p) == "local" for p in paths)
        assert 20 <= local < n
        r = ok("recall", "--threads", "8", "--json", m.mnt / "proj")
        again = json.loads(r.stdout)
        assert again["local_already"] >= 20 and again["files"] == n - again["local_already"]
        assert all(state(p) == "local" for p in paths)
    finally:
        emulator.clear_faults()
    assert m.stop() == 0


def test_recall_stops_at_the_free_space_floor(mounter, share, share_url, tmp_path):
    """A free-space floor the volume cannot meet: recall stops with the daemon's reason and
    a non-zero status, and nothing is fetched for nothing. (Needs parts C and F.)"""
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(vol)], check=True)
    try:
        for i in range(4):
            share.put(f"f{i}.bin", bytes([i]) * MiB)
        m = mounter(share_url, cache="vol/cache", args=["--cache-size", "32M"])
        (vol / "filler").write_bytes(b"x" * (40 * MiB))  # the volume is now ~63% used
        ok("set", m.mnt, "min_free_space", "50")
        r = cli("recall", m.mnt)
        one_line_error(r, "cache is full")
        assert m.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


def test_set_policies_at_run_time(mounter, share_url):
    """`set` shows and changes policies; a bad value is one line and changes nothing;
    `status` shows what is in force. (Needs part F: Settings.)"""
    m = mounter(share_url)
    r = ok("set", m.mnt)
    assert "tier_after = off" in r.stdout
    ok("set", m.mnt, "tier_after", "30d")
    one_line_error(cli("set", m.mnt, "tier_after", "soon"), "invalid duration")
    one_line_error(cli("set", m.mnt, "no_such_policy", "1"), "unknown policy")
    assert json.loads(ok("set", "--json", m.mnt).stdout)["tier_after"] == "30d"
    assert "tier_after=30d" in ok("status", m.mnt).stdout
    assert status(m.mnt)["policies"]["tier_after"] == "30d"
    assert m.stop() == 0


def test_every_command_has_help_and_json():
    for command in ("status", "pin", "unpin", "recall", "tier", "set"):
        r = cli(command, "--help", timeout=60)
        assert r.returncode == 0 and "--json" in r.stdout, (command, r.stdout, r.stderr)
    r = cli("recall", "--threads", "65", "/tmp", timeout=60)
    assert r.returncode == 2 and "must be from 1 to 64" in r.stderr
