"""Telling the kernel that what it caches changed under it (entries, attributes, pages).

Listings merged from the share, conflicts resolved and close-to-open checks change entries
the kernel may hold in its dentry, attribute and page caches for up to the listing TTL; each
change is pushed here at once. Nothing is sent while the filesystem is not mounted.
"""

from __future__ import annotations

import contextlib
import logging

import pyfuse3
import trio

from fsync_fuse.handles import References
from fsync_fuse.namespace import MergeResult, Namespace
from fsync_fuse.tasks import TaskOwner

log = logging.getLogger(__name__)


class KernelNotifier(TaskOwner):
    """Its nursery (tasks.py) owns the page invalidations, which run in threads."""

    def __init__(
        self,
        *,
        ns: Namespace,
        refs: References,
    ) -> None:
        self.ns = ns
        self.refs = refs
        #: set by the daemon between pyfuse3.init and close (the in-process harness never)
        self.mounted = False

    def _forget_name(self, parent: int, name: str, deleted: int = 0) -> None:
        pyfuse3.invalidate_entry_async(
            pyfuse3.InodeT(parent),
            pyfuse3.FileNameT(name.encode()),
            deleted=pyfuse3.InodeT(deleted),
            ignore_enoent=True,
        )

    def merged(self, dir_ino: int, res: MergeResult) -> None:
        """A listing changed entries under the kernel's feet: make it ask again."""
        if not self.mounted:
            return
        for name, ino in res.removed:
            self._forget_name(dir_ino, name, deleted=ino)
        for name, ino in res.renamed:
            self._forget_name(dir_ino, name)
            rec = self.ns.get(ino)
            if rec is not None:
                self._forget_name(dir_ino, rec.name)
        for old_parent, name, ino in res.moved_in:
            self._forget_name(old_parent, name)
            rec = self.ns.get(ino)
            if rec is not None:
                self._forget_name(dir_ino, rec.name)
        for ino in [] if res.first else res.added:
            # the kernel may hold a negative entry for the new name
            rec = self.ns.get(ino)
            if rec is not None:
                self._forget_name(dir_ino, rec.name)
        for rec in res.changed:
            self.content_changed(rec.ino)

    def name_changed(self, parent: int, name: str) -> None:
        """`name` in `parent` means another file now (a conflict moved a version aside)."""
        if self.mounted:
            self._forget_name(parent, name)

    def content_changed(self, ino: int) -> None:
        """Drop the kernel's attributes and pages of an inode whose content changed."""
        if self.mounted and ino in self.refs.lookups and self._nursery is not None:
            # From a thread: invalidating pages can wait on requests we are serving.
            self._nursery.start_soon(self._invalidate_inode, ino)

    @staticmethod
    async def _invalidate_inode(ino: int) -> None:
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, pyfuse3.InodeT(ino), False)
        except OSError:
            pass
        except Exception:  # a background task never takes the mount down
            log.exception("invalidating inode %d in the kernel failed", ino)

    async def attributes_changed(self, ino: int) -> None:
        """Drop the kernel's attributes of `ino` (not its pages): takes no lock the kernel
        holds while it waits for the open that calls this."""
        if self.mounted:
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, pyfuse3.InodeT(ino), True)
