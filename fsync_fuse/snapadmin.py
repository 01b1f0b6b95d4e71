"""Share snapshots for the operator: make one once what the user sees is on the share, list
them, delete one, prune the ones this program made, and list one file's versions.

A snapshot made here carries metadata `fsyncfuse=1` (and the site that made it): `--keep`
pruning only ever deletes those, never a snapshot Azure Backup or a person made, and deleting
such a foreign snapshot by name needs `force`.
"""

from __future__ import annotations

import datetime
import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from fsync_fuse import snapnames
from fsync_fuse.control import ActionError
from fsync_fuse.namespace import Namespace
from fsync_fuse.snaptree import SnapshotTree, snapshot_ns
from fsync_fuse.writeback.queue import WriteBack
from remote.base import NotFound, Remote, SnapshotInfo

log = logging.getLogger(__name__)

#: snapshot metadata marking the ones this program made (and may prune)
MARK, SITE = "fsyncfuse", "fsyncsite"


@dataclass(frozen=True, slots=True)
class Keep:
    """How many of our snapshots to keep: the newest `last`, and the newest of each of the
    last `daily` days and `hourly` hours that have one (UTC); the rules add up. With none
    set (`any` False) nothing is pruned at all: `create` prunes only when one is given."""

    last: int | None = None
    daily: int | None = None
    hourly: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.last, self.daily, self.hourly))


def to_prune(ours: Iterable[str], keep: Keep) -> list[str]:
    """The ids among `ours` (our snapshots) that `keep` does not keep, oldest first."""
    newest_first = sorted(ours, reverse=True)
    kept: set[str] = set(newest_first[: keep.last or 0])
    for n, width in ((keep.daily, 10), (keep.hourly, 13)):  # "YYYY-MM-DD", "YYYY-MM-DDTHH"
        if not n:
            continue
        periods: list[str] = []
        for sid in newest_first:
            period = sid[:width]
            if period not in periods:
                if len(periods) == n:
                    break
                periods.append(period)
                kept.add(sid)  # the newest of its period
    return sorted(s for s in newest_first if s not in kept)


def describe(info: SnapshotInfo, name: str) -> dict[str, Any]:
    ns = snapshot_ns(info.snapshot)
    return {
        "name": name,
        "id": info.snapshot,
        "time": datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat(),
        "ours": MARK in info.metadata,
        "site": info.metadata.get(SITE),
    }


class SnapshotAdmin:
    def __init__(
        self,
        *,
        remote: Remote,
        ns: Namespace,
        writeback: WriteBack,
        site: str,
        tree: SnapshotTree | None,
    ) -> None:
        self.remote, self.ns, self.writeback, self.site = remote, ns, writeback, site
        self.tree = tree

    async def _infos(self) -> tuple[list[SnapshotInfo], dict[str, str]]:
        infos = await self.remote.list_snapshots()
        named = snapnames.names(i.snapshot for i in infos)
        return infos, {sid: name for name, sid in named.items()}

    async def listing(self) -> dict[str, Any]:
        """The snapshots, oldest first; where the mount shows them and this site's name
        (what `restore` needs)."""
        infos, names = await self._infos()
        return {
            "snapshots": [
                describe(i, names[i.snapshot]) for i in sorted(infos, key=lambda i: i.snapshot)
            ],
            "dir": self.tree.name if self.tree is not None else None,
            "site": self.site,
        }

    async def create(self, *, wait: float | None, keep: Keep) -> dict[str, Any]:
        """Wait (at most `wait` seconds; None: do not wait) until what is queued here is on
        the share, then snapshot the share and prune per `keep`."""
        stuck = 0
        if wait is not None:
            with trio.move_on_after(wait):
                await self.writeback.drain()
            st = self.writeback.status()
            if not st.empty:
                raise ActionError(
                    f"{st.ops} operations and {st.files} files are still queued after "
                    f"{wait:g}s (is the share reachable?); no snapshot made",
                    errno.ETIMEDOUT,
                    transient=True,
                )
            stuck = self.writeback.stuck.items(limit=0)[0]
        info = await self.remote.create_snapshot(metadata={MARK: "1", SITE: self.site})
        log.info("made share snapshot %s", info.snapshot)
        pruned: list[str] = []
        infos, names = await self._infos()
        if keep.any:
            ours = [i.snapshot for i in infos if MARK in i.metadata and i.snapshot != info.snapshot]
            # the new one always stays, and counts as one of those kept
            shifted = Keep(
                last=None if keep.last is None else max(0, keep.last - 1),
                daily=keep.daily,
                hourly=keep.hourly,
            )
            for sid in to_prune(ours + [info.snapshot], shifted):
                if sid == info.snapshot:
                    continue
                await self.remote.delete_snapshot(sid)
                log.info("pruned share snapshot %s", sid)
                pruned.append(names.get(sid, sid))
        await self._tree_changed()
        return {
            "name": names.get(info.snapshot, snapnames.token(info.snapshot)),
            "id": info.snapshot,
            "pruned": pruned,
            "stuck": stuck,
        }

    async def delete(self, name: str, *, force: bool) -> dict[str, Any]:
        infos, names = await self._infos()
        sid = snapnames.resolve(name, (i.snapshot for i in infos))
        if sid is None:
            raise ActionError(
                f"no snapshot {name!r} on the share (`fsync-fuse snapshot list` shows them)",
                errno.ENOENT,
            )
        info = next(i for i in infos if i.snapshot == sid)
        if MARK not in info.metadata and not force:
            raise ActionError(
                f"snapshot {names[sid]} was not made by fsync-fuse (Azure Backup or a person "
                "made it); add --force to delete it anyway",
                errno.EPERM,
            )
        try:
            await self.remote.delete_snapshot(sid)
        except NotFound:
            pass  # gone meanwhile: what was asked is done
        await self._tree_changed()
        return {"name": names[sid], "id": sid}

    async def versions(self, ino: int) -> dict[str, Any]:
        """The distinct versions of a file across the snapshots, oldest first, and now."""
        path = self.ns.path(ino)
        if path is None:
            raise ActionError("the file was removed", errno.ENOENT)
        infos, names = await self._infos()
        found: dict[str, Any] = {}
        limiter = trio.CapacityLimiter(8)

        async def one(sid: str) -> None:
            async with limiter:
                try:
                    found[sid] = await self.remote.at_snapshot(sid).stat(path)
                except NotFound:
                    pass

        async with trio.open_nursery() as nursery:
            for i in infos:
                nursery.start_soon(one, i.snapshot)
        versions: list[dict[str, Any]] = []
        for sid in sorted(found):
            e = found[sid]
            if e.is_dir:
                continue
            if versions and versions[-1]["etag"] == e.etag and e.etag:
                versions[-1]["snapshots"].append(names[sid])
                continue
            versions.append(
                {
                    "etag": e.etag,
                    "size": e.size,
                    "mtime_ns": e.last_write_ns,
                    "snapshots": [names[sid]],
                }
            )
        rec = self.ns.get(ino)
        current = None
        if rec is not None:
            current = {
                "etag": rec.etag,
                "size": rec.size,
                "mtime_ns": rec.mtime_ns,
                # the newest snapshot holds what the share holds now
                "same_as": versions[-1]["snapshots"][-1]
                if versions and rec.etag and versions[-1]["etag"] == rec.etag
                else None,
            }
        return {"path": path, "versions": versions, "current": current}

    async def _tree_changed(self) -> None:
        if self.tree is not None:
            await self.tree.refresh(force=True)
