"""The daemon's side of the control surface (control.py names the attributes and shapes).

The kernel adapter hands every `user.fsync.*` request here. A drain request runs in this
object's nursery, in its own cancel scope: drain mode (no quiet delay) lasts until the queue
is empty, a newer request replaces it, or nobody read `user.fsync.pending` for DRAIN_GRACE
seconds (the unmount command that asked gave up).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import pyfuse3
import trio

from cache import BlockCache
from fsync_fuse import control
from fsync_fuse.attrs import Inode
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.namespace import ROOT, Namespace
from fsync_fuse.poller import Poller
from fsync_fuse.reader import Reader
from fsync_fuse.revalidate import Revalidator
from fsync_fuse.tasks import TaskOwner
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.queue import WriteBack

log = logging.getLogger(__name__)

ENOATTR = pyfuse3.ENOATTR


class ControlServer(TaskOwner):
    """Its nursery (tasks.py) owns the drain requests."""

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
    ) -> None:
        self.ns, self.cache, self.dirty, self.writeback = ns, cache, dirty, writeback
        self.reader = reader
        self.replies = replies
        self.poller = poller
        self.revalidator = revalidator
        #: False after `lazy`: the daemon leaves the queue for the next mount when unmounted
        self.drain_on_exit = True
        self.drain_grace = control.DRAIN_GRACE
        self._drain_scope: trio.CancelScope | None = None

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
        return out

    def state(self, rec: Inode) -> str:
        """`user.fsync.state` of a file."""
        self.dirty.sync_remote_valid(rec)
        st = self.cache.state(rec.ino, rec.size)
        if self.dirty.is_dirty(rec.ino) or st.dirty:
            word = "dirty"
        elif st.full:
            word = "local"
        elif st.partial:
            word = "partial"
        else:
            word = "tiered"
        return word + (",pinned" if st.pinned else "")

    # ------------------------------------------------------------------ requests
    def getxattr(self, inode: int, name: str) -> bytes:
        if inode == ROOT:
            if name == control.XATTR_PENDING:
                if self._drain_scope is not None:  # someone still waits for the drain
                    self._drain_scope.deadline = trio.current_time() + self.drain_grace
                return self.writeback.status().to_json()
            if name == control.XATTR_PID:
                return str(os.getpid()).encode()
            if name == control.XATTR_STATUS:
                return control.status_json(self.writeback.status(), self.counters())
        if name == control.XATTR_STATE:
            rec = self.ns.must(inode)
            if not rec.is_dir:
                return self.state(rec).encode()
        raise pyfuse3.FUSEError(ENOATTR)

    def listxattr(self, inode: int) -> list[str]:
        if inode == ROOT:
            return list(control.ROOT_READABLE)
        rec = self.ns.must(inode)
        return [] if rec.is_dir else list(control.FILE_READABLE)

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
