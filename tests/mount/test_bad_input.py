"""Bad input to `fsync-fuse mount` fails with one clear line and a non-zero status, in the
foreground and in the background: no usage block, no traceback, the bad value and why.

Every case runs the real command line. The share URL points at a port nobody listens on:
what is checked here must fail before the share is ever asked (a case that got that far
would fail on "cannot reach" instead, and its expected words would be missing).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.mount.helpers import REPO, env, fusermount, have_fuse

pytestmark = pytest.mark.mount

URL = "http://127.0.0.1:9/devstoreaccount1/share"


@pytest.fixture(autouse=True)
def _need_fuse():
    reason = have_fuse()
    if reason:
        pytest.skip(reason)


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fsync_fuse", "mount", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=120,
    )


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory on a read-only filesystem (a small tmpfs mounted ro)."""
    path = tmp_path / "ro"
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {r.stderr!r}")
    yield path
    subprocess.run(["umount", str(path)], capture_output=True)


# (extra arguments, words the one line must hold); {tmp} is the test's directory
CASES = {
    "cache-size-0": (["--cache-size", "0"], ["--cache-size 0", "too small", "at least"]),
    "cache-size-below-minimum": (["--cache-size", "2M"], ["--cache-size 2M", "too small"]),
    "cache-size-invalid": (["--cache-size", "12Q"], ["--cache-size", "'12Q'", "invalid size"]),
    "cache-size-negative": (["--cache-size=-5M"], ["--cache-size", "'-5M'", "invalid size"]),
    "block-size-not-power-of-two": (["--block-size", "3M"], ["--block-size 3M", "power of two"]),
    "block-size-too-big": (["--block-size", "8M"], ["--block-size 8M", "from 4K to 4M"]),
    "block-size-bigger-than-cache": (
        ["--block-size", "4M", "--cache-size", "8M"],
        ["--cache-size 8M", "too small", "blocks of 4M"],
    ),
    "writeback-delay-negative": (
        ["--writeback-delay", "-1"],
        ["--writeback-delay -1", "0 or more"],
    ),
    "io-timeout-zero": (["--io-timeout", "0"], ["--io-timeout 0", "more than 0"]),
    "io-timeout-not-a-number": (["--io-timeout", "soon"], ["--io-timeout", "'soon'"]),
    "poll-interval-nan": (["--poll-interval", "nan"], ["--poll-interval nan", "number"]),
    "poll-interval-negative": (["--poll-interval", "-30"], ["--poll-interval -30", "0 or more"]),
    "attr-timeout-infinite": (["--attr-timeout", "inf"], ["--attr-timeout inf", "number"]),
    "dir-cache-time-negative": (["--dir-cache-time", "-2"], ["--dir-cache-time -2"]),
    "drain-timeout-negative": (["--drain-timeout", "-1"], ["--drain-timeout -1"]),
    "remote-retries-negative": (["--remote-retries", "-3"], ["--remote-retries -3"]),
    "list-ahead-negative": (["--list-ahead", "-1"], ["--list-ahead -1", "0 or more"]),
    "site-name-with-dot": (["--site-name", "a.b"], ["--site-name 'a.b'", "dot"]),
    "site-name-with-slash": (["--site-name", "a/b"], ["--site-name 'a/b'", "forbids"]),
    "fsync-choice": (["--fsync", "sometimes"], ["--fsync", "'sometimes'", "invalid choice"]),
    "unknown-option": (["--cache-sise", "1G"], ["--cache-sise"]),
    "o-option-too-small": (["-o", "cache_size=1K,rw"], ["--cache-size 1K", "too small"]),
    "cache-dir-under-proc": (
        ["--cache-dir", "/proc/fsync-fuse-test/cache"],
        ["/proc/fsync-fuse-test/cache", "cannot create it", "No such file or directory"],
    ),
    "cache-dir-is-proc-self": (
        ["--cache-dir", "/proc/self"],
        ["/proc/self", "cannot create files in it"],
    ),
    "cache-dir-is-a-file": (
        ["--cache-dir", "{tmp}/afile"],
        ["{tmp}/afile", "is not a directory"],
    ),
    "cache-dir-inside-mountpoint": (
        ["--cache-dir", "{tmp}/mnt/cache"],
        ["{tmp}/mnt/cache", "inside the mountpoint"],
    ),
    "log-in-missing-directory": (
        ["--log", "{tmp}/no/such/dir/x.log"],
        ["{tmp}/no/such/dir/x.log", "cannot write it", "No such file or directory"],
    ),
    "key-file-missing": (
        ["--account-key-file", "{tmp}/no-key"],
        ["{tmp}/no-key", "cannot read key file"],
    ),
}


def check_one_line(r: subprocess.CompletedProcess, words: list[str]) -> str:
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("fsync-fuse: error: "), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert r.stdout == ""
    return line


@pytest.mark.parametrize("mode", ["background", "foreground"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(tmp_path, case, mode):
    args, words = CASES[case]
    (tmp_path / "mnt").mkdir()
    (tmp_path / "afile").write_text("x")
    sub = {"{tmp}": str(tmp_path)}

    def fill(text: str) -> str:
        for k, v in sub.items():
            text = text.replace(k, v)
        return text

    cmd = [URL, str(tmp_path / "mnt"), "--cache-dir", str(tmp_path / "cache")]
    cmd += [fill(a) for a in args]
    if mode == "foreground":
        cmd.append("--foreground")
    try:
        r = mount(*cmd)
        check_one_line(r, [fill(w) for w in words])
        assert not os.path.ismount(tmp_path / "mnt")
    finally:
        if os.path.ismount(tmp_path / "mnt"):
            fusermount("-u", "-z", str(tmp_path / "mnt"))


@pytest.mark.parametrize("mode", ["background", "foreground"])
def test_cache_dir_on_a_read_only_filesystem(tmp_path, readonly_dir, mode):
    (tmp_path / "mnt").mkdir()
    for cache in (readonly_dir / "cache", readonly_dir):
        args = [URL, str(tmp_path / "mnt"), "--cache-dir", str(cache)]
        r = mount(*args, *(["--foreground"] if mode == "foreground" else []))
        check_one_line(r, [str(cache), "Read-only file system"])


@pytest.mark.parametrize("mode", ["background", "foreground"])
def test_mountpoint_that_is_a_file(tmp_path, mode):
    (tmp_path / "afile").write_text("x")
    args = [URL, str(tmp_path / "afile"), "--cache-dir", str(tmp_path / "cache")]
    r = mount(*args, *(["--foreground"] if mode == "foreground" else []))
    check_one_line(r, [str(tmp_path / "afile"), "is not a directory"])


def test_cache_size_minimum_counts_an_existing_index(tmp_path):
    """The minimum is measured for a cache directory in use: a grown index raises it."""
    from cache import BlockCache

    c = BlockCache.open(tmp_path / "cache", max_bytes=1 << 30, share_id="s")
    table = c.env.open_db(b"namespace")
    with c.env.begin(write=True, db=table) as txn:
        for i in range(20_000):
            txn.put(i.to_bytes(8, "big"), bytes(900))
    c.close()
    (tmp_path / "mnt").mkdir()
    r = mount(
        URL, str(tmp_path / "mnt"), "--cache-dir", str(tmp_path / "cache"), "--cache-size", "16M"
    )
    line = check_one_line(r, ["--cache-size 16M", "too small", "at least"])
    need = line.split("at least ")[1].split()[0]
    assert need.endswith("M") and float(need[:-1]) > 16 + 10  # 20,000 rows of index counted
