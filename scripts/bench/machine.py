"""The machine and the tools: cores, memory, versions, page-cache control and process memory."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[2]
_drop_warned = False


def env_without_proxies() -> dict[str, str]:
    """Every client must talk to 127.0.0.1 directly, never through a proxy."""
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def drop_caches() -> bool:
    """sync + drop page cache, dentries and inodes (root only); False when not allowed.

    Dropping also empties the page cache of FUSE mounts, so the next read reaches the daemon.
    """
    global _drop_warned
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as exc:
        if not _drop_warned:
            log.warning("cannot drop the page cache (%s): 'dropped' figures are not cold", exc)
            _drop_warned = True
        return False


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def rss_bytes(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak), RssAnon (the process's own memory) and RssFile (mapped files,
    such as an LMDB index: page cache the kernel can reclaim) of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def rclone_path() -> str | None:
    return shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")


def fio_path() -> str | None:
    return shutil.which("fio")


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _pkg(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    import fsync_fuse

    git = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(REPO), "status", "--porcelain"])
    rc = rclone_path()
    fio = fio_path()
    return {
        "fsync-fuse": fsync_fuse.__version__,
        "git": (git + ("+dirty" if dirty else "")) if git else None,
        "python": platform.python_version(),
        "pyfuse3": _pkg("pyfuse3"),
        "trio": _pkg("trio"),
        "lmdb": _pkg("lmdb"),
        "azure-storage-file-share": _pkg("azure-storage-file-share"),
        "rclone": _first_line([rc, "version"]) if rc else None,
        "fio": _first_line([fio, "--version"]) if fio else None,
        "fusermount3": _first_line(["fusermount3", "--version"]),
        "kernel": platform.release(),
    }


def machine() -> dict[str, object]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_bytes": mem,
        "os": platform.platform(),
        "loadavg_start": os.getloadavg(),
        "page_cache_drop": can_drop_caches(),
    }


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system, all threads) a live process has used so far, or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_file(path: Path, size: int) -> None:
    """A file of `size` random bytes (written 4 MiB at a time)."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(4 << 20, left)
            f.write(os.urandom(n))
            left -= n


def rclone_env(connection_string: str, share: str, config_dir: Path) -> dict[str, str]:
    """rclone's environment: the `bench:` remote (azurefiles) from variables only, no
    config file, no proxies."""
    env = env_without_proxies()
    env.update(
        {
            "RCLONE_CONFIG": str(config_dir / "no-rclone.conf"),
            "RCLONE_CONFIG_BENCH_TYPE": "azurefiles",
            "RCLONE_CONFIG_BENCH_CONNECTION_STRING": connection_string,
            "RCLONE_CONFIG_BENCH_SHARE_NAME": share,
        }
    )
    return env
