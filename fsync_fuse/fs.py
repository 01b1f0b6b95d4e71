"""The kernel adapter: pyfuse3 requests translated into namespace, cache and queue calls.

Kept thin on purpose: the rules live in namespace/ (entries and the outbox), listing.py
(share listings), reader.py (fetch and read-ahead), writeback/ (the queue) and
control_server.py (`user.fsync.*`). What lives here is what only the kernel interface has:
handles (handles.py), attribute timeouts, and errno translation.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Sequence

import pyfuse3
import trio

from cache import BlockCache, as_bytes
from fsync_fuse import names
from fsync_fuse.attrs import DIR, FILE, LINK, Inode, kind_of_mode
from fsync_fuse.control_server import ControlServer
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.errmap import answer_errors
from fsync_fuse.handles import Handle, References
from fsync_fuse.kattrs import KernelAttributes
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import ROOT, Namespace
from fsync_fuse.notify import KernelNotifier
from fsync_fuse.pins import Pins
from fsync_fuse.poller import Poller
from fsync_fuse.reader import Reader
from fsync_fuse.recall import Recaller
from fsync_fuse.revalidate import Revalidator
from fsync_fuse.snapfs import SnapFS, refuse
from fsync_fuse.space import Space
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.queue import WriteBack
from fsync_fuse.xattrs import CONTROL as XATTR_CONTROL
from fsync_fuse.xattrs import Xattrs
from remote.base import Remote

log = logging.getLogger(__name__)


class FS(pyfuse3.Operations):
    # "." and ".." by node id: the kernel's way back from a file handle to an inode it has
    # forgotten (NFS export, open_by_handle_at); inode numbers are stable and never reused
    supports_dot_lookup = True
    # security.* is never stored (xattrs.py): the kernel's probe before every write is
    # answered by pyfuse3 in C (scripts/pyfuse3_patches.py), not by `getxattr`
    no_file_capabilities = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        dirty: DirtySet,
        writeback: WriteBack,
        lister: Lister,
        reader: Reader,
        revalidator: Revalidator,
        poller: Poller,
        refs: References,
        notifier: KernelNotifier,
        control: ControlServer,
        replies: DirReplies,
        attrs: KernelAttributes,
        space: Space,
        pins: Pins,
        recaller: Recaller,
        xattrs: Xattrs,
        snapfs: SnapFS | None = None,
        fsync_remote: bool = False,
        io_timeout: float = 60.0,
        after_init: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.ns, self.cache, self.remote = ns, cache, remote
        self.dirty, self.writeback = dirty, writeback
        self.lister, self.reader, self.revalidator, self.poller = (
            lister,
            reader,
            revalidator,
            poller,
        )
        self.refs, self.notifier, self.control = refs, notifier, control
        self.replies, self.attrs, self.space = replies, attrs, space
        self.pins, self.recaller = pins, recaller
        self.xattrs = xattrs
        #: the read-only snapshot tree: inodes and handles from snaptree.SNAP_BASE up
        self.snapfs = snapfs
        self.fsync_remote = fsync_remote
        self.io_timeout = io_timeout
        #: called once, on the first open (kernel settings that INIT would overwrite)
        self.after_init = after_init
        self._kernel_cver: dict[int, int] = {}  # ino -> content version the kernel cached

    # ------------------------------------------------------------------ helpers
    def _counted(self, rec: Inode) -> pyfuse3.EntryAttributes:
        self.refs.lookups.add(rec.ino)
        return self.attrs(rec)

    def _dot(self, ino: int, up: bool) -> pyfuse3.EntryAttributes:
        """An inode (or its directory) by number, as a file handle names it: ESTALE once it
        is removed (the number is never given to another entry)."""
        rec = self.ns.get(ino)
        if rec is not None and up and ino != ROOT:
            rec = self.ns.get(rec.parent)
        if rec is None or rec.parent == 0 and rec.ino != ROOT:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return self._counted(rec)

    def _maybe_purge(self, ino: int) -> None:
        if self.refs.referenced(ino):
            return
        rec = self.ns.get(ino)
        if rec is not None and rec.parent == 0 and ino != ROOT:
            for gone in self.ns.purge(ino):
                self._drop_content(gone)

    def _drop_content(self, ino: int) -> None:
        self.cache.delete(ino)
        self.dirty.dropped(ino)
        self._kernel_cver.pop(ino, None)

    def _entries_changed(self, *dirs: int) -> None:
        """Entries of these directories changed here (their mtime moved): the write-back
        takes the new mtime to the share once they are quiet (uploader.py `_upload_dir`)."""
        for d in dict.fromkeys(dirs):
            self.dirty.mark_dir(d)

    def _snap(self, n: int) -> SnapFS | None:
        """The snapshot tree when inode or handle `n` is one of its."""
        return self.snapfs if self.snapfs is not None and self.snapfs.owns(n) else None

    def _writable(self, *inodes: int) -> None:
        if any(self._snap(i) for i in inodes):
            raise refuse()

    def _is_snapdir(self, parent: int, name: bytes) -> bool:
        """The snapshot directory's name in the root (it shadows any entry of that name)."""
        return parent == ROOT and self.snapfs is not None and name == self.snapfs.name

    def _busy(self) -> None:
        """A local change: background work holds back while they keep coming (pacing.py)."""
        self.writeback.local_change()

    # ------------------------------------------------------------------ lookups
    @answer_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if sn := self._snap(parent_inode):
            return await sn.lookup(parent_inode, name)
        if parent_inode == ROOT and self.snapfs is not None and name == self.snapfs.name:
            return await self.snapfs.lookup_root()
        if name in (b".", b".."):
            return self._dot(parent_inode, name == b"..")
        if len(name) > names.MAX_NAME:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        try:
            text = names.decode(name)
        except names.NameError_:
            raise pyfuse3.FUSEError(errno.ENOENT) from None  # cannot exist on the share
        if names.why_invalid(text):
            raise pyfuse3.FUSEError(errno.ENOENT)
        self.poller.used(parent_inode)
        await self.lister.ensure(parent_inode, refresh_stale=False)
        rec = self.ns.lookup(parent_inode, text)
        if rec is None:
            prec = self.ns.get(parent_inode)
            if prec is not None and not self.lister.is_fresh(prec.listed_ns):
                # a name the listing lacks: maybe created elsewhere since (--attr-timeout)
                await self.lister.ensure(parent_inode, refresh_stale=True, strict=True)
                rec = self.ns.lookup(parent_inode, text)
                prec = self.ns.get(parent_inode)
            if rec is None:
                return self._negative(parent_inode, name, prec)
        return self._counted(rec)

    def _negative(self, parent: int, name: bytes, prec: Inode | None) -> pyfuse3.EntryAttributes:
        """No such name. The kernel may remember that (an entry with inode 0) for as long as
        the listing that says so counts as fresh for a miss (--attr-timeout), sparing the
        lookups that follow (SQLite's journal, searches along a path); a name a listing
        brings in later is pushed out of the kernel at once (notify.py)."""
        left = self.lister.fresh_for(prec.listed_ns) if prec is not None else 0.0
        log.debug("lookup %r in %d: no such name (kept by the kernel %.2fs)", name, parent, left)
        if left <= 0:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(0)
        a.entry_timeout = left
        a.attr_timeout = 0
        return a

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            try:
                if sn := self._snap(ino):
                    sn.forget(ino, n)
                elif not self.refs.lookups.forget(ino, n):
                    self._maybe_purge(ino)
            except Exception:  # forget must never raise
                log.exception("forget of inode %d failed", ino)

    @answer_errors
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if sn := self._snap(inode):
            return await sn.getattr(inode)
        return self.attrs(self.ns.must(inode))

    @answer_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._writable(inode)
        self._busy()
        rec = self.ns.must(inode)
        is_file = rec.kind == FILE
        if fields.update_size:
            if not is_file:
                raise pyfuse3.FUSEError(errno.EISDIR if rec.is_dir else errno.EINVAL)
            self.dirty.sync_remote_valid(rec)
        owner_or_mode = fields.update_mode or fields.update_uid or fields.update_gid
        rec = self.ns.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            size=attr.st_size if fields.update_size else None,
            queue=not is_file,  # a file's upload carries its attributes
        )
        if fields.update_size:
            self.space.resized(inode, attr.st_size)
        if is_file and (owner_or_mode or fields.update_mtime or fields.update_atime):
            # the metadata goes with the upload when it holds what changed
            self.dirty.mark_dirty(inode, meta=bool(owner_or_mode or fields.update_atime))
        return self.attrs(rec)

    # ------------------------------------------------------------------ creating
    async def _new(
        self,
        parent: int,
        name: bytes,
        kind: str,
        mode: int,
        ctx: pyfuse3.RequestContext,
        target: str | None = None,
        rdev: int = 0,
        *,
        staged: bool = False,
    ) -> Inode:
        self._writable(parent)
        if self._is_snapdir(parent, name):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self._busy()
        text = names.decode(name)
        names.check(text)
        await self.lister.ensure(parent, refresh_stale=False)
        rec = self.ns.create(
            parent, text, kind, mode, ctx.uid, ctx.gid, target, rdev, staged=staged
        )
        self._entries_changed(parent)
        self.pins.created(rec.ino)
        return rec

    @answer_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        # staged: the new entry becomes durable with this handle's commit (`_commit`, at
        # flush, fsync or release), so the handle counts as written from the start
        rec = await self._new(parent_inode, name, FILE, mode, ctx, staged=True)
        fh = self.refs.open_file(rec.ino)
        self.refs.file(fh).wrote = True
        self._kernel_cver[rec.ino] = rec.cver
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), self._counted(rec)

    @answer_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        kind = kind_of_mode(mode)
        if kind is None or kind in (DIR, LINK):  # mkdir and symlink have their own calls
            raise pyfuse3.FUSEError(errno.EINVAL)
        # fifos, sockets and device nodes: marked empty files (attrs.py)
        return self._counted(await self._new(parent_inode, name, kind, mode, ctx, rdev=rdev))

    @answer_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._counted(await self._new(parent_inode, name, DIR, mode, ctx))

    @answer_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(target)
        rec = await self._new(parent_inode, name, LINK, 0o777, ctx, target=text)
        self.cache.set_remote_valid(rec.ino, 0)
        return self._counted(rec)

    @answer_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if len(new_name) > names.MAX_NAME:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        log.info("refusing hard link: the share cannot hold two names for one file")
        raise pyfuse3.FUSEError(errno.EPERM)

    @answer_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        if sn := self._snap(inode):
            return await sn.readlink(inode)
        rec = self.ns.must(inode)
        if rec.kind != LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if rec.target is None:
            data = as_bytes(await self.reader.fetcher(inode)(0, rec.size))
            rec = self.ns.update(inode, target=data.decode("utf-8", "surrogateescape")) or rec
        return os.fsencode(rec.target or "")

    # ------------------------------------------------------------------ removing, renaming
    @answer_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable(parent_inode)
        if self._is_snapdir(parent_inode, name):
            raise refuse()
        self._busy()
        rec, purged = self.ns.remove(
            parent_inode,
            names.decode(name),
            is_dir=False,
            referenced=self.refs.referenced,
            is_open=self.refs.is_open,
        )
        self._entries_changed(parent_inode)
        if purged:
            self._drop_content(rec.ino)

    @answer_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable(parent_inode)
        if self._is_snapdir(parent_inode, name):
            raise refuse()
        self._busy()
        text = names.decode(name)
        child = self.ns.lookup(parent_inode, text)
        if child is not None and child.is_dir:
            # emptiness on the share too
            await self.lister.ensure(child.ino, refresh_stale=True, strict=True)
        self.ns.remove(parent_inode, text, is_dir=True, referenced=self.refs.referenced)
        self._entries_changed(parent_inode)

    @answer_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._writable(parent_inode_old, parent_inode_new)
        if self._is_snapdir(parent_inode_old, name_old) or self._is_snapdir(
            parent_inode_new, name_new
        ):
            raise refuse()
        self._busy()
        if flags & pyfuse3.RENAME_EXCHANGE:
            log.info("refusing RENAME_EXCHANGE: the share cannot swap two entries atomically")
            raise pyfuse3.FUSEError(errno.EINVAL)
        new = names.decode(name_new)
        await self.lister.ensure(parent_inode_new, refresh_stale=False)
        target = self.ns.lookup(parent_inode_new, new)
        if target is not None and target.is_dir:
            await self.lister.ensure(target.ino, refresh_stale=True, strict=True)
        _rec, victim, purged = self.ns.rename(
            parent_inode_old,
            names.decode(name_old),
            parent_inode_new,
            new,
            noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
            referenced=self.refs.referenced,
            is_open=self.refs.is_open,
        )
        self._entries_changed(parent_inode_old, parent_inode_new)
        if victim is not None and purged:
            self._drop_content(victim.ino)
        if self.pins.explicit:
            await self.pins.moved(_rec.ino)

    # ------------------------------------------------------------------ files
    @answer_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        after_init, self.after_init = self.after_init, None
        if after_init is not None:  # the kernel took our INIT reply by now
            after_init()
        if sn := self._snap(inode):
            return await sn.open(inode, flags)
        rec = self.ns.must(inode)
        if rec.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self.recaller.bump(inode)  # waiting for a background recall: it goes first
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        self.poller.used(rec.parent)
        if (
            not self.refs.is_open(inode)  # open elsewhere: its readers keep their version
            and await self._revalidate(inode) is not None
        ):
            rec = self.ns.must(inode)  # a newer version on the share: pages are not kept
            # and the size the kernel got at lookup is stale
            await self.notifier.attributes_changed(inode)
        self.dirty.sync_remote_valid(rec)
        if flags & os.O_TRUNC and writable and rec.kind == FILE and rec.size:
            # libfuse turns on atomic_o_trunc: the kernel sends O_TRUNC here, no setattr
            rec = self.space.truncate(inode, 0)
        fh = self.refs.open_file(inode)
        # Keep the kernel's page cache only if the share's content did not change since the
        # kernel last cached this file.
        keep = self._kernel_cver.get(inode) == rec.cver
        self._kernel_cver[inode] = rec.cver
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def _revalidate(self, inode: int) -> Inode | None:
        """Close-to-open check, skipped while the share is down and waited for at most the
        lister's bound: an outage must not hold every open for the retry budget."""
        if self.lister.share_down:
            return None
        with trio.move_on_after(self.lister.wait_bound):
            return await self.revalidator.check(inode)
        self.lister.share_down = True
        return None

    @answer_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if sn := self._snap(fh):
            return await sn.read(fh, off, size)
        h = self.refs.file(fh)
        return await self.reader.read(h.ino, off, size, h.ra)

    @answer_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._busy()
        h = self.refs.file(fh)
        await self.cache.write(h.ino, off, buf, fetch=self.reader.fetcher(h.ino))
        self.ns.wrote(h.ino, off + len(buf))
        self.dirty.mark_dirty(h.ino)
        h.wrote = True
        return len(buf)

    @answer_errors
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2) (pyfuse3 gets the handler from scripts/pyfuse3_patches.py)."""
        self._busy()
        h = self.refs.file(fh)
        if await self.space.fallocate(h.ino, mode, offset, length):
            h.wrote = True

    async def _commit(self, h: Handle) -> None:
        """Make what this handle wrote survive a crash: the data files fdatasync'ed, then the
        cache index and the namespace's records in one synced transaction."""
        if h.wrote:
            h.wrote = False
            await self.cache.commit_async(also=self.ns.write_pending)

    @answer_errors
    async def flush(self, fh: int) -> None:
        if self._snap(fh):
            return
        self._busy()
        await self._commit(self.refs.file(fh))

    @answer_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        if self._snap(fh):
            return
        h = self.refs.file(fh)
        h.wrote = True
        await self._commit(h)
        if self.fsync_remote:
            with trio.move_on_after(self.io_timeout) as scope:
                await self.writeback.flush_now(h.ino)
            if scope.cancelled_caught:
                log.warning(
                    "fsync of %r: the share did not take it within %.0fs; it stays queued",
                    self.ns.path(h.ino),
                    self.io_timeout,
                )
                raise pyfuse3.FUSEError(errno.EIO)

    @answer_errors
    async def release(self, fh: int) -> None:
        if sn := self._snap(fh):
            return await sn.release(fh)
        self._busy()
        h, last = self.refs.close_file(fh)
        h.ra.reset()
        try:
            await self._commit(h)
        finally:  # a failed commit must not leave the file counted as open forever
            if last:
                self.reader.closed(h.ino)
                self._maybe_purge(h.ino)

    # ------------------------------------------------------------------ directories
    @answer_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if sn := self._snap(inode):
            return await sn.opendir(inode)
        self.poller.used(inode)
        await self.lister.open_dir(inode)
        return self.refs.open_dir(inode)

    @answer_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if sn := self._snap(fh):
            return await sn.readdir(fh, start_id, token)
        counted = self.refs.lookups.add
        reply = pyfuse3.readdir_reply
        for off, name, attrs, ino in self.replies.replies(
            self.refs.directory(fh), start_id, self.ns.children, self.attrs
        ):
            if not reply(token, name, attrs, off):
                return
            counted(ino)

    async def releasedir(self, fh: int) -> None:
        if sn := self._snap(fh):
            return sn.releasedir(fh)
        self.refs.close_dir(fh)

    @answer_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        if self._snap(fh):
            return
        await self.cache.commit_async(also=self.ns.write_pending)

    # ------------------------------------------------------------------ the share
    @answer_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return await self.space.usage()

    # ------------------------------------------------------------------ the control surface
    # ------------------------------------------------------------------ extended attributes
    # user.fsync.* is the control surface (control_server.py, read and written by name, never
    # listed); other user.* names live in the share's metadata (xattrs.py)
    @answer_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        text = os.fsdecode(name)
        log.debug("getxattr %s of inode %d", text, inode)
        if self._snap(inode):
            return await self.control.snapshot_getxattr(inode, text)
        if text.startswith(XATTR_CONTROL):
            return await self.control.getxattr_async(inode, text, ctx.uid)
        got = await self.xattrs.get(inode, text)
        if got is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return got

    @answer_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        if self._snap(inode):
            return []
        return [os.fsencode(n) for n in await self.xattrs.list(inode)]

    @answer_errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._writable(inode)
        text = os.fsdecode(name)
        if text.startswith(XATTR_CONTROL):
            return await self.control.setxattr(inode, text, value)
        self._busy()
        await self.xattrs.set(inode, text, bytes(value))

    @answer_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable(inode)
        text = os.fsdecode(name)
        if text.startswith(XATTR_CONTROL):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        self._busy()
        await self.xattrs.set(inode, text, None)
