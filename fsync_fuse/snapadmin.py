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
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from fsync_fuse import snapnames
from fsync_fuse.control import ActionError
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import NEW_PREFIX, ROOT, Namespace
from fsync_fuse.namespace.tables import Gone
from fsync_fuse.snaptree import SnapshotTree, snapshot_ns
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.queue import WriteBack
from remote.base import AuthFailed, NotFound, PermissionDenied, Remote, SnapshotInfo

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


def to_prune(ours: Iterable[str], keep: Keep, newest: str | None = None) -> list[str]:
    """The ids among `ours` (our snapshots) that `keep` does not keep, oldest first.
    `newest`, the one just made, comes first whatever its id (the service may give a new
    snapshot the id of a deleted one made earlier in the same second) and is never pruned."""
    newest_first = sorted((s for s in ours if s != newest), reverse=True)
    if newest is not None:
        newest_first.insert(0, newest)
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
    return sorted(s for s in newest_first if s not in kept and s != newest)


def refused(exc: AuthFailed | PermissionDenied, what: str) -> ActionError:
    """The share refused a snapshot call: say which right is missing and what has it."""
    return ActionError(
        f"the mount's credentials may not {what} (the share answered {exc.code or exc}): a "
        "share SAS cannot; mount with the account key or an account SAS that allows it",
        errno.EACCES,
    )


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
        lister: Lister,
        dirty: DirtySet,
        site: str,
        tree: SnapshotTree | None,
    ) -> None:
        self.remote, self.ns, self.writeback, self.site = remote, ns, writeback, site
        self.lister, self.dirty = lister, dirty
        self.tree = tree

    async def _infos(self) -> tuple[list[SnapshotInfo], dict[str, str]]:
        try:
            infos = await self.remote.list_snapshots()
        except (AuthFailed, PermissionDenied) as exc:
            raise refused(exc, "list the share's snapshots") from None
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
        try:
            info = await self.remote.create_snapshot(metadata={MARK: "1", SITE: self.site})
        except (AuthFailed, PermissionDenied) as exc:
            raise refused(exc, "create share snapshots") from None
        log.info("made share snapshot %s", info.snapshot)
        pruned: list[str] = []
        infos, names = await self._infos()
        if keep.any:
            ours = [i.snapshot for i in infos if MARK in i.metadata and i.snapshot != info.snapshot]
            # the new one is the newest: it counts as one of those kept, and always stays
            for sid in to_prune(ours, keep, newest=info.snapshot):
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
        except (AuthFailed, PermissionDenied) as exc:
            raise refused(exc, "delete share snapshots") from None
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

    async def restore_file(self, snapshot: str, path: str) -> dict[str, Any]:
        """Put `path` back as it is in `snapshot`, in place, by a share-side copy (no byte
        through this machine): copied under a hidden temporary name, renamed over the file,
        then the directory is listed again, so the mount shows it at once. Only when the live
        side is settled: a directory or file with queued operations or local changes answers
        EAGAIN, and the command copies through the mount instead (keeping local edits)."""
        *dirs, name = path.split("/")
        parent = ROOT
        for comp in dirs:
            await self.lister.ensure(parent, refresh_stale=False)
            rec = self.ns.lookup(parent, comp)
            if rec is None or not rec.is_dir:
                raise _unsettled(f"{comp!r} is not a directory here now")
            parent = rec.ino
        await self.lister.ensure(parent, refresh_stale=False)
        try:
            parent_path = self.ns.settled_path(parent)
        except Gone:
            parent_path = None
        if parent_path is None or self.ns.outbox.has_child_ops(parent):
            raise _unsettled("its directory has changes not on the share yet")
        target = self.ns.lookup(parent, name)
        if target is not None and target.is_dir:
            raise ActionError(f"{path!r} is a directory now", errno.EISDIR)
        if target is not None and self.dirty.busy(target.ino):
            raise _unsettled("it has local changes not on the share yet")
        tmp = f"{parent_path}/{NEW_PREFIX}restore-{uuid.uuid4().hex[:12]}".lstrip("/")
        async with self.writeback.lock.exclusive():  # no upload or rename runs meanwhile
            try:
                await self.remote.copy_from_snapshot(snapshot, path, tmp)
                await self.remote.rename(tmp, path, replace=True)
            except BaseException:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    try:
                        await self.remote.delete_file(tmp)
                    except Exception:  # noqa: BLE001 - gone already, or the share is down
                        pass
                raise
        await self.lister.refresh(parent)
        rec = self.ns.lookup(parent, name)
        log.info("restored %r from snapshot %s on the share side", path, snapshot)
        return {"path": path, "size": rec.size if rec is not None else None}

    async def _tree_changed(self) -> None:
        if self.tree is not None:
            await self.tree.refresh(force=True)


def _unsettled(why: str) -> ActionError:
    return ActionError(f"not restored on the share side: {why}", errno.EAGAIN, transient=True)
