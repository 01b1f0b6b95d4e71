"""The daemon's side of the control surface (control.py names the attributes and shapes).

The kernel adapter hands every `user.fsync.*` request here: `getxattr_async` answers reads
and performs actions (`user.fsync.do.*`), `getxattr` the reads alone. A drain request runs in
this object's nursery, in its own cancel scope: drain mode (no quiet delay) lasts until the
queue is empty, a newer request replaces it, or nobody read `user.fsync.pending` for
DRAIN_GRACE seconds (the unmount command that asked gave up). The figures (counters, the
5-minute ring) live in control_figures.py, per-path answers in control_paths.py.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any
from urllib.parse import parse_qsl

import pyfuse3
import trio

from cache import BlockCache, CacheFull
from fsync_fuse import control
from fsync_fuse.attrs import FILE, Inode
from fsync_fuse.config import MountConfig
from fsync_fuse.control_api import (
    FileCensus,
    PinsLike,
    RecallerLike,
    SettingsLike,
    TieringCache,
    UploadCounters,
)
from fsync_fuse.control_figures import Figures, Parts
from fsync_fuse.control_paths import PathAnswers
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import ROOT, Namespace
from fsync_fuse.poller import Poller
from fsync_fuse.reader import Reader
from fsync_fuse.revalidate import Revalidator
from fsync_fuse.snapadmin import Keep, SnapshotAdmin
from fsync_fuse.tasks import TaskOwner
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.queue import WriteBack
from remote.base import Remote, RemoteError

log = logging.getLogger(__name__)

ENOATTR = pyfuse3.ENOATTR


class ControlServer(TaskOwner):
    """Its nursery (tasks.py) owns the drain requests and the figures' sampling.

    The keywords after `revalidator` are optional so that a mount without one of those parts
    still answers everything else; an action whose part is missing answers ENOTSUP."""

    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        dirty: DirtySet,
        writeback: WriteBack,
        reader: Reader,
        replies: DirReplies,
        poller: Poller,
        revalidator: Revalidator,
        cfg: MountConfig | None = None,
        lister: Lister | None = None,
        remote: Remote | None = None,
        pins: PinsLike | None = None,
        recaller: RecallerLike | None = None,
        settings: SettingsLike | None = None,
        tiering: TieringCache | None = None,
        census: FileCensus | None = None,
        uploads: UploadCounters | None = None,
        snapshots: SnapshotAdmin | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.ns, self.cache, self.dirty, self.writeback = ns, cache, dirty, writeback
        self.reader = reader
        self.replies = replies
        self.poller = poller
        self.revalidator = revalidator
        self.pins, self.recaller, self.settings = pins, recaller, settings
        #: recall requests of the control surface: total, running now, most at once
        self.requests = {"recall": 0, "running": 0, "max_parallel": 0}
        parts = Parts(
            ns=ns,
            cache=cache,
            dirty=dirty,
            writeback=writeback,
            reader=reader,
            replies=replies,
            poller=poller,
            revalidator=revalidator,
            cfg=cfg,
            lister=lister,
            remote=remote,
            pins=pins,
            recaller=recaller,
            settings=settings,
            tiering=tiering,
            census=census,
            uploads=uploads,
            requests=self.requests,
        )
        self.figures = Figures(parts)
        self.paths = PathAnswers(parts)
        #: False after `lazy`: the daemon leaves the queue for the next mount when unmounted
        self.drain_on_exit = True
        self.drain_grace = control.DRAIN_GRACE
        self._drain_scope: trio.CancelScope | None = None
        #: who may change policies: the user who mounted the share (and root)
        self.owner_uid = os.getuid()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.figures.run)
            task_status.started()
            await trio.sleep_forever()

    # ------------------------------------------------------------------ what is shown
    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conflicts": self.writeback.conflicts.count,
            # set aside, not pending: {"count", "items": [{"path", "op", "reason"}...]}
            "stuck": self.writeback.stuck_status(),
            "poll": dict(self.poller.stats),
            "revalidate": dict(self.revalidator.stats),
            "read": dict(self.reader.stats),
            "readdir": dict(self.replies.stats),
            "index_trims": self.cache.index_trims,
        }
        if self.writeback.leases is not None:
            out["leases"] = dict(self.writeback.leases.stats)
        out.update(self.figures.status())
        return out

    def state(self, rec: Inode) -> str:
        """`user.fsync.state` of a file."""
        return self.paths.state(rec)

    # ------------------------------------------------------------------ requests
    def getxattr(self, inode: int, name: str) -> bytes:
        """The reads (actions need `getxattr_async`)."""
        if inode == ROOT:
            if name == control.XATTR_PENDING:
                if self._drain_scope is not None:  # someone still waits for the drain
                    self._drain_scope.deadline = trio.current_time() + self.drain_grace
                return self.writeback.status().to_json()
            if name == control.XATTR_PID:
                return str(os.getpid()).encode()
            if name == control.XATTR_STATUS:
                return control.status_json(self.writeback.status(), self.counters())
            if name == control.XATTR_SETTINGS and self.settings is not None:
                return control.json_bytes(dict(self.settings.values()))
            if name == control.XATTR_DIRTY:
                return self.paths.dirty_json()
            if name == control.XATTR_NEXT or name.startswith(control.XATTR_NEXT + "."):
                return self.paths.next_json(_count(name[len(control.XATTR_NEXT) + 1 :]))
        if name == control.XATTR_STATE:
            rec = self.ns.must(inode)
            if rec.kind == FILE:
                return self.state(rec).encode()
        if name == control.XATTR_INFO:
            return self.paths.info(self.ns.must(inode)).to_json()
        raise pyfuse3.FUSEError(ENOATTR)

    async def getxattr_async(self, inode: int, name: str, uid: int | None = None) -> bytes:
        """Every read, actions included; `uid`: who asks (policies are the owner's)."""
        if name.startswith(control.DO):
            return await self.action(inode, name[len(control.DO) :], uid)
        return self.getxattr(inode, name)

    async def snapshot_getxattr(self, inode: int, name: str) -> bytes:
        """Reads of an entry of the snapshot tree: `do.restore` (a share-side restore of that
        file in place); nothing else is there."""
        if name != control.DO + control.ACTION_RESTORE or self.snapshots is None:
            raise pyfuse3.FUSEError(ENOATTR)
        tree = self.snapshots.tree
        node = tree.must(inode) if tree is not None else None
        if node is None or node.snapshot is None or node.rec.kind != FILE or not node.path:
            return control.ActionError("not a file of a snapshot", errno.EINVAL).to_json()
        try:
            done = await self.snapshots.restore_file(node.snapshot, node.path)
        except control.ActionError as exc:
            return exc.to_json()
        except RemoteError as exc:
            return control.ActionError(str(exc), exc.errno, exc.transient).to_json()
        return control.action_ok(**done)

    async def setxattr(self, inode: int, name: str, value: bytes) -> None:
        if inode == ROOT and name == control.XATTR_SYNC:
            await self.poller.full_pass()
            return
        if inode == ROOT and name == control.XATTR_CONTROL:
            cmd = value.decode(errors="replace").strip()
            if cmd == control.CONTROL_LAZY:
                self.drain_on_exit = False
                log.info("lazy unmount requested: the queue finishes at the next mount")
                return
            if cmd == control.CONTROL_DRAIN and self._nursery is not None:
                self._start_drain()
                return
            raise pyfuse3.FUSEError(errno.EINVAL)
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    # ------------------------------------------------------------------ actions
    async def action(self, inode: int, what: str, uid: int | None) -> bytes:
        """Perform `user.fsync.do.<what>` on `inode`: its JSON answer, failures included
        (a one-line reason and an errno), so the command can say why."""
        rec = self.ns.must(inode)
        try:
            if what == control.ACTION_PIN or what == control.ACTION_UNPIN:
                if self.pins is None:
                    raise _unsupported("pinning")
                if what == control.ACTION_PIN:
                    n = await self.pins.pin(rec.ino)
                else:
                    n = await self.pins.unpin(rec.ino)
                return control.action_ok(files=n)
            if what == control.ACTION_RECALL:
                return await self._recall(rec)
            if what == control.ACTION_TIER:
                return self._tier(rec)
            if what.startswith(control.ACTION_SNAPSHOT + ".") or what == control.ACTION_VERSIONS:
                return await self._snapshot_action(rec, what)
            if what.startswith(control.ACTION_SET + "."):
                return self._set(inode, what[len(control.ACTION_SET) + 1 :], uid)
            raise control.ActionError(f"unknown action {what!r}", errno.EINVAL)
        except control.ActionError as exc:
            return exc.to_json()
        except CacheFull as exc:
            return control.ActionError(_reason(exc), errno.ENOSPC).to_json()
        except RemoteError as exc:
            return control.ActionError(str(exc), exc.errno, exc.transient).to_json()
        except OSError as exc:
            return control.ActionError(_reason(exc), exc.errno or errno.EIO).to_json()

    async def _recall(self, rec: Inode) -> bytes:
        if self.recaller is None:
            raise _unsupported("recall")
        if rec.kind != FILE:
            raise control.ActionError("not a regular file", errno.EISDIR)
        req = self.requests
        req["recall"] += 1
        req["running"] += 1
        req["max_parallel"] = max(req["max_parallel"], req["running"])
        try:
            fetched = await self.recaller.recall(rec.ino)
        finally:
            req["running"] -= 1
        fresh = self.ns.get(rec.ino) or rec
        return control.action_ok(fetched=fetched, state=self.state(fresh))

    async def _snapshot_action(self, rec: Inode, what: str) -> bytes:
        if self.snapshots is None:
            raise _unsupported("snapshots")
        verb, _, query = what.partition("?")
        args = dict(parse_qsl(query))
        if verb == control.ACTION_VERSIONS:
            if rec.kind != FILE:
                raise control.ActionError("not a regular file", errno.EISDIR)
            return control.json_bytes({"ok": True, **await self.snapshots.versions(rec.ino)})
        if rec.ino != ROOT:
            raise control.ActionError("snapshots are managed on the mount root", errno.EINVAL)
        if verb == "snapshot.list":
            return control.action_ok(**await self.snapshots.listing())
        if verb == "snapshot.create":
            wait = float(args["wait"]) if "wait" in args else None
            keep = Keep(
                last=_opt_int(args.get("keep")),
                daily=_opt_int(args.get("keep_daily")),
                hourly=_opt_int(args.get("keep_hourly")),
            )
            return control.action_ok(**await self.snapshots.create(wait=wait, keep=keep))
        if verb == "snapshot.delete" and args.get("name"):
            done = await self.snapshots.delete(args["name"], force=args.get("force") == "1")
            return control.action_ok(**done)
        raise control.ActionError(f"unknown action {what!r}", errno.EINVAL)

    def _tier(self, rec: Inode) -> bytes:
        if rec.kind != FILE:
            raise control.ActionError("not a regular file", errno.EISDIR)
        pinned = self.pins.state(rec.ino)[0] if self.pins is not None else False
        if pinned or self.cache.state(rec.ino, rec.size).pinned:
            return control.action_ok(freed=0, skipped="pinned")
        if self.dirty.is_dirty(rec.ino) or self.cache.dirty_bytes(rec.ino):
            return control.action_ok(freed=0, skipped="dirty")
        if self.recaller is not None:
            freed = self.recaller.tier(rec.ino)
        else:
            freed = self.cache.tier(rec.ino)
        return control.action_ok(freed=freed, skipped=None)

    def _set(self, inode: int, arg: str, uid: int | None) -> bytes:
        if self.settings is None:
            raise _unsupported("policies")
        if inode != ROOT:
            raise control.ActionError("policies are set on the mount root", errno.EINVAL)
        if uid is not None and uid not in (0, self.owner_uid):
            raise control.ActionError(
                f"only the user who mounted the share (uid {self.owner_uid}) or root can "
                "change policies",
                errno.EACCES,
            )
        parsed = control.parse_set(arg)
        if parsed is None:
            raise control.ActionError(f"expected NAME=VALUE, got {arg!r}", errno.EINVAL)
        name, value = parsed
        try:
            self.settings.set(name, value)
        except ValueError as exc:
            raise control.ActionError(str(exc), errno.EINVAL) from None
        log.info("policy %s set to %s", name, value)
        return control.action_ok(policies=dict(self.settings.values()))

    # ------------------------------------------------------------------ drain
    def _start_drain(self) -> None:
        assert self._nursery is not None
        st = self.writeback.status()
        if not st.empty:
            log.info(
                "unmount requested: uploading %d operations and %d files (%d bytes)",
                st.ops,
                st.files,
                st.bytes,
            )
        if self._drain_scope is not None:
            self._drain_scope.cancel()  # replaced by this request
        scope = self._drain_scope = trio.CancelScope(
            deadline=trio.current_time() + self.drain_grace
        )
        self._nursery.start_soon(self._drain_request, scope)

    async def _drain_request(self, scope: trio.CancelScope) -> None:
        """Ends (and with it drain mode) when drained, replaced or no longer polled."""
        try:
            with scope:
                await self.writeback.drain()
            if scope.cancelled_caught:
                log.info("drain request ended before the queue was empty")
        finally:
            if self._drain_scope is scope:
                self._drain_scope = None


def _count(text: str) -> int:
    """`user.fsync.next.<N>`'s N (the default when absent or not a number), at most 10000."""
    return min(int(text), 10000) if text.isdigit() else control.NEXT_DEFAULT


def _opt_int(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise control.ActionError(f"not a count: {text!r}", errno.EINVAL)
    return int(text)


def _unsupported(what: str) -> control.ActionError:
    return control.ActionError(f"this mount has no {what}", errno.ENOTSUP)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
