"""`fsync-fuse migrate`: a source tree copied into the share shows, through a mount with an
empty cache, exactly as it was (rsync finds nothing to do); a killed run resumes without
sending a finished file again; reruns send only what changed; names the share cannot hold
are reported or renamed, never lost; nothing on the share is overwritten."""

from __future__ import annotations

import fcntl
import filecmp
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsync_fuse.migration.source import birth_ns
from tests.mount.helpers import REPO, env, eventually
from tests.sas import share_sas

NS = 1_700_000_000_000_000_000  # mtimes below are whole 100 ns: what the share keeps


def migrate(src: Path, url: str, state: Path, *extra: str, timeout: float = 300):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fsync_fuse",
            "migrate",
            str(src),
            url,
            "--state",
            str(state),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env(),
        cwd=REPO,
        timeout=timeout,
    )


def kill_migrate_after(
    emulator, op: str, count: int, src: Path, url: str, state: Path, *, threads: int
) -> None:
    """Start a migrate and SIGKILL it once the emulator has answered `count` more `op`
    requests (as named in its stats)."""
    before = emulator.stats()["by_op"].get(op, 0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsync_fuse", "migrate", str(src), url, "--state", str(state),
         "--threads", str(threads), "-q"],
        env=env(),
        cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while emulator.stats()["by_op"].get(op, 0) - before < count:
            assert proc.poll() is None, "migrate ended before it could be killed"
            assert time.monotonic() < deadline, "migrate made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def set_times(p: Path, i: int) -> None:
    t = NS + i * 1_000_000_100
    os.utime(p, ns=(t, t), follow_symlinks=False)


def make_tree(src: Path, small: int, big: int) -> None:
    (src / "empty dir").mkdir(parents=True)
    (src / "docs" / "deep" / "deeper").mkdir(parents=True)
    for i in range(small):
        d = src / "many" / f"d{i % 20:02}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"file {i:04}.txt"
        p.write_bytes(os.urandom(50 + i % 700))
        os.chown(p, 1000 + i % 3, 2000 + i % 2)
        os.chmod(p, (0o600, 0o644, 0o640, 0o755)[i % 4])
        set_times(p, i)
    (src / "docs" / "ünïcødé ✓.txt").write_text("nämé")
    (src / "docs" / "deep" / "deeper" / "x.bin").write_bytes(os.urandom(4096))
    (src / "big.bin").write_bytes(os.urandom(big))
    os.symlink("docs/ünïcødé ✓.txt", src / "link")
    os.symlink("/nowhere/at all", src / "docs" / "dangling")
    os.mkfifo(src / "docs" / "fifo")
    os.chmod(src / "docs", 0o750)
    os.chown(src / "docs" / "deep", 1234, 5678)
    for i, p in enumerate([*sorted(src.rglob("*"), key=lambda p: -len(p.parts)), src]):
        set_times(p, i)  # files, links, fifos, then directories after their content


def rsync_differences(src: Path, dst: Path) -> list[str]:
    out = subprocess.run(
        ["rsync", "-an", "--itemize-changes", "--numeric-ids", f"{src}/", f"{dst}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_a_migrated_tree_shows_exactly_as_it_was(tmp_path, share_url, share, mounter, emulator):
    if shutil.which("rsync") is None:
        pytest.fail("rsync is missing: scripts/setup.sh installs it for the tests")
    src = tmp_path / "src"
    make_tree(src, small=2000, big=200 * 1024 * 1024 + 5)  # (issue 17: a 200 MiB file)
    root_time = os.stat(src).st_mtime_ns
    (src / "bad:name.txt").write_text("the share forbids ':'")
    os.utime(src, ns=(root_time, root_time))
    report = tmp_path / "report.json"
    r = migrate(src, share_url + "/srv/files", tmp_path / "state", "--report", str(report))
    assert r.returncode == 1, r.stderr  # the invalid name
    rep = json.loads(report.read_text())
    assert rep["invalid"] == [
        {"path": "bad:name.txt", "reason": "contains characters Azure Files forbids (':')"}
    ]
    assert rep["failed"] == [] and rep["copied"] == rep["entries"]
    assert "bad:name.txt" in r.stderr
    # nothing temporary is left on the share
    assert not [p for p in share.walk() if ".fsync-new" in p]
    os.unlink(src / "bad:name.txt")
    os.utime(src, ns=(root_time, root_time))

    m = mounter(share_url)
    target = m.mnt / "srv" / "files"
    assert rsync_differences(src, target) == []
    assert os.readlink(target / "docs" / "dangling") == "/nowhere/at all"
    assert filecmp.cmp(target / "big.bin", src / "big.bin", shallow=False)
    assert m.stop() == 0


def test_a_killed_run_resumes_without_sending_a_finished_file_again(
    tmp_path, share_url, share, emulator
):
    src = tmp_path / "src"
    make_tree(src, small=600, big=40 * 1024 * 1024)
    state = tmp_path / "state"
    before = emulator.stats()["by_op"]
    kill_migrate_after(emulator, "RenameFile", 200, src, share_url, state, threads=4)
    killed = emulator.stats()["by_op"]
    r = migrate(src, share_url, state, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    after = emulator.stats()["by_op"]
    files = rep["files"]
    first = {k: killed.get(k, 0) - before.get(k, 0) for k in ("CreateFile", "RenameFile")}
    second = {k: after.get(k, 0) - killed.get(k, 0) for k in ("CreateFile", "RenameFile")}
    # the rerun made only what the first did not finish (at most the 4 in flight were lost)
    assert second["RenameFile"] <= files - first["RenameFile"] + 4, (first, second, rep)
    assert first["CreateFile"] + second["CreateFile"] <= files + 8, (first, second)
    assert rep["unchanged"] + rep["resumed_finished"] >= first["RenameFile"] - 4
    for p in ("big.bin", "many/d03/file 0003.txt", "docs/deep/deeper/x.bin"):
        assert share.get(p) == (src / p).read_bytes()
    assert not [p for p in share.walk() if ".fsync-new" in p]


def test_a_large_file_resumes_at_its_last_finished_range(tmp_path, share_url, share, emulator):
    """Killed in the middle of a large file, a rerun sends only the ranges the first run did
    not finish (at most the 2 in flight again), and the file's Content-MD5 covers the ranges
    the first run sent too (--verify)."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(12 * 4 * 1024 * 1024)  # 12 ranges
    (src / "big.bin").write_bytes(data)
    state = tmp_path / "state"
    before = emulator.stats()["by_op"].get("PutRange", 0)
    emulator.set_faults(latency_ms=100)  # time to kill it between ranges
    try:
        kill_migrate_after(emulator, "PutRange", 5, src, share_url, state, threads=2)
    finally:
        emulator.clear_faults()
    first = emulator.stats()["by_op"].get("PutRange", 0) - before
    assert 5 <= first < 12
    r = migrate(src, share_url, state, "--verify", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    second = emulator.stats()["by_op"].get("PutRange", 0) - before - first
    assert 12 - first <= second <= 12 - first + 2, (first, second)
    assert rep["verified"] == 1 and rep["mismatched"] == [], rep
    assert share.get("big.bin") == data
    assert not [p for p in share.walk() if ".fsync-new" in p]


def test_reruns_send_only_changes_and_never_overwrite_others(tmp_path, share_url, share, emulator):
    src = tmp_path / "src"
    make_tree(src, small=30, big=5 * 1024 * 1024)
    state = tmp_path / "state"
    assert migrate(src, share_url, state).returncode == 0
    before = emulator.stats()["by_op"]
    r = migrate(src, share_url, state, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["copied"] == 0
    idle = emulator.stats()["by_op"]
    # nothing changed: the one call that checks the share and the credentials, nothing else
    calls = {k: idle[k] - before.get(k, 0) for k in idle if idle[k] != before.get(k, 0)}
    assert calls == {"GetDirectoryProperties": 1}, calls

    (src / "many" / "d01" / "file 0001.txt").write_bytes(b"changed")
    (src / "new.txt").write_bytes(b"new")
    os.unlink(src / "many" / "d02" / "file 0002.txt")
    share.put("theirs.txt", b"made on the share by someone else")
    (src / "theirs.txt").write_bytes(b"ours, same name")
    idle = emulator.stats()["by_op"]
    r = migrate(src, share_url, state, "--json", "--delete")
    rep = json.loads(r.stdout)
    assert r.returncode == 1  # theirs.txt is left alone, and reported
    assert [f["path"] for f in rep["failed"]] == ["theirs.txt"]
    assert share.get("theirs.txt") == b"made on the share by someone else"
    assert share.get("many/d01/file 0001.txt") == b"changed"
    assert share.get("new.txt") == b"new"
    assert not share.exists("many/d02/file 0002.txt")
    assert rep["deleted"] == 1
    # only the changed and new files went out (and the directories they changed)
    delta = {k: v - idle.get(k, 0) for k, v in emulator.stats()["by_op"].items()}
    assert delta.get("CreateFile", 0) == 3 and delta.get("PutRange", 0) == 3, delta


def test_rename_invalid_gives_safe_names_and_reports_them(tmp_path, share_url, share):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a:b.txt", "trailing.", "Case.txt", "case.txt", "CON", "x?y"):
        (src / name).write_text(name)
    (src / "dir*").mkdir()
    (src / "dir*" / "inside.txt").write_text("inside")
    r = migrate(src, share_url, tmp_path / "state", "--rename-invalid", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    mapped = {x["path"]: x["share_path"] for x in rep["renamed"]}
    assert mapped == {
        "a:b.txt": "a_b.txt",
        "trailing.": "trailing_",
        "case.txt": "case (2).txt",
        "CON": "_CON",
        "x?y": "x_y",
        "dir*": "dir_",
    }
    for path, there in mapped.items():
        if path != "dir*":
            assert share.get(there) == path.encode()
    assert share.get("dir_/inside.txt") == b"inside"
    assert share.get("Case.txt") == b"Case.txt"


def test_bad_input_is_one_clear_line(tmp_path, share_url, share):
    f = tmp_path / "file"
    f.write_text("x")
    r = migrate(f, share_url, tmp_path / "state")
    assert r.returncode == 2 and r.stderr.strip().endswith("not a directory"), r.stderr
    share.put("plain", b"a file")
    (tmp_path / "src").mkdir()
    r = migrate(tmp_path / "src", share_url + "/plain", tmp_path / "state")
    assert r.returncode == 2 and "is a file, not a directory" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = migrate(tmp_path / "src", share_url.rsplit("/", 1)[0] + "/nosuchshare", tmp_path / "state")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_watch_follows_creates_changes_and_renames(tmp_path, share_url, share):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_bytes(b"first")
    (src / "b.txt").write_bytes(b"old content")
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsync_fuse", "migrate", str(src), share_url, "--state",
         str(tmp_path / "state"), "--watch", "--delete", "--report", str(report)],
        env=env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the first pass is over once it says it is watching
            if "watching" in line:
                break
        else:
            pytest.fail(f"migrate --watch ended: {proc.wait()}")
        (src / "sub" / "new dir").mkdir()
        (src / "sub" / "new dir" / "c.txt").write_bytes(b"created")
        (src / "b.txt").write_bytes(b"new content")
        os.rename(src / "sub" / "a.txt", src / "renamed.txt")

        def share_follows() -> bool:
            return (
                share.exists("sub/new dir/c.txt")
                and share.exists("renamed.txt")
                and not share.exists("sub/a.txt")
                and share.get("b.txt") == b"new content"
            )

        eventually(share_follows, timeout=30, what="the share to follow the source")
        assert share.get("renamed.txt") == b"first"
        assert share.get("sub/new dir/c.txt") == b"created"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rep = json.loads(report.read_text())
        assert rep["watch_rounds"] >= 1 and rep["deleted"] >= 1 and rep["failed"] == []
    finally:
        proc.kill()
        proc.wait()


def test_cutover_makes_the_source_the_mounts_cache(tmp_path, share_url, share, mounter, emulator):
    """After --cutover, a mount on the cache directory reads the whole tree with no download
    of file content (the emulator counts no GetFile)."""
    src = tmp_path / "src"
    make_tree(src, small=120, big=9 * 1024 * 1024 + 17)
    cache = tmp_path / "cache"
    assert migrate(src, share_url, tmp_path / "state").returncode == 0  # while users work
    (src / "late.txt").write_bytes(b"written before the cutover")
    r = migrate(src, share_url, tmp_path / "state", "--cutover", "--cache-dir", str(cache),
                "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["copied"] >= 1 and rep["cutover"]["files"] == 120 + 4
    assert rep["cutover"]["from_share_bytes"] == 0
    m = mounter(share_url, cache="cache")
    # a second cutover into the cache of a running mount is refused in one line
    r = migrate(src, share_url, tmp_path / "state", "--cutover", "--cache-dir", str(cache))
    assert r.returncode == 2 and "in use by a mount" in r.stderr, r.stderr
    before = emulator.stats()["by_op"].get("GetFile", 0)
    for p in sorted(src.rglob("*")):
        if p.is_file() and not p.is_symlink():
            rel = p.relative_to(src)
            assert (m.mnt / rel).read_bytes() == p.read_bytes(), rel
    assert emulator.stats()["by_op"].get("GetFile", 0) == before
    assert m.stop() == 0


FIEMAP = 0xC020660B
FIEMAP_EXTENT_SHARED = 0x2000


def extents(path: Path) -> list[tuple[int, int, int]]:
    """(logical offset, length, flags) of a file's extents, from the FIEMAP ioctl."""
    count = 64
    buf = bytearray(struct.pack("QQIIII", 0, 2**64 - 1, 1, 0, count, 0) + bytes(56 * count))
    with open(path, "rb") as fh:  # FIEMAP_FLAG_SYNC: delayed allocations first
        fcntl.ioctl(fh.fileno(), FIEMAP, buf)
    mapped = struct.unpack_from("QQIIII", buf)[3]
    out = []
    for i in range(mapped):
        logical, _physical, length, _r1, _r2, flags = struct.unpack_from("QQQQQI", buf, 32 + 56 * i)
        out.append((logical, length, flags))
    return out


@pytest.fixture
def xfs(tmp_path):
    """A fresh XFS filesystem with reflinks, loop-mounted at tmp_path/xfs."""
    image, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(512 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_cutover_on_xfs_shares_the_sources_extents(xfs, share_url, mounter, emulator):
    """With the source and the cache directory on one XFS filesystem, the cutover fills the
    cache by reflink: the cache's data files share every extent with the source (the data
    takes no second copy of space), and a mount serves them with no download."""
    src = xfs / "src"
    make_tree(src, small=30, big=6 * 1024 * 1024 + 5)
    r = migrate(src, share_url, xfs / "state", "--cutover", "--cache-dir", str(xfs / "cache"),
                "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cutover"]["from_share_bytes"] == 0
    datafiles = [p for p in (xfs / "cache" / "data").rglob("*") if p.is_file()]
    big = max(datafiles, key=lambda p: p.stat().st_size)
    assert big.stat().st_size == (src / "big.bin").stat().st_size
    ext = extents(big)
    assert sum(n for _o, n, _f in ext) >= big.stat().st_size - 4096
    assert all(f & FIEMAP_EXTENT_SHARED for _o, _n, f in ext), ext
    m = mounter(share_url, cache="xfs/cache")
    before = emulator.stats()["by_op"].get("GetFile", 0)
    assert filecmp.cmp(m.mnt / "big.bin", src / "big.bin", shallow=False)
    assert (m.mnt / "many/d03/file 0003.txt").read_bytes() == (
        src / "many/d03/file 0003.txt"
    ).read_bytes()
    assert emulator.stats()["by_op"].get("GetFile", 0) == before
    assert m.stop() == 0


def test_verify_compares_content_checksums(tmp_path, share_url, share):
    src = tmp_path / "src"
    make_tree(src, small=40, big=6 * 1024 * 1024 + 3)
    state = tmp_path / "state"
    r = migrate(src, share_url, state, "--verify", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["verified"] == 40 + 3 and rep["mismatched"] == []  # + ünïcødé, x.bin, big.bin
    # creation times follow the source's birth times, where its filesystem keeps them
    for rel in ("docs/deep/deeper/x.bin", "big.bin"):
        born = birth_ns(os.fsencode(src / rel))
        if born is None:  # (a filesystem without them: the share's is the copy's time)
            continue
        got = share.props(rel).creation_time.timestamp()
        assert abs(got - born / 1e9) < 1e-5, (rel, got, born)
    # the share's copy changes behind the migration's back (same size): --verify sees it
    share.put("many/d05/file 0005.txt", bytes(len(share.get("many/d05/file 0005.txt"))))
    r = migrate(src, share_url, state, "--verify", "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert [m["path"] for m in rep["mismatched"]] == ["many/d05/file 0005.txt"]
    assert rep["verified"] == 42


def test_credentials_without_write_rights_are_one_line(tmp_path, emulator, share_name):
    src = tmp_path / "src"
    make_tree(src, small=5, big=5 * 1024 * 1024)
    sas = share_sas(share_name, read=True, list=True)
    r = migrate(src, f"{emulator.share_url(share_name)}/t?{sas}", tmp_path / "state")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]  # (after the progress line)
    assert last.startswith("fsync-fuse: error:") and "do the credentials allow writing?" in last
    assert "sig=" not in r.stderr  # the SAS never shows
