"""`status` on a mount whose namespace holds 100,000 entries: the mount-wide view, a file, a
directory, --dirty and --next all answer (the time of each is printed; the figures come
from counters and records, not from a walk of the namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from scripts.bench import trees
from tests.mount.helpers import REPO, env

pytestmark = [pytest.mark.mount, pytest.mark.slow]

ENTRIES = 100_000


def timed(*args: object) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "fsync_fuse", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=120,
    )
    dt = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    print(f"fsync-fuse {' '.join(map(str, args[:-1]))}: {dt * 1000:.0f} ms (the CLI included)")
    return r, dt


def test_status_answers_with_100k_entries(fresh_emulator, mounter):
    from azure.storage.fileshare import ShareServiceClient

    emu = fresh_emulator
    share = ShareServiceClient.from_connection_string(emu.connection_string).create_share("big")
    share.get_directory_client(trees.TEMPLATE_DIR).create_directory()
    share.get_file_client(f"{trees.TEMPLATE_DIR}/{trees.TEMPLATE_FILE}").create_file(0)
    emu.stop()
    assert trees.write_emulator_store(emu.data_dir, "big", "", ENTRIES) == ENTRIES
    emu.start()
    tree = trees.summary(ENTRIES)

    m = mounter(emu.share_url("big"), args=["--cache-size", "1G", "--poll-interval", "0"])
    t0 = time.perf_counter()
    out = subprocess.run(["find", str(m.mnt)], capture_output=True, text=True, check=True)
    assert len(out.stdout.splitlines()) - 1 == tree["entries"]
    print(f"find over {tree['entries']:,} entries: {time.perf_counter() - t0:.1f}s")
    some = m.mnt / "t0000/d000"
    for name in sorted(os.listdir(some))[:20]:
        with open(some / name, "rb") as fh:
            fh.read()
    (m.mnt / "t0000/new.txt").write_bytes(b"new")

    for name, path in (
        ("user.fsync.status", m.mnt),
        ("user.fsync.info", some / "f005.dat"),
        ("user.fsync.info", some),
        ("user.fsync.next.20", m.mnt),
    ):
        t0 = time.perf_counter()
        os.getxattr(path, name)
        print(f"the daemon's answer to {name}: {(time.perf_counter() - t0) * 1000:.1f} ms")
    r, _ = timed("status", "--json", m.mnt)
    st = json.loads(r.stdout)
    assert st["counts"]["entries"] >= ENTRIES + 1
    assert st["counts"]["cached"] >= 1
    timed("status", m.mnt)
    r, _ = timed("status", "--json", some / "f005.dat")
    assert json.loads(r.stdout)["state"] in ("local", "tiered")
    r, _ = timed("status", "--json", some)
    assert json.loads(r.stdout)["summary"]["files"] == 100
    r, _ = timed("status", "--dirty", "--json", m.mnt)
    assert json.loads(r.stdout)["count"] >= 1
    timed("status", "--next", "20", m.mnt)
    assert m.stop() == 0
