"""A real mount as a subprocess, and share access through the SDK, for the mount tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        e.pop(k, None)
    e["NO_PROXY"] = e["no_proxy"] = "127.0.0.1,localhost"
    e["PYTHONPATH"] = str(REPO)
    return e


def fusermount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["fusermount3", *args], capture_output=True, text=True)


class Mount:
    """`python -m fsync_fuse mount URL MNT --foreground --cache-dir DIR ...`."""

    def __init__(self, url: str, mnt: Path, cache_dir: Path, log: Path, args: list[str]):
        self.url, self.mnt, self.cache_dir, self.log_path = url, mnt, cache_dir, log
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Mount:
        self.mnt.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [
            sys.executable,
            "-m",
            "fsync_fuse",
            "mount",
            self.url,
            str(self.mnt),
            "--foreground",
            "--cache-dir",
            str(self.cache_dir),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env())
        log.close()
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.abort()
                raise RuntimeError(f"mount not up within {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pending(self) -> dict:
        return json.loads(os.getxattr(self.mnt, "user.fsync.pending"))

    def wait_drained(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.pending()
            if not st["files"] and not st["ops"]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not drained in {timeout}s: {st}\n{self.log()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 120.0) -> int:
        """Unmount with fusermount3 -u and wait for the daemon; returns its exit status."""
        assert self.proc is not None
        for _ in range(50):
            r = fusermount("-u", str(self.mnt))
            if r.returncode == 0 or not os.path.ismount(self.mnt):
                break
            time.sleep(0.1)  # EBUSY while a just-closed file is being released
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.abort()
            raise AssertionError(f"daemon did not exit after unmount:\n{self.log()}") from None

    def sync_now(self, timeout: float = 60.0) -> None:
        """`fsync-fuse sync-now MOUNTPOINT`: re-list everything now; asserts it succeeded."""
        r = subprocess.run(
            [sys.executable, "-m", "fsync_fuse", "sync-now", str(self.mnt)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env(),
            timeout=timeout,
        )
        assert r.returncode == 0, r.stderr

    def cli_unmount(self, *extra: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [sys.executable, "-m", "fsync_fuse", "unmount", str(self.mnt), *extra],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env(),
            timeout=timeout,
        )
        return r

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        fusermount("-u", "-z", str(self.mnt))

    def abort(self) -> None:
        """Cleanup of last resort: lazy unmount, terminate, kill."""
        if os.path.ismount(self.mnt) or self._stale():
            fusermount("-u", "-z", str(self.mnt))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _stale(self) -> bool:
        try:
            os.stat(self.mnt)
            return False
        except OSError:
            return True


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def disk_usage(path: Path) -> int:
    """Real bytes allocated under a directory (sparse files count what they use)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class Share:
    """The share through the SDK (synchronous), as another client would see it."""

    def __init__(self, connection_string: str, name: str):
        from azure.storage.fileshare import ShareServiceClient

        self.client = ShareServiceClient.from_connection_string(connection_string).get_share_client(
            name
        )
        self._cs, self._name = connection_string, name

    def delete_snapshot(self, snapshot: str) -> None:
        from azure.storage.fileshare import ShareClient

        ShareClient.from_connection_string(self._cs, self._name, snapshot=snapshot).delete_share()

    def put(self, path: str, data: bytes) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            try:
                self.client.create_directory("/".join(parts[:i]))
            except Exception:  # noqa: BLE001 - exists already
                pass
        self.client.get_file_client(path).upload_file(data, max_concurrency=4)

    def get(self, path: str) -> bytes:
        return self.client.get_file_client(path).download_file(max_concurrency=4).readall()

    def set_mtime(self, path: str, seconds: float) -> None:
        """Set a file's SMB last-write time (the mtime mounts show)."""
        from datetime import datetime

        from azure.storage.fileshare import ContentSettings

        self.client.get_file_client(path).set_http_headers(
            ContentSettings(), file_last_write_time=datetime.fromtimestamp(seconds, tz=UTC)
        )

    def props(self, path: str):
        return self.client.get_file_client(path).get_file_properties()

    def attributes(self, path: str) -> set[str]:
        """A file's SMB attributes as a Windows client of the share sees them."""
        raw = str(self.props(path).file_attributes)
        return {p.strip() for p in raw.split("|") if p.strip()}

    def set_attributes(self, path: str, names: set[str]) -> None:
        """Set a file's SMB attributes (`attrib +r` by a Windows client of the share)."""
        from azure.storage.fileshare import ContentSettings

        self.client.get_file_client(path).set_http_headers(
            ContentSettings(),
            file_attributes="|".join(sorted(names)) or "None",
            file_creation_time="preserve",
            file_last_write_time="preserve",
            file_permission="preserve",
        )

    def dir_props(self, path: str):
        return self.client.get_directory_client(path).get_directory_properties()

    def exists(self, path: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.get_file_client(path).get_file_properties()
            return True
        except ResourceNotFoundError:
            try:
                self.client.get_directory_client(path).get_directory_properties()
                return True
            except ResourceNotFoundError:
                return False

    def walk(self, path: str = "") -> dict[str, bool]:
        """Every path under `path` -> is_dir."""
        out: dict[str, bool] = {}
        for e in self.client.get_directory_client(path).list_directories_and_files():
            p = f"{path}/{e['name']}" if path else e["name"]
            out[p] = e["is_directory"]
            if e["is_directory"]:
                out.update(self.walk(p))
        return out


def have_fuse() -> str | None:
    """Why mount tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "mount tests need root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("fusermount3"):
        return "fusermount3 is not installed"
    return None


def eventually(check, timeout: float = 15.0, what: str = ""):
    """Poll `check` until it returns a truthy value (or stops raising); fail after timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, AssertionError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what} (last: {last!r})")
        time.sleep(0.1)


def read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write(path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as fh:
        fh.write(data)
