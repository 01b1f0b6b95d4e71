"""`--metrics ADDR:PORT`: a real mount serves the documented Prometheus series, and their
values move as the test reads and writes. (Needs part F: the option, Metrics started in
Mount.run, the uploader's counters.)"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

import pytest

from tests.emulator_proc import free_port
from tests.mount.helpers import REPO, eventually, read, write

pytestmark = pytest.mark.mount

MiB = 1 << 20


def documented() -> list[str]:
    """The series README.md's metrics table names (`fsync_fuse_...` in its first column)."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(fsync_fuse_[a-z_]+)", section, re.M)


def scrape(port: int) -> tuple[set[str], dict[str, float]]:
    """(series named in `# TYPE` lines, sample -> value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    types = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return types, samples


def uncache(path) -> None:
    """Drop the kernel's page cache of a file (its reads then reach the daemon again)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_metrics_serve_the_documented_series_and_move(mounter, share, share_url):
    names = documented()
    assert len(names) >= 25, names
    data = os.urandom(3 * MiB)
    share.put("a.bin", data)
    port = free_port()
    m = mounter(
        share_url,
        args=["--metrics", f"127.0.0.1:{port}", "--cache-size", "64M", "--writeback-delay", "1"],
    )
    types, s0 = scrape(port)
    missing = [n for n in names if n not in types and n.removesuffix("_total") not in types]
    assert not missing, f"documented but not served: {missing}"
    assert s0["fsync_fuse_share_reachable"] == 1
    assert s0["fsync_fuse_cache_bound_bytes"] == 64 * MiB

    assert read(m.mnt / "a.bin") == data  # misses: fetched from the share
    _, s1 = scrape(port)
    assert s1["fsync_fuse_cache_misses_total"] > s0["fsync_fuse_cache_misses_total"]
    assert s1["fsync_fuse_recall_bytes_total"] >= s0["fsync_fuse_recall_bytes_total"] + 3 * MiB
    assert s1["fsync_fuse_recall_seconds_count"] > s0["fsync_fuse_recall_seconds_count"]
    assert s1["fsync_fuse_cache_data_bytes"] >= 3 * MiB
    assert s1['fsync_fuse_remote_calls_total{operation="download"}'] >= 1

    uncache(m.mnt / "a.bin")  # so the next read reaches the daemon
    assert read(m.mnt / "a.bin") == data  # hits now
    _, s2 = scrape(port)
    assert s2["fsync_fuse_cache_hits_total"] > s1["fsync_fuse_cache_hits_total"]
    assert s2["fsync_fuse_cache_hit_bytes_total"] >= s1["fsync_fuse_cache_hit_bytes_total"] + MiB
    assert s2["fsync_fuse_recall_bytes_total"] == s1["fsync_fuse_recall_bytes_total"]

    write(m.mnt / "b.bin", os.urandom(2 * MiB))
    _, s3 = scrape(port)
    assert s3["fsync_fuse_dirty_files"] >= 1 and s3["fsync_fuse_dirty_bytes"] >= 2 * MiB
    m.wait_drained()
    s4 = eventually(
        lambda: (s := scrape(port)[1])["fsync_fuse_upload_files_total"] >= 1 and s,
        what="the upload counted",
    )
    assert s4["fsync_fuse_upload_bytes_total"] >= s3["fsync_fuse_upload_bytes_total"] + 2 * MiB
    assert s4["fsync_fuse_dirty_files"] == 0

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert err.value.code == 404
    assert m.stop() == 0


def test_the_dashboard_uses_documented_series():
    """examples/grafana-dashboard.json queries only series README.md documents."""
    import json

    dash = json.loads((REPO / "examples/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", n)
        for e in exprs
        for n in re.findall(r"fsync_fuse_\w+", e)
    }
    assert used and used <= set(documented()), used - set(documented())
