"""One migration from start to report: open the share and the journal, copy the source,
then (with `watch`) follow it until interrupted. Used by `fsync-fuse migrate`."""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cache import CacheMismatch
from fsync_fuse.attrs import DIR
from fsync_fuse.cachelock import CacheInUse
from fsync_fuse.migration.copier import Abort, Copier, Outcome
from fsync_fuse.migration.journal import Journal, JournalMismatch
from fsync_fuse.migration.source import Scan, scan
from fsync_fuse.migration.watch import Watcher, outermost
from remote.azure import AzureOptions
from remote.base import NotFound, Remote, RemoteError
from remote.credentials import ConfigError, open_remote

log = logging.getLogger(__name__)


class Failed(Exception):
    """The migration cannot start or go on: one line for the user."""


@dataclass
class Job:
    src: str
    share_url: str
    below: str  # the target directory's path in the share ("": its root)
    state: Path
    owner: tuple[int, int]
    threads: int = 16
    delete: bool = False
    rename_invalid: bool = False
    watch: bool = False
    verify: bool = False
    #: after the pass, adopt the source as the mount's cache in this directory (cutover.py)
    cutover_cache: Path | None = None
    cache_size: int = 10 << 30
    account_key: str | None = None
    account_key_file: str | None = None
    connection_string: str | None = None
    #: (files, bytes) -> a progress object with advance(nbytes) and close()
    progress: Callable[[int, int], Any] | None = None
    #: a line for the user after each round of --watch
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)


@dataclass
class Totals:
    scan: Scan = field(default_factory=Scan)
    out: Outcome = field(default_factory=Outcome)
    rounds: int = 0

    def add(self, found: Scan, out: Outcome) -> None:
        for key in ("renamed", "invalid", "hardlinks", "failed"):
            getattr(self.scan, key).extend(getattr(found, key))
        for key in ("copied", "unchanged", "adopted", "deleted", "bytes_sent", "verified"):
            setattr(self.out, key, getattr(self.out, key) + getattr(out, key))
        self.out.failed.extend(out.failed)
        self.out.kept_on_share.extend(out.kept_on_share)
        self.out.mismatched.extend(out.mismatched)


async def migrate(job: Job) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        remote = await open_remote(
            job.share_url,
            account_key=job.account_key,
            key_file=job.account_key_file,
            connection_string=job.connection_string,
            options=AzureOptions(max_concurrency=job.threads),
        )
    except (ConfigError, RemoteError) as exc:
        raise Failed(str(exc)) from None
    try:
        if job.below:
            try:
                if not (await remote.stat(job.below)).is_dir:
                    raise Failed(f"{job.below!r} on the share is a file, not a directory")
            except NotFound:
                pass
        target = f"{remote.account_url}/{remote.share_name}/{job.below}".rstrip("/")
        name = "journal-" + hashlib.sha256(target.encode()).hexdigest()[:12]
        try:
            journal = Journal(job.state / name, target)
        except JournalMismatch as exc:
            raise Failed(str(exc)) from None
        totals = Totals()
        try:
            base = job.below.split("/") if job.below else []
            found = await trio.to_thread.run_sync(
                lambda: scan(job.src, base, rename_invalid=job.rename_invalid)
            )
            progress = job.progress(found.files, found.nbytes) if job.progress else None
            try:
                out = await _copy(job, remote, journal, found, None, progress)
            finally:
                if progress is not None:
                    progress.close()
            totals.add(found, out)
            entries, files, nbytes = len(found.entries), found.files, found.nbytes
            if job.watch:
                await _follow(job, remote, journal, base, totals, found)
            cut: dict[str, Any] | None = None
            if job.cutover_cache is not None:
                # here, not at the top: the cutover opens the mount's cache and namespace
                # (the whole assembly, pyfuse3 included), which a plain pass never needs
                # and every run would pay for at start
                from fsync_fuse.migration.cutover import adopt, seeds_of

                seeds = seeds_of(job.src, found, journal)
                try:
                    figures = await adopt(
                        remote=remote,
                        url=job.share_url,
                        share_url=f"{remote.account_url}/{remote.share_name}",
                        account_url=remote.account_url,
                        share=remote.share_name,
                        cache_dir=job.cutover_cache,
                        cache_size=job.cache_size,
                        seeds=seeds,
                    )
                except (CacheInUse, CacheMismatch) as exc:
                    raise Failed(str(exc)) from None
                cut = {"cache_dir": str(job.cutover_cache), "files": len(seeds), **figures}
        finally:
            journal.close()
    finally:
        await remote.aclose()
    s, o = totals.scan, totals.out
    return {
        "source": job.src,
        "target": target,
        "journal": str(job.state),
        "seconds": round(time.monotonic() - t0, 3),
        "entries": entries,
        "files": files,
        "bytes": nbytes,
        "copied": o.copied,
        "unchanged": o.unchanged,
        "resumed_finished": o.adopted,
        "deleted": o.deleted,
        "bytes_sent": o.bytes_sent,
        "watch_rounds": totals.rounds,
        "cutover": cut,
        "renamed": s.renamed,
        "invalid": s.invalid,
        "hardlinks": s.hardlinks,
        "failed": s.failed + o.failed,
        "kept_on_share": o.kept_on_share,
        "verified": o.verified if job.verify else None,
        "mismatched": o.mismatched,
    }


async def _copy(
    job: Job,
    remote: Remote,
    journal: Journal,
    found: Scan,
    scope: set[bytes] | None,
    progress: Any,
) -> Outcome:
    copier = Copier(
        remote=remote,
        journal=journal,
        root=job.src,
        scan=found,
        owner=job.owner,
        threads=job.threads,
        on_file=progress.advance if progress is not None else lambda n: None,
    )
    try:
        out = await copier.run(delete=job.delete, scope=scope)
        if job.verify and scope is None:
            await copier.verify()
        return out
    except Abort as exc:
        raise Failed(str(exc)) from None


async def _follow(
    job: Job, remote: Remote, journal: Journal, base: list[str], totals: Totals, first: Scan
) -> None:
    """--watch: rescan and copy what changes until SIGINT or SIGTERM."""
    watcher = Watcher(job.src)
    try:
        watcher.watch([e.rel for e in first.entries if e.kind == DIR])
        job.say(f"migrate: watching {watcher.watched} directories of {job.src} (Ctrl-C stops)")
        failed: list[Failed] = []
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop)
                while True:
                    changes = await watcher.changes()
                    dirs = {b""} if changes.everything else outermost(changes.dirs)
                    starts = _share_paths(journal, dirs, base)
                    found = await trio.to_thread.run_sync(
                        functools.partial(
                            scan, job.src, base, rename_invalid=job.rename_invalid, below=starts
                        )
                    )
                    # a round is not interrupted half-way: its journal records stay whole
                    with trio.CancelScope(shield=True):
                        try:
                            out = await _copy(job, remote, journal, found, set(starts), None)
                        except Failed as exc:  # raised below, not out of the nursery
                            failed.append(exc)
                            nursery.cancel_scope.cancel()
                            break
                    totals.add(found, out)
                    totals.rounds += 1
                    watcher.watch([e.rel for e in found.entries if e.kind == DIR])
                    job.say(
                        f"migrate: {out.copied} copied, {out.deleted} deleted, "
                        f"{len(out.failed) + len(found.failed)} failed "
                        f"({len(starts)} directories rescanned)"
                    )
        if failed:
            raise failed[0]
    finally:
        watcher.close()


def _share_paths(journal: Journal, dirs: set[bytes], base: list[str]) -> dict[bytes, str]:
    """Each changed directory with its path on the share; one the journal does not know yet
    (made since) is covered by rescanning its parent instead."""
    out: dict[bytes, str] = {}
    for rel in dirs:
        while True:
            if not rel:
                out[b""] = "/".join(base)
                break
            rec = journal.get(rel)
            if rec is not None:
                out[rel] = rec["share"]
                break
            rel = rel.rpartition(b"/")[0]
    keep = outermost(set(out))
    return {rel: share for rel, share in out.items() if rel in keep}
