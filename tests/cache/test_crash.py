"""SIGKILL a process that writes, fills, evicts, uploads and commits; check what survives.

After each kill the parent reopens the cache (which reconciles) and checks, page by page:
- every page holds a value it had at the last completed commit or later (committed bytes are
  intact; uncommitted ones may be lost but nothing else appears);
- every clean block equals the remote (clipped to remote_valid), nothing claimed is missing;
- every allocated extent of a data file lies in a claimed block, no data file is orphaned,
  and the accounting covers what is on disk.
Then it makes the survivors the new baseline and lets the next child continue on the same
cache, so crashes pile up on top of recovered state."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from cache.system import extents
from tests.cache.crash_child import BS, KEYS, MAX_FILE, open_cache, remote_fetch

ROOT = Path(__file__).resolve().parents[2]
PAGE = 4096
ROUNDS = 30


def replay(directory: Path) -> tuple[list[dict[int, set[bytes]]], dict[int, int]]:
    """Allowed values of every page (per key) since the last completed commit, and the sizes
    at that commit (what a filesystem that commits with the cache would have)."""
    entries = []
    for line in (directory / "log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by the kill
    start = max(i for i, e in enumerate(entries) if e["op"] == "reset")
    reset = entries[start]
    content = {
        int(k): bytearray(
            (directory / reset["baseline"]).read_bytes()[i * MAX_FILE : (i + 1) * MAX_FILE]
        )
        for i, k in enumerate(KEYS)
    }
    sizes = {int(k): v for k, v in reset["sizes"].items()}
    ops = entries[start + 1 :]
    ops = [e for i, e in enumerate(ops) if not (i + 1 < len(ops) and ops[i + 1]["op"] == "abort")]
    ops = [e for e in ops if e["op"] != "abort"]
    ends = [i for i, e in enumerate(ops) if e["op"] == "commit-end"]
    base = ends[-1] + 1 if ends else 0

    def apply(e: dict) -> None:
        if e["op"] not in ("write", "truncate"):
            return
        c = content[e["k"]]
        if e["op"] == "write":
            c[e["off"] : e["off"] + e["n"]] = random.Random(e["seed"]).randbytes(e["n"])
            sizes[e["k"]] = max(sizes[e["k"]], e["off"] + e["n"])
        elif e["op"] == "truncate":
            c[e["size"] :] = bytes(MAX_FILE - e["size"])
            sizes[e["k"]] = e["size"]

    for e in ops[:base]:
        apply(e)
    committed_sizes = dict(sizes)
    allowed = [
        {k: {bytes(content[k][p : p + PAGE])} for k in KEYS} for p in range(0, MAX_FILE, PAGE)
    ]
    for e in ops[base:]:
        if e["op"] in ("write", "truncate"):
            apply(e)
            for i, p in enumerate(range(0, MAX_FILE, PAGE)):
                allowed[i][e["k"]].add(bytes(content[e["k"]][p : p + PAGE]))
    return allowed, committed_sizes


def legitimate(page: bytes, allowed: set[bytes], cut: int, remote: bytes) -> bool:
    """Whether a page read back after a crash holds a value it had since the last commit.

    One more shape is legitimate when the durable remote_valid falls inside the page (0 < cut <
    PAGE): a block refetched after the crash holds the remote's bytes below remote_valid and
    zeros above it. The model remote is not rolled back by the crash (like a real share), so
    below the cut it may hold an upload made after the commit, while remote_valid reverted to a
    value from the commit or a later truncate (the raise after the upload was not committed).
    Such a page is two allowed values split at the cut: the lower part of one, equal to what
    the remote holds there, and an upper part of zeros that some allowed value has too. Every
    byte holds a value it had since the commit, nothing the user never wrote appears and no
    committed byte is lost unless it was zeroed since; only the split is a tear, and it lies
    exactly where the file ended or was truncated to at some moment since the commit."""
    if page in allowed:
        return True
    if not 0 < cut < PAGE or any(page[cut:]):
        return False
    low = page[:cut]
    if low != remote[:cut]:
        return False
    return any(v[:cut] == low for v in allowed) and any(not any(v[cut:]) for v in allowed)


async def verify_and_rebase(directory: Path, round_no: int) -> int:
    allowed, sizes = replay(directory)
    cache = open_cache(directory)
    try:
        baseline = bytearray()
        for k in KEYS:
            fetch = remote_fetch(directory, k)
            got = await cache.read(k, 0, MAX_FILE, size=MAX_FILE, fetch=fetch)
            try:
                remote = (directory / "remote" / str(k)).read_bytes()
            except FileNotFoundError:
                remote = b""
            rv = cache.remote_valid(k)
            remote = (remote[:rv] + bytes(MAX_FILE))[:MAX_FILE]
            for i, p in enumerate(range(0, MAX_FILE, PAGE)):
                assert legitimate(got[p : p + PAGE], allowed[i][k], rv - p, remote[p : p + PAGE]), (
                    f"round {round_no}: key {k} page {i} holds a value it never had since the "
                    "last commit"
                )
            # Claims agree with the remote and the data files.
            blocks = cache.blocks(k)
            for b, s in blocks.items():
                if s == "clean":
                    assert got[b * BS : (b + 1) * BS] == remote[b * BS : (b + 1) * BS], (
                        f"round {round_no}: clean block {b} of key {k} differs from the remote"
                    )
            path = cache.data_path(k)
            if path is not None and path.exists():
                fd = os.open(path, os.O_RDONLY)
                try:
                    for start, end in extents(fd):
                        for b in range(start // BS, (end - 1) // BS + 1):
                            assert b in blocks, f"round {round_no}: unclaimed data in block {b}"
                finally:
                    os.close(fd)
            # The filesystem's size is the committed one: make the cache agree, as the
            # filesystem does on start.
            cache.truncate(k, sizes[k])
            got = await cache.read(k, 0, MAX_FILE, size=MAX_FILE, fetch=fetch)
            assert got[sizes[k] :] == bytes(MAX_FILE - sizes[k])
            baseline += got
        known = {cache.data_path(k) for k in KEYS}
        for sub in (directory / "cache" / "data").iterdir():
            for p in sub.iterdir():
                assert p in known, f"round {round_no}: orphaned data file {p}"
        used = cache.stats().used
        on_disk = sum(p.stat().st_blocks * 512 for p in known if p is not None and p.exists())
        assert on_disk <= used, f"round {round_no}: data files occupy {on_disk}, counted {used}"
        cache.commit()
    finally:
        cache.close()
    name = f"baseline-{round_no}"
    (directory / name).write_bytes(baseline)
    (directory / "state.json").write_text(json.dumps(sizes))
    with open(directory / "log", "a") as fh:
        fh.write(json.dumps({"op": "reset", "sizes": sizes, "baseline": name}) + "\n")
    return used


async def setup(directory: Path, rng: random.Random) -> None:
    (directory / "remote").mkdir(parents=True)
    cache = open_cache(directory)
    baseline = bytearray()
    sizes = {}
    for k in KEYS:
        n = rng.randrange(MAX_FILE)
        data = rng.randbytes(n)
        (directory / "remote" / str(k)).write_bytes(data)
        cache.set_remote_valid(k, n)
        sizes[k] = n
        baseline += data + bytes(MAX_FILE - n)
    cache.close()
    (directory / "baseline-0").write_bytes(baseline)
    (directory / "state.json").write_text(json.dumps(sizes))
    (directory / "log").write_text(
        json.dumps({"op": "reset", "sizes": sizes, "baseline": "baseline-0"}) + "\n"
    )


def run_child(directory: Path, seed: int, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cache.crash_child", str(directory), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline()
        assert line == b"ready\n", proc.stderr.read().decode()
        time.sleep(rng.uniform(0.02, 0.25))
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


async def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    rng = random.Random(20261125)
    await setup(tmp_path, rng)
    for round_no in range(1, ROUNDS + 1):
        await trio.to_thread.run_sync(run_child, tmp_path, rng.getrandbits(32), rng)
        await verify_and_rebase(tmp_path, round_no)
    lines = (tmp_path / "log").read_text().splitlines()
    assert sum('"commit-end"' in line for line in lines) > ROUNDS  # commits really happened
