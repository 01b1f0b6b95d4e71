"""Trees of small files (workloads `small-files` and `headers`): `tar -x` into each
contestant, until every file is on the share, reading it all back warm and cold.

Two real trees: an sdist (`--sdist`, pygments by default: ~2,700 files of source and docs)
and a system header tree (`--header-dir`, /usr/include by default: thousands of files,
directories of hundreds of entries; its few symbolic links left out), archived with its
owners, modes and times so that tar (as root) restores them all (a chown, chmod and utimensat per file, as a real restore does).
Names that differ only in case are left out of the header tree: the share, like SMB, does
not tell them apart. Every read-back is checked against the tree's manifest of SHA-256s.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from .machine import cpu_seconds, drop_caches
from .workloads import Bench, FsContestant, _mkdir_settled, attempt, log_value, prof, run_timed

log = logging.getLogger("bench")


@dataclass
class Tree:
    """One tree of small files: its workload name (the rows' prefix), tarball and manifest."""

    key: str
    tar: Path
    manifest: dict[str, str]
    what: str  # for the report's sizes line


def prepare_sdist(b: Bench) -> Tree:
    """The sdist (fetched once into the data cache), cut to `small_files` files if asked."""
    tarball = fetch_sdist(b.s.sdist, b.s.data_cache)
    out = b.work / "small.tar"
    manifest: dict[str, str] = {}
    nbytes = 0
    with tarfile.open(tarball) as src, tarfile.open(out, "w") as dst:
        for m in src:
            if not m.isfile() or ".." in m.name.split("/") or m.name.startswith("/"):
                continue
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            m.mode = 0o644
            dst.addfile(m, fileobj=io.BytesIO(data))
            manifest[m.name] = hashlib.sha256(data).hexdigest()
            nbytes += len(data)
            if b.s.small_files and len(manifest) >= b.s.small_files:
                break
    log.info("small files: %d files, %d bytes from %s", len(manifest), nbytes, tarball.name)
    return Tree("small-files", out, manifest, f"{len(manifest)} small files ({b.s.sdist})")


def prepare_headers(b: Bench) -> Tree:
    """The header tree as tar archives it: directories and files with their owners, modes and
    times (cut to `small_files` files when asked, as --quick does). Its few symbolic links
    are left out: rclone's mount cannot make them, and the count on the share is of files."""
    top = Path(b.s.header_dir)
    if not top.is_dir():
        raise FileNotFoundError(f"--header-dir {top}: not a directory (apt install libc6-dev)")
    out = b.work / "headers.tar"
    manifest: dict[str, str] = {}
    seen: set[str] = set()  # case-folded paths: the share does not tell case apart
    nbytes = 0
    with tarfile.open(out, "w") as dst:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, top)
            for name in sorted(dirnames) + sorted(filenames):
                rel = os.path.normpath(os.path.join("include", rel_dir, name))
                if rel.lower() in seen:
                    continue
                seen.add(rel.lower())
                path = os.path.join(dirpath, name)
                info = dst.gettarinfo(path, arcname=rel)
                if info.isfile():
                    with open(path, "rb") as fh:
                        data = fh.read()
                    manifest[rel] = hashlib.sha256(data).hexdigest()
                    nbytes += len(data)
                    dst.addfile(info, io.BytesIO(data))
                elif info.isdir():
                    dst.addfile(info)
                if b.s.small_files and len(manifest) >= b.s.small_files:
                    break
            if b.s.small_files and len(manifest) >= b.s.small_files:
                break
    log.info("header tree: %d files, %d bytes from %s", len(manifest), nbytes, top)
    return Tree("headers", out, manifest, f"{len(manifest)} header files ({top})")


def fetch_sdist(spec: str, cache: Path) -> Path:
    name, _, version = spec.partition("==")
    cache.mkdir(parents=True, exist_ok=True)

    def find() -> Path | None:
        for p in sorted(cache.glob("*.tar.gz")):
            stem = p.name[: -len(".tar.gz")].lower().replace("_", "-")
            if stem.startswith(name.lower().replace("_", "-") + "-") and (
                not version or stem.endswith("-" + version)
            ):
                return p
        return None

    found = find()
    if found:
        return found
    log.info("fetching the sdist %s into %s (once)", spec, cache)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
         "-q", "-d", str(cache), spec],
        check=True,
        timeout=600,
    )  # fmt: skip
    found = find()
    if not found:
        raise FileNotFoundError(f"pip download {spec} produced no .tar.gz in {cache}")
    return found


def read_tree(root: Path, timeout: float) -> tuple[float, dict[str, str]]:
    """Seconds to read (and hash) every file below root: {relative path: sha256}."""
    t0 = time.perf_counter()
    find = subprocess.Popen(
        ["find", ".", "-type", "f", "-print0"], cwd=root, stdout=subprocess.PIPE
    )
    proc = subprocess.run(
        ["xargs", "-0", "-n", "500", "sha256sum"],
        stdin=find.stdout,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    find.stdout.close()  # type: ignore[union-attr]
    if find.wait(timeout) != 0 or proc.returncode != 0:
        raise RuntimeError(f"reading {root} failed: {proc.stderr[-600:]}")
    elapsed = time.perf_counter() - t0
    digests = {}
    for line in proc.stdout.splitlines():
        digest, _, name = line.partition("  ")
        digests[name[2:] if name.startswith("./") else name] = digest
    return elapsed, digests


def run_tree(b: Bench, tree: Tree) -> None:
    """tar -x, until on the share, read warm and cold: rows `<key>/extract|drain|read-*`."""
    key, tmo = tree.key, b.s.drain_timeout
    nfiles = len(tree.manifest)
    for c in b.fs:
        attempt(b, f"{key}/extract", c.name, lambda c=c: _mkdir_settled(c, f"{key}/{c.name}", tmo))
    for rep in range(b.s.reps):
        log.info("%s: repetition %d/%d", key, rep + 1, b.s.reps)
        for c in b.fs:
            rel = f"{key}/{c.name}/r{rep}"

            def one(c: FsContestant = c, rel: str = rel) -> None:
                dest = c.root / rel
                dest.mkdir()
                c.settle(tmo)
                cpu0 = cpu_seconds(c.daemon_pid()), cpu_seconds(b.emulator_pid)
                with prof(b, c, f"{key}/extract"):
                    t, _ = run_timed(["tar", "-xf", str(tree.tar), "-C", str(dest)], tmo)
                log_value(f"{key}/extract", c.name, b.results.add(f"{key}/extract", c.name, t, ops=nfiles), "s")  # fmt: skip
                extracted = t
                check = None if c.name == "local" else lambda: _share_count(b, rel) == nfiles
                with prof(b, c, f"{key}/drain"):
                    t0 = time.perf_counter()
                    c.settle(tmo, check)
                    t = time.perf_counter() - t0
                log_value(f"{key}/drain", c.name, b.results.add(f"{key}/drain", c.name, t, ops=nfiles), "s")  # fmt: skip
                # what a user waits for: from the start of tar -x until the share has it all
                log_value(f"{key}/on-share", c.name, b.results.add(f"{key}/on-share", c.name, extracted + t, ops=nfiles), "s")  # fmt: skip
                _cpu(b, key, c, cpu0, nfiles)
                for temp in ("warm", "cold"):
                    row = f"{key}/read-{temp}"
                    if temp == "cold":
                        c.cold()
                    else:
                        drop_caches()
                    with prof(b, c, row):
                        t, digests = read_tree(dest, tmo)
                    log_value(row, c.name, b.results.add(row, c.name, t, ops=nfiles), "s")
                    b.results.verify(
                        row, c.name, digests == tree.manifest, f"{len(digests)} files hashed"
                    )

            attempt(b, f"{key}/extract", c.name, one)
            if c.name == "local" and rep > 0:
                shutil.rmtree(c.root / f"{key}/{c.name}/r{rep - 1}", ignore_errors=True)
        if b.want("sdk"):
            _sdk_tree(b, tree, rep)


def _cpu(
    b: Bench, key: str, c: FsContestant, before: tuple[float | None, float | None], n: int
) -> None:
    """CPU per file of the daemon and of the emulator from tar -x until on the share (the
    issue's "CPU per new small file"; the emulator's share says whether it was the bound)."""
    after = cpu_seconds(c.daemon_pid()), cpu_seconds(b.emulator_pid)
    for row, t0, t1 in ((f"{key}/cpu", before[0], after[0]), (f"{key}/emulator-cpu", before[1], after[1])):  # fmt: skip
        if t0 is not None and t1 is not None:
            v = b.results.add(row, c.name, 0.0, cpu=t1 - t0, ops=n)
            log_value(row, c.name, v, "ms/file")


def _share_count(b: Bench, prefix: str) -> int:
    return b.sdk.list_tree(prefix)["files"]


def _sdk_tree(b: Bench, tree: Tree, rep: int) -> None:
    """The direct SDK upload and download of the same files (no mount), for reference."""
    key, nfiles = tree.key, len(tree.manifest)
    src = b.work / f"{key}-src"
    if not src.exists():
        src.mkdir()
        subprocess.run(["tar", "-xf", str(tree.tar), "-C", str(src)], check=True)
    prefix = f"{key}/sdk/r{rep}"

    def extract() -> None:
        t0 = time.perf_counter()
        b.sdk.upload_tree(src, prefix)
        t = time.perf_counter() - t0
        log_value(f"{key}/extract", "sdk", b.results.add(f"{key}/extract", "sdk", t, ops=nfiles), "s")  # fmt: skip

    def read() -> None:
        t0 = time.perf_counter()
        digests = b.sdk.download_tree(prefix)
        t = time.perf_counter() - t0
        log_value(f"{key}/read-cold", "sdk", b.results.add(f"{key}/read-cold", "sdk", t, ops=nfiles), "s")  # fmt: skip
        b.results.verify(f"{key}/read-cold", "sdk", digests == tree.manifest)

    attempt(b, f"{key}/extract", "sdk", extract)
    attempt(b, f"{key}/read-cold", "sdk", read)
