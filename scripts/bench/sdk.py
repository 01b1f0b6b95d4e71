"""Direct SDK transfers against the emulator: the network limit every mount is compared with.

Parallel ranged GET/PUT (trio nursery, blocking SDK calls in trio.to_thread under a capacity
limiter), recursive listing, and whole-tree upload/download. The same helpers measure the
emulator alone (to memory, no local disk), so a slow emulator is never blamed on a mount.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import requests
import trio
from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.fileshare import ShareClient, ShareServiceClient

MiB = 1 << 20


def _transport(pool: int) -> RequestsTransport:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # loopback only: never a proxy
    # azure-core's default socket read is 4 KiB (the storage SDK's own transport uses 256 KiB):
    # read each 4 MiB body in one piece so this reference is the network limit, not a handicap.
    return RequestsTransport(
        session=session, session_owner=True, connection_data_block_size=4 * MiB
    )


@dataclass
class Sdk:
    connection_string: str
    share_name: str
    concurrency: int = 8
    chunk: int = 4 * MiB

    def __post_init__(self) -> None:
        self.share = ShareClient.from_connection_string(
            self.connection_string,
            self.share_name,
            transport=_transport(max(32, self.concurrency * 2)),
        )

    def service(self) -> ShareServiceClient:
        return ShareServiceClient.from_connection_string(self.connection_string)

    # ------------------------------------------------------------------ helpers
    def _run(self, fn: Callable[..., object], items: list, limit: int | None = None) -> None:
        """fn(item) for every item, `limit` at a time; the first error propagates."""

        async def main() -> None:
            limiter = trio.CapacityLimiter(limit or self.concurrency)
            async with trio.open_nursery() as nursery:
                for item in items:
                    nursery.start_soon(partial(trio.to_thread.run_sync, fn, item, limiter=limiter))

        trio.run(main)

    def ensure_dirs(self, path: str) -> None:
        """Create every directory of a/b/c (existing ones are fine)."""
        parts = [p for p in path.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            try:
                self.share.get_directory_client("/".join(parts[:i])).create_directory()
            except ResourceExistsError:
                pass

    def size_of(self, path: str) -> int | None:
        try:
            return int(self.share.get_file_client(path).get_file_properties().size)
        except Exception:  # noqa: BLE001 - absent or not yet created
            return None

    def sha256_of(self, path: str) -> str:
        """Content hash of a file on the share, chunk by chunk in parallel (untimed checks)."""
        size = self.size_of(path) or 0
        chunks: dict[int, bytes] = {}
        fc = self.share.get_file_client(path)

        def get(off: int) -> None:
            chunks[off] = fc.download_file(off, min(self.chunk, size - off)).readall()

        self._run(get, list(range(0, size, self.chunk)))
        h = hashlib.sha256()
        for off in sorted(chunks):
            h.update(chunks[off])
        return h.hexdigest()

    # ------------------------------------------------------------------ big files
    def download(self, path: str, dest: Path | None) -> int:
        """Parallel ranged GETs of the whole file into `dest` (or into memory only)."""
        size = self.size_of(path)
        if size is None:
            raise FileNotFoundError(path)
        fc = self.share.get_file_client(path)
        fd = -1
        if dest is not None:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, size)
        try:

            def get(off: int) -> None:
                data = fc.download_file(off, min(self.chunk, size - off)).readall()
                if fd >= 0:
                    os.pwrite(fd, data, off)

            self._run(get, list(range(0, size, self.chunk)))
        finally:
            if fd >= 0:
                os.close(fd)
        return size

    def upload(self, src: Path | bytes, path: str) -> int:
        """Create the file at its full size, then parallel Put Range (<= 4 MiB each)."""
        size = len(src) if isinstance(src, bytes) else os.path.getsize(src)
        parent = path.rpartition("/")[0]
        if parent:
            self.ensure_dirs(parent)
        fc = self.share.get_file_client(path)
        fc.create_file(size)
        fd = os.open(src, os.O_RDONLY) if not isinstance(src, bytes) else -1
        try:

            def put(off: int) -> None:
                n = min(self.chunk, size - off)
                data = os.pread(fd, n, off) if fd >= 0 else src[off : off + n]
                fc.upload_range(data, offset=off, length=n)

            self._run(put, list(range(0, size, self.chunk)))
        finally:
            if fd >= 0:
                os.close(fd)
        return size

    def random_reads(
        self, path: str, size: int, bs: int, count: int, runtime: float, seed: int = 42
    ) -> tuple[int, float]:
        """One ranged GET of `bs` at a time at random aligned offsets: (reads done, seconds)."""
        rng = random.Random(seed)
        fc = self.share.get_file_client(path)
        blocks = size // bs
        done = 0
        t0 = time.perf_counter()
        while done < count and time.perf_counter() - t0 < runtime:
            off = rng.randrange(blocks) * bs
            data = fc.download_file(off, bs).readall()
            if len(data) != bs:
                raise OSError(f"short ranged GET at {off}: {len(data)} bytes")
            done += 1
        return done, time.perf_counter() - t0

    # ------------------------------------------------------------------ trees
    def list_tree(self, root: str, concurrency: int | None = None) -> dict[str, int]:
        """Recursive listing with timestamps (what `find` + `stat` needs), directories in
        parallel. Returns counts of entries, files and bytes below `root`."""
        totals = {"entries": 0, "files": 0, "bytes": 0}
        limit = concurrency or self.concurrency

        def list_one(path: str) -> tuple[list[str], int, int, int]:
            subdirs: list[str] = []
            entries = files = nbytes = 0
            dc = self.share.get_directory_client(path)
            for item in dc.list_directories_and_files(include=["timestamps"]):
                entries += 1
                if item["is_directory"]:
                    subdirs.append(f"{path}/{item['name']}" if path else item["name"])
                else:
                    files += 1
                    nbytes += int(item["size"])
            return subdirs, entries, files, nbytes

        async def main() -> None:
            limiter = trio.CapacityLimiter(limit)

            async def visit(path: str, nursery: trio.Nursery) -> None:
                subdirs, entries, files, nbytes = await trio.to_thread.run_sync(
                    list_one, path, limiter=limiter
                )
                totals["entries"] += entries  # counted on the trio thread only
                totals["files"] += files
                totals["bytes"] += nbytes
                for sub in subdirs:
                    nursery.start_soon(visit, sub, nursery)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(visit, root.strip("/"), nursery)

        trio.run(main)
        return totals

    def upload_tree(self, local_root: Path, prefix: str) -> int:
        """Every directory (level by level), then every file in parallel: an 'extract' by SDK."""
        dirs: list[list[str]] = []
        files: list[tuple[Path, str]] = []
        for dirpath, dirnames, filenames in os.walk(local_root):
            rel = os.path.relpath(dirpath, local_root)
            rel = "" if rel == "." else rel
            depth = 0 if not rel else rel.count("/") + 1
            for d in dirnames:
                while len(dirs) <= depth:
                    dirs.append([])
                dirs[depth].append(f"{prefix}/{rel}/{d}" if rel else f"{prefix}/{d}")
            for f in filenames:
                if os.path.islink(os.path.join(dirpath, f)):
                    continue  # the share has no symbolic links
                share_path = f"{prefix}/{rel}/{f}" if rel else f"{prefix}/{f}"
                files.append((Path(dirpath) / f, share_path))
        self.ensure_dirs(prefix)

        def mkdir(path: str) -> None:
            try:
                self.share.get_directory_client(path).create_directory()
            except ResourceExistsError:
                pass

        for level in dirs:
            self._run(mkdir, level)

        def put(item: tuple[Path, str]) -> None:
            self.share.get_file_client(item[1]).upload_file(item[0].read_bytes())

        self._run(put, files)
        return len(files)

    def download_tree(self, prefix: str) -> dict[str, str]:
        """List, then download every file in parallel: {relative path: sha256}."""
        files: list[str] = []

        def walk(path: str) -> None:
            for item in self.share.get_directory_client(path).list_directories_and_files():
                sub = f"{path}/{item['name']}"
                if item["is_directory"]:
                    walk(sub)
                else:
                    files.append(sub)

        walk(prefix.strip("/"))
        digests: dict[str, str] = {}

        def get(path: str) -> None:
            data = self.share.get_file_client(path).download_file().readall()
            digests[path[len(prefix.strip("/")) + 1 :]] = hashlib.sha256(data).hexdigest()

        self._run(get, files)
        return digests

    # ------------------------------------------------------------------ emulator alone
    def get_throughput(self, path: str, size: int, streams: int) -> float:
        """Seconds to GET the whole file into memory with `streams` parallel ranged GETs."""
        fc = self.share.get_file_client(path)

        def get(off: int) -> None:
            fc.download_file(off, min(self.chunk, size - off)).readall()

        t0 = time.perf_counter()
        self._run(get, list(range(0, size, self.chunk)), limit=streams)
        return time.perf_counter() - t0

    def put_throughput(self, path: str, size: int, streams: int) -> float:
        """Seconds to PUT `size` bytes from memory with `streams` parallel Put Range."""
        block = os.urandom(self.chunk)
        parent = path.rpartition("/")[0]
        if parent:
            self.ensure_dirs(parent)
        fc = self.share.get_file_client(path)
        fc.create_file(size)

        def put(off: int) -> None:
            n = min(self.chunk, size - off)
            fc.upload_range(block[:n], offset=off, length=n)

        t0 = time.perf_counter()
        self._run(put, list(range(0, size, self.chunk)), limit=streams)
        elapsed = time.perf_counter() - t0
        fc.delete_file()
        return elapsed

    def small_creates(self, prefix: str, count: int, size: int = 4096) -> float:
        """Seconds to create `count` small files (create + one Put Range each), in parallel."""
        self.ensure_dirs(prefix)
        data = os.urandom(size)

        def put(i: int) -> None:
            self.share.get_file_client(f"{prefix}/s{i:05d}").upload_file(data)

        t0 = time.perf_counter()
        self._run(put, list(range(count)))
        return time.perf_counter() - t0

    def properties_rate(self, path: str, count: int) -> float:
        """Seconds for `count` sequential Get File Properties: the per-request latency."""
        fc = self.share.get_file_client(path)
        t0 = time.perf_counter()
        for _ in range(count):
            fc.get_file_properties()
        return time.perf_counter() - t0


def create_tree(sdk: Sdk, prefix: str, entries: int) -> int:
    """The metadata tree through the API (slow; used only if the store cannot be bulk-loaded)."""
    from .trees import layout

    sdk.ensure_dirs(prefix)
    levels: dict[int, list[str]] = {}
    files: list[tuple[str, int]] = []
    for e in layout(entries):
        if e.is_dir:
            levels.setdefault(e.rel.count("/"), []).append(f"{prefix}/{e.rel}")
        else:
            files.append((f"{prefix}/{e.rel}", e.size))
    for depth in sorted(levels):
        sdk._run(lambda p: sdk.share.get_directory_client(p).create_directory(), levels[depth])
    sdk._run(lambda f: sdk.share.get_file_client(f[0]).create_file(f[1]), files)
    return sum(len(v) for v in levels.values()) + len(files)


# ---------------------------------------------------------------------- raw HTTP (curl)


def _sas_url(sdk: Sdk, path: str, write: bool) -> str:
    from datetime import UTC, datetime, timedelta

    from azure.storage.fileshare import FileSasPermissions, generate_file_sas

    cred = sdk.share.credential
    sas = generate_file_sas(
        cred.account_name,
        sdk.share_name,
        path.split("/"),
        account_key=cred.account_key,
        permission=FileSasPermissions(read=True, write=write),
        expiry=datetime.now(UTC) + timedelta(hours=2),
    )
    return f"{sdk.share.url.rstrip('/')}/{path}?{sas}"


def _curl(args: list[str], transfers: int) -> float:
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(
        ["curl", "--parallel", "--parallel-max", str(transfers), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - t0
    codes = proc.stdout.split()
    if proc.returncode != 0 or any(c not in ("200", "201", "206") for c in codes):
        raise OSError(f"curl exited {proc.returncode}, statuses {sorted(set(codes))}")
    return elapsed


def curl_get(sdk: Sdk, path: str, size: int, streams: int) -> float:
    """Seconds for curl (C, no Python client) to GET the file by parallel ranged GETs: what
    the emulator itself can serve on this machine."""
    url = _sas_url(sdk, path, write=False)
    args: list[str] = []
    for off in range(0, size, sdk.chunk):
        end = min(off + sdk.chunk, size) - 1
        args += ["-s", "--noproxy", "*", "-w", "%{http_code}\n", "-r", f"{off}-{end}"]
        args += ["-o", "/dev/null", url, "--next"]
    return _curl(args[:-1], streams)


def curl_put(sdk: Sdk, path: str, size: int, streams: int, scratch: Path) -> float:
    """Seconds for curl to write `size` bytes by parallel Put Range (SAS, x-ms-write: update)."""
    parent = path.rpartition("/")[0]
    if parent:
        sdk.ensure_dirs(parent)
    fc = sdk.share.get_file_client(path)
    fc.create_file(size)
    block = scratch / "curl-chunk.bin"
    block.write_bytes(os.urandom(sdk.chunk))
    url = _sas_url(sdk, path, write=True) + "&comp=range"
    args: list[str] = []
    for off in range(0, size, sdk.chunk):
        end = min(off + sdk.chunk, size) - 1
        if end - off + 1 != sdk.chunk:
            tail = scratch / "curl-tail.bin"
            tail.write_bytes(os.urandom(end - off + 1))
            src = tail
        else:
            src = block
        args += ["-s", "--noproxy", "*", "-w", "%{http_code}\n", "-X", "PUT"]
        args += ["-H", "x-ms-write: update", "-H", f"x-ms-range: bytes={off}-{end}"]
        args += ["-H", "x-ms-version: 2024-08-04", "--data-binary", f"@{src}"]
        args += ["-o", "/dev/null", url, "--next"]
    try:
        return _curl(args[:-1], streams)
    finally:
        fc.delete_file()
