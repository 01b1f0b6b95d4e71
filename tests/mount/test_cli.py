"""The command line: background mounts come up or fail with one clear line; unmount; the
`mount -t fuse.fsync-fuse` form."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.mount.helpers import REPO, env, fusermount, have_fuse

pytestmark = pytest.mark.mount


@pytest.fixture(autouse=True)
def _need_fuse():
    reason = have_fuse()
    if reason:
        pytest.skip(reason)


def fsync_fuse(*args: str, timeout: float = 60, extra_env=None) -> subprocess.CompletedProcess:
    e = env()
    e.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "fsync_fuse", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=e,
        timeout=timeout,
    )


@pytest.fixture
def mnt(tmp_path):
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    if os.path.ismount(path):
        fusermount("-u", "-z", str(path))


def test_daemon_mount_and_unmount(emulator, share_name, mnt, tmp_path):
    url = emulator.share_url(share_name)
    r = fsync_fuse(
        "mount", url, str(mnt), "--cache-dir", str(tmp_path / "c"), "--cache-size", "64M"
    )
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mnt)  # ready when the command returned
    (mnt / "hello").write_bytes(b"hi")
    assert (tmp_path / "c" / "fsync-fuse.log").exists()
    assert oct(os.stat(tmp_path / "c").st_mode & 0o777) == "0o700"
    # a second mount on the same mountpoint fails clearly
    r2 = fsync_fuse("mount", url, str(mnt), "--cache-dir", str(tmp_path / "c2"))
    assert r2.returncode != 0 and "already a mount point" in r2.stderr
    r = fsync_fuse("unmount", str(mnt))
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(mnt)
    from tests.mount.helpers import Share

    assert Share(emulator.connection_string, share_name).get("hello") == b"hi"


@pytest.mark.parametrize("case", ["bad-key", "missing-share", "not-empty", "no-mountpoint"])
def test_mount_fails_clearly(emulator, share_name, mnt, tmp_path, case):
    url = emulator.share_url(share_name)
    args = ["mount", url, str(mnt), "--cache-dir", str(tmp_path / "c")]
    extra = {}
    if case == "bad-key":
        extra["AZURE_STORAGE_KEY"] = "d3Jvbmcga2V5IGZvciB0aGlzIGFjY291bnQ="
    elif case == "missing-share":
        args[1] = emulator.share_url("no-such-share")
    elif case == "not-empty":
        (mnt / "something").write_text("x")
    elif case == "no-mountpoint":
        args[2] = str(tmp_path / "nowhere")
    t0 = time.monotonic()
    r = fsync_fuse(*args, extra_env=extra)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fsync-fuse: error:"), r.stderr
    word = {
        "bad-key": "authentication",
        "missing-share": "not found",
        "not-empty": "not empty",
        "no-mountpoint": "does not exist",
    }[case]
    assert word in lines[0]
    assert "d3Jvbmcga2V5" not in r.stderr  # never echo a secret
    assert not os.path.ismount(mnt)
    assert time.monotonic() - t0 < 50


@pytest.mark.parametrize("case", ["bad-key", "missing-share"])
def test_mount_fails_clearly_in_the_foreground(emulator, share_name, mnt, tmp_path, case):
    """In the foreground stderr is the log: a failure to come up is still one line, the same
    as in the background (not a log record among others)."""
    url = emulator.share_url(share_name)
    extra = {}
    if case == "bad-key":
        extra["AZURE_STORAGE_KEY"] = "d3Jvbmcga2V5IGZvciB0aGlzIGFjY291bnQ="
    else:
        url = emulator.share_url("no-such-share")
    r = fsync_fuse(
        "mount", url, str(mnt), "--cache-dir", str(tmp_path / "c"), "--foreground", extra_env=extra
    )
    assert r.returncode != 0
    assert r.stderr.splitlines() == [r.stderr.strip()], r.stderr
    word = {"bad-key": "authentication", "missing-share": "not found"}[case]
    assert r.stderr.startswith("fsync-fuse: error: ") and word in r.stderr, r.stderr
    assert "d3Jvbmcga2V5" not in r.stderr
    assert not os.path.ismount(mnt)


@pytest.mark.skipif(not shutil.which("mount"), reason="no mount(8)")
def test_mount_t_fuse_type(emulator, share_name, mnt, tmp_path):
    """mount.fuse3 runs `fsync-fuse SOURCE DIR -o OPTS` for `mount -t fuse.fsync-fuse`
    (looking `fsync-fuse` up in mount's sanitized PATH) and `PROG SOURCE DIR -o OPTS` for
    `mount -t fuse PROG#SOURCE`; the second form lets the test use a wrapper anywhere."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "fsync-fuse"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m fsync_fuse "$@"\n')
    wrapper.chmod(0o755)
    e = env()
    e["PATH"] = f"{bindir}:{e['PATH']}"
    url = emulator.share_url(share_name)
    r = subprocess.run(
        [
            "mount",
            "-t",
            "fuse",
            f"{wrapper}#{url}",
            str(mnt),
            "-o",
            f"cache_size=32M,cache_dir={tmp_path / 'c'},writeback_delay=0.5,noatime",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=e,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert os.path.ismount(mnt)
    (mnt / "via-mount").write_bytes(b"ok")
    r = fsync_fuse("unmount", str(mnt))
    assert r.returncode == 0, r.stderr


def test_a_command_module_that_cannot_be_imported_fails_loudly(monkeypatch):
    """A mistyped or broken command module must not silently drop its command."""
    from fsync_fuse import cli

    shown = cli.build_parser().format_help()
    assert all(name in shown for name in ("mount", "unmount", "sync-now", "emulator"))
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "fsync_fuse.commands.no_such_command"])
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()
