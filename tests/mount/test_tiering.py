"""Tiering policies through real mounts: the initial download of a replacement machine, the
date policy, the free-space policy, proactive recall of files changed elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.mount.helpers import REPO, env, eventually, read, write

pytestmark = pytest.mark.mount

MiB = 1 << 20


def state(path) -> str:
    return os.getxattr(path, "user.fsync.state").decode()


def test_initial_download_recent_newest_first(mounter, share, share_url):
    """A replacement machine serves `ls` at once, then recalls the most recently modified
    files first, until 90% of the cache: what is local is exactly the newest files."""
    n = 30
    for i in range(n):
        share.put(f"d{i % 3}/f{i:02d}.bin", bytes([i]) * MiB)
        share.set_mtime(f"d{i % 3}/f{i:02d}.bin", 1_600_000_000 + i * 3600)  # f29 newest
    m = mounter(share_url, args=["--cache-size", "16M", "--initial-download", "recent"])
    assert sorted(os.listdir(m.mnt)) == ["d0", "d1", "d2"]  # the namespace at once

    def files() -> list[str]:
        return [f"d{i % 3}/f{i:02d}.bin" for i in range(n)]

    def settled() -> bool:
        st = [state(m.mnt / p) for p in files()]
        return "local" in st and not any(s == "partial" for s in st)

    eventually(settled, timeout=60, what="initial download")
    eventually(lambda: m.log().count("initial download (recent) done") > 0, timeout=60)
    local = [i for i, p in enumerate(files()) if state(m.mnt / p) == "local"]
    assert local, "nothing was recalled"
    assert local == list(range(n - len(local), n)), local  # the newest, none older
    assert len(local) < n  # 16M does not hold all 30
    assert m.stop() == 0


def test_date_policy_tiers_unused_content(mounter, share, share_url):
    """--tier-after 2s: content not used for 2 s is tiered; a dirty file and a pinned one
    stay."""
    share.put("cold.bin", b"c" * (3 * MiB))
    share.put("pinned.bin", b"p" * MiB)
    m = mounter(share_url, args=["--tier-after", "2s", "--writeback-delay", "60"])
    assert read(m.mnt / "cold.bin") == b"c" * (3 * MiB)
    assert state(m.mnt / "cold.bin") == "local"
    subprocess.run(
        [sys.executable, "-m", "fsync_fuse", "pin", str(m.mnt / "pinned.bin")],
        check=True,
        capture_output=True,
        cwd=REPO,
        env=env(),
    )
    write(m.mnt / "dirty.bin", b"d" * MiB)
    eventually(lambda: state(m.mnt / "cold.bin") == "tiered", timeout=30, what="tiered")
    assert state(m.mnt / "dirty.bin").startswith("dirty")
    assert state(m.mnt / "pinned.bin") == "local,pinned"
    assert read(m.mnt / "cold.bin") == b"c" * (3 * MiB)  # fetched again on demand
    assert m.stop() == 0


def test_free_space_policy_on_a_small_volume(mounter, share, share_url, tmp_path):
    """--min-free-space 50 on a 64 MiB tmpfs: when something else fills the volume, the
    cache gives its clean content back."""
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(vol)], check=True)
    try:
        for i in range(3):
            share.put(f"f{i}.bin", bytes([i]) * (4 * MiB))
        m = mounter(
            share_url,
            cache="vol/cache",
            args=["--cache-size", "32M", "--min-free-space", "50"],
        )
        for i in range(3):
            assert read(m.mnt / f"f{i}.bin") == bytes([i]) * (4 * MiB)
        assert all(state(m.mnt / f"f{i}.bin") == "local" for i in range(3))
        (vol / "filler").write_bytes(b"x" * (24 * MiB))  # the volume is now ~60% used
        eventually(
            lambda: sum(state(m.mnt / f"f{i}.bin") != "local" for i in range(3)) >= 1,
            timeout=30,
            what="eviction under the free-space policy",
        )
        st = os.statvfs(vol)
        assert st.f_bavail / st.f_blocks >= 0.45  # near the floor (the bound is 50%)
        assert m.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


def test_proactive_recall_of_a_file_changed_elsewhere(mounter, share, share_url):
    """Site B used f; site A changes it; B's poll sees it and fetches the new version in the
    background, so B's next open is local."""
    fast = ["--poll-interval", "1", "--attr-timeout", "1", "--writeback-delay", "0.1"]
    share.put("f.bin", b"1" * MiB)
    a = mounter(share_url, "a", "cache-a", [*fast, "--site-name", "a"])
    b = mounter(share_url, "b", "cache-b", [*fast, "--site-name", "b", "--proactive-recall"])
    assert read(b.mnt / "f.bin") == b"1" * MiB
    write(a.mnt / "f.bin", b"2" * MiB)
    a.wait_drained()
    eventually(lambda: share.get("f.bin") == b"2" * MiB, what="A's upload")
    new = share.props("f.bin").last_write_time.timestamp()
    # B's poll notices the change (its listing drops the old copy: the mtime moves) ...
    eventually(
        lambda: abs(os.stat(b.mnt / "f.bin").st_mtime - new) < 1e-3,
        timeout=30,
        what="the change seen at B",
    )
    # ... and the new version becomes local without anyone reading it
    eventually(lambda: state(b.mnt / "f.bin") == "local", timeout=30, what="the new version")
    assert read(b.mnt / "f.bin") == b"2" * MiB
    assert a.stop() == 0 and b.stop() == 0
