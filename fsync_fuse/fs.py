"""The kernel adapter: pyfuse3 requests translated into namespace, cache and queue calls.

Kept thin on purpose: the rules live in namespace.py (entries and the outbox), listing.py
(share listings), reader.py (fetch and read-ahead) and writeback.py (the queue). What lives
here is what only the kernel interface has: lookup counts, open handles, attribute timeouts,
extended attributes for status, and errno translation.

Lookup counting follows pyfuse3: lookup, create, mkdir, symlink and each readdir_reply that
returns True add one; forget subtracts. An inode unlinked while counted or open stays as an
orphan in the namespace until both drop to zero.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyfuse3
import trio

from fsync_fuse import names
from fsync_fuse.attrs import DIR, FILE, LINK, Inode
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.listing import Lister
from fsync_fuse.lookups import LookupCounts
from fsync_fuse.namespace import ROOT, MergeResult, Namespace
from fsync_fuse.reader import Reader, ReadState
from fsync_fuse.writeback import WriteBack
from remote.base import Remote, RemoteError

log = logging.getLogger(__name__)

XATTR_STATE = b"user.fsync.state"
XATTR_PENDING = b"user.fsync.pending"
XATTR_PID = b"user.fsync.pid"
XATTR_CONTROL = b"user.fsync.control"
XATTR_SYNC = b"user.fsync.sync"  # set (any value): re-list everything now; returns when done
XATTR_STATUS = b"user.fsync.status"  # JSON: queue, conflicts, polling counters
ENOATTR = pyfuse3.ENOATTR


def _errors(fn):
    """Answer the kernel with an errno for every failure, logging one line for real ones."""

    @functools.wraps(fn)
    async def wrapper(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except RemoteError as exc:
            log.warning("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except OSError as exc:  # FsError, NameError_, CacheFull
            if exc.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL):
                log.info("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


@dataclass
class Handle:
    ino: int
    writable: bool
    wrote: bool = False
    ra: ReadState = field(default_factory=ReadState)


class FS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        ns: Namespace,
        cache,
        remote: Remote,
        wb: WriteBack,
        lister: Lister,
        reader: Reader,
        *,
        attr_timeout: float = 1.0,  # the kernel's entry/attribute timeouts (the listing TTL)
        fsync_remote: bool = False,
        io_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.ns, self.cache, self.remote = ns, cache, remote
        self.wb, self.lister, self.reader = wb, lister, reader
        self.attr_timeout = attr_timeout
        self.fsync_remote = fsync_remote
        self.io_timeout = io_timeout
        self.lookups = LookupCounts()
        self.opened: dict[int, int] = {}
        self.writers: dict[int, int] = {}  # ino -> open handles that may write
        self.handles: dict[int, Handle] = {}
        self.dir_handles: dict[int, int] = {}  # fh -> directory inode
        self.replies = DirReplies(ns.children, self._attrs)
        ns.on_dir_change = self.replies.changed
        self._next_fh = 1
        self._kernel_cver: dict[int, int] = {}
        self._usage: tuple[float, pyfuse3.StatvfsData] | None = None
        self.drain_on_exit = True
        self.mounted = False
        self.terminated = False  # we ended the FUSE loop ourselves (signal)
        #: called once, on the first open (kernel settings that INIT would overwrite)
        self.after_init: Callable[[], None] | None = None
        self.nursery: trio.Nursery | None = None
        #: the running `user.fsync.control=drain` request: drain mode (no quiet delay) lasts
        #: until the queue is empty, a newer request replaces it, or nobody polled
        #: `user.fsync.pending` for `drain_grace` seconds (the unmount command gave up)
        self._drain_scope: trio.CancelScope | None = None
        self.drain_grace = 30.0
        #: change detection and close-to-open (poller.py, revalidate.py); optional
        self.poller = None
        self.revalidator = None
        lister.referenced = self.referenced
        lister.in_use = self._is_open
        lister.on_merge = self._merged
        wb.writing = lambda ino: self.writers.get(ino, 0) > 0
        reader.sync_remote_valid = self._sync_remote_valid

    # ------------------------------------------------------------------ helpers
    def referenced(self, ino: int) -> bool:
        return ino in self.lookups or self.opened.get(ino, 0) > 0

    def _is_open(self, ino: int) -> bool:
        return self.opened.get(ino, 0) > 0

    def _attrs(self, rec: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = rec.ino
        a.generation = 0
        a.entry_timeout = self.attr_timeout
        a.attr_timeout = self.attr_timeout
        a.st_mode = rec.st_mode
        a.st_nlink = 1
        a.st_uid = rec.uid
        a.st_gid = rec.gid
        a.st_rdev = 0
        a.st_size = rec.size
        a.st_blksize = self.cache.block_size
        a.st_blocks = (rec.size + 511) // 512
        a.st_atime_ns = rec.mtime_ns
        a.st_mtime_ns = rec.mtime_ns
        a.st_ctime_ns = rec.ctime_ns or rec.mtime_ns
        return a

    def _counted(self, rec: Inode) -> pyfuse3.EntryAttributes:
        self.lookups.add(rec.ino)
        return self._attrs(rec)

    def _maybe_purge(self, ino: int) -> None:
        if self.referenced(ino):
            return
        rec = self.ns.get(ino)
        if rec is not None and rec.parent == 0 and ino != ROOT:
            for gone in self.ns.purge(ino):
                self._drop_content(gone)

    def _drop_content(self, ino: int) -> None:
        self.cache.delete(ino)
        self.wb.dropped(ino)
        self._kernel_cver.pop(ino, None)

    def _merged(self, dir_ino: int, res: MergeResult) -> None:
        """A listing changed entries under the kernel's feet: make it ask again."""
        if not self.mounted:
            return
        for name, ino in res.removed:
            pyfuse3.invalidate_entry_async(dir_ino, name.encode(), deleted=ino, ignore_enoent=True)
        for name, ino in res.renamed:
            pyfuse3.invalidate_entry_async(dir_ino, name.encode(), ignore_enoent=True)
            rec = self.ns.get(ino)
            if rec is not None:
                pyfuse3.invalidate_entry_async(dir_ino, rec.name.encode(), ignore_enoent=True)
        for old_parent, name, ino in res.moved_in:
            pyfuse3.invalidate_entry_async(old_parent, name.encode(), ignore_enoent=True)
            rec = self.ns.get(ino)
            if rec is not None:
                pyfuse3.invalidate_entry_async(dir_ino, rec.name.encode(), ignore_enoent=True)
        for ino in [] if res.first else res.added:
            # the kernel may hold a negative entry for the new name
            rec = self.ns.get(ino)
            if rec is not None:
                pyfuse3.invalidate_entry_async(dir_ino, rec.name.encode(), ignore_enoent=True)
        for rec in res.changed:
            self.invalidate_later(rec.ino)

    def conflicted(self, parent: int, name: str) -> None:
        """A conflict gave `name` in `parent` another meaning: the kernel forgets the name,
        the listing brings in what the share now holds."""
        if self.mounted:
            pyfuse3.invalidate_entry_async(parent, name.encode(), ignore_enoent=True)
        self.lister.refresh_later(parent)

    def invalidate_later(self, ino: int) -> None:
        """Drop the kernel's attributes and pages of an inode whose content changed."""
        if self.mounted and ino in self.lookups and self.nursery is not None:
            # From a thread: invalidating pages can wait on requests we are serving.
            self.nursery.start_soon(self._invalidate_inode, ino)

    @staticmethod
    async def _invalidate_inode(ino: int) -> None:
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, False)
        except OSError:
            pass
        except Exception:  # a background task never takes the mount down
            log.exception("invalidating inode %d in the kernel failed", ino)

    def _sync_remote_valid(self, rec: Inode) -> None:
        """Tell the cache how much of a clean file the share holds. Done lazily (on open,
        truncate, status) so a million listed files do not cost a million cache records; for
        a clean file it is always the share's size, dirty files are the cache's business."""
        if (
            rec.kind != DIR
            and rec.remote_size is not None
            and not self.wb.is_dirty(rec.ino)
            and not self.cache.dirty_bytes(rec.ino)
        ):
            if self.cache.remote_valid(rec.ino) != rec.remote_size:
                log.debug(
                    "inode %d: remote_valid %d -> %d",
                    rec.ino,
                    self.cache.remote_valid(rec.ino),
                    rec.remote_size,
                )
            self.cache.set_remote_valid(rec.ino, rec.remote_size)

    def _name(self, raw: bytes) -> str:
        return names.decode(raw)

    def _busy(self) -> None:
        """A local change: background work holds back while they keep coming
        (WriteBack.yield_to_burst)."""
        self.wb.activity_at = trio.current_time()

    # ------------------------------------------------------------------ lookups
    @_errors
    async def lookup(self, parent_inode, name, ctx=None):
        text = self._name(name)
        if names.why_invalid(text):
            raise pyfuse3.FUSEError(errno.ENOENT)
        if self.poller is not None:
            self.poller.used(parent_inode)
        await self.lister.ensure(parent_inode, refresh_stale=False)
        rec = self.ns.lookup(parent_inode, text)
        if rec is None:
            prec = self.ns.get(parent_inode)
            if prec is not None and not self.lister.is_fresh(prec.listed_ns):
                # a name the listing lacks: maybe created elsewhere since (--attr-timeout)
                await self.lister.ensure(parent_inode, refresh_stale=True, strict=True)
                rec = self.ns.lookup(parent_inode, text)
        if rec is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._counted(rec)

    def forget(self, inode_list):
        for ino, n in inode_list:
            try:
                if not self.lookups.forget(ino, n):
                    self._maybe_purge(ino)
            except Exception:  # forget must never raise
                log.exception("forget of inode %d failed", ino)

    @_errors
    async def getattr(self, inode, ctx=None):
        return self._attrs(self.ns.must(inode))

    @_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        self._busy()
        rec = self.ns.must(inode)
        is_file = rec.kind == FILE
        if fields.update_size:
            if not is_file:
                raise pyfuse3.FUSEError(errno.EISDIR if rec.is_dir else errno.EINVAL)
            self._sync_remote_valid(rec)
        owner_or_mode = fields.update_mode or fields.update_uid or fields.update_gid
        rec = self.ns.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            size=attr.st_size if fields.update_size else None,
            queue=not is_file,  # a file's upload carries its attributes
        )
        if fields.update_size:
            self._truncated(inode, attr.st_size)
        if is_file and (owner_or_mode or fields.update_mtime):
            self.wb.mark_dirty(inode, meta=bool(owner_or_mode))
        return self._attrs(rec)

    def _truncate(self, inode: int, size: int) -> Inode:
        rec = self.ns.setattr(inode, size=size, queue=False)
        self._truncated(inode, size)
        return rec

    def _truncated(self, inode: int, size: int) -> None:
        # The low-water mark and the new size are durable (mark_dirty flushes them in one
        # transaction) before the cache drops any data: a crash in between must not leave
        # the share's old bytes above `size` looking current (cache/INVARIANTS.md).
        self.wb.mark_dirty(inode, truncated_to=size)
        self.ns.flush()
        self.cache.truncate(inode, size)

    # ------------------------------------------------------------------ creating
    async def _new(self, parent, name, kind, mode, ctx, target=None) -> Inode:
        self._busy()
        text = self._name(name)
        names.check(text)
        await self.lister.ensure(parent, refresh_stale=False)
        return self.ns.create(parent, text, kind, mode, ctx.uid, ctx.gid, target)

    @_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        rec = await self._new(parent_inode, name, FILE, mode, ctx)
        fh = self._open_handle(rec.ino, writable=True)
        self._kernel_cver[rec.ino] = rec.cver
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), self._counted(rec)

    @_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        if not stat.S_ISREG(mode):
            log.info("refusing mknod of a special file: the share holds files and directories")
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        return self._counted(await self._new(parent_inode, name, FILE, mode, ctx))

    @_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._counted(await self._new(parent_inode, name, DIR, mode, ctx))

    @_errors
    async def symlink(self, parent_inode, name, target, ctx):
        text = os.fsdecode(target)
        rec = await self._new(parent_inode, name, LINK, 0o777, ctx, target=text)
        self.cache.set_remote_valid(rec.ino, 0)
        return self._counted(rec)

    @_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        log.info("refusing hard link: the share cannot hold two names for one file")
        raise pyfuse3.FUSEError(errno.EPERM)

    @_errors
    async def readlink(self, inode, ctx):
        rec = self.ns.must(inode)
        if rec.kind != LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if rec.target is None:
            data = await self.reader.fetcher(inode)(0, rec.size)
            rec = self.ns.update(inode, target=data.decode("utf-8", "surrogateescape")) or rec
        return os.fsencode(rec.target or "")

    # ------------------------------------------------------------------ removing, renaming
    @_errors
    async def unlink(self, parent_inode, name, ctx):
        self._busy()
        rec, purged = self.ns.remove(
            parent_inode,
            self._name(name),
            is_dir=False,
            referenced=self.referenced,
            is_open=self._is_open,
        )
        if purged:
            self._drop_content(rec.ino)

    @_errors
    async def rmdir(self, parent_inode, name, ctx):
        self._busy()
        text = self._name(name)
        child = self.ns.lookup(parent_inode, text)
        if child is not None and child.is_dir:
            # emptiness on the share too
            await self.lister.ensure(child.ino, refresh_stale=True, strict=True)
        self.ns.remove(parent_inode, text, is_dir=True, referenced=self.referenced)

    @_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self._busy()
        if flags & pyfuse3.RENAME_EXCHANGE:
            log.info("refusing RENAME_EXCHANGE: the share cannot swap two entries atomically")
            raise pyfuse3.FUSEError(errno.EINVAL)
        new = self._name(name_new)
        await self.lister.ensure(parent_inode_new, refresh_stale=False)
        target = self.ns.lookup(parent_inode_new, new)
        if target is not None and target.is_dir:
            await self.lister.ensure(target.ino, refresh_stale=True, strict=True)
        _rec, victim, purged = self.ns.rename(
            parent_inode_old,
            self._name(name_old),
            parent_inode_new,
            new,
            noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
            referenced=self.referenced,
            is_open=self._is_open,
        )
        if victim is not None and purged:
            self._drop_content(victim.ino)

    # ------------------------------------------------------------------ files
    def _open_handle(self, ino: int, writable: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(ino, writable)
        self.opened[ino] = self.opened.get(ino, 0) + 1
        if writable:
            self.writers[ino] = self.writers.get(ino, 0) + 1
        return fh

    @_errors
    async def open(self, inode, flags, ctx):
        if self.after_init is not None:  # the kernel took our INIT reply by now
            self.after_init, after_init = None, self.after_init
            after_init()
        rec = self.ns.must(inode)
        if rec.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if self.poller is not None:
            self.poller.used(rec.parent)
        if (
            self.revalidator is not None
            and not self.opened.get(inode)  # open elsewhere: its readers keep their version
            and await self._revalidate(inode) is not None
        ):
            rec = self.ns.must(inode)  # a newer version on the share: pages are not kept
            if self.mounted:
                # and the size the kernel got at lookup is stale (attributes only: takes no
                # lock the kernel holds while it waits for this open)
                with contextlib.suppress(OSError):
                    await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, True)
        self._sync_remote_valid(rec)
        if flags & os.O_TRUNC and writable and rec.kind == FILE and rec.size:
            # libfuse turns on atomic_o_trunc: the kernel sends O_TRUNC here, no setattr
            rec = self._truncate(inode, 0)
        fh = self._open_handle(inode, writable)
        # Keep the kernel's page cache only if the share's content did not change since the
        # kernel last cached this file.
        keep = self._kernel_cver.get(inode) == rec.cver
        self._kernel_cver[inode] = rec.cver
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def _revalidate(self, inode: int) -> Inode | None:
        """Close-to-open check, skipped while the share is down and waited for at most the
        lister's bound: an outage must not hold every open for the retry budget (S2-3)."""
        if self.lister.share_down:
            return None
        with trio.move_on_after(self.lister.wait_bound):
            return await self.revalidator.check(inode)
        self.lister.share_down = True
        return None

    @_errors
    async def read(self, fh, off, size):
        h = self.handles[fh]
        return await self.reader.read(h.ino, off, size, h.ra)

    @_errors
    async def write(self, fh, off, buf):
        self._busy()
        h = self.handles[fh]
        await self.cache.write(h.ino, off, buf, fetch=self.reader.fetcher(h.ino))
        self.ns.wrote(h.ino, off + len(buf))
        self.wb.mark_dirty(h.ino)
        h.wrote = True
        return len(buf)

    async def _commit(self, h: Handle) -> None:
        """Make what this handle wrote survive a crash: namespace records, then the cache
        (data files fdatasync'ed, index synced)."""
        if h.wrote:
            h.wrote = False
            self.ns.flush()
            await self.cache.commit_async()

    @_errors
    async def flush(self, fh):
        self._busy()
        await self._commit(self.handles[fh])

    @_errors
    async def fsync(self, fh, datasync):
        h = self.handles[fh]
        h.wrote = True
        await self._commit(h)
        if self.fsync_remote:
            with trio.move_on_after(self.io_timeout) as scope:
                await self.wb.flush_now(h.ino)
            if scope.cancelled_caught:
                log.warning(
                    "fsync of %r: the share did not take it within %.0fs; it stays queued",
                    self.ns.path(h.ino),
                    self.io_timeout,
                )
                raise pyfuse3.FUSEError(errno.EIO)

    @_errors
    async def release(self, fh):
        self._busy()
        h = self.handles.pop(fh)
        h.ra.reset()
        if h.writable:
            n = self.writers.get(h.ino, 0) - 1
            if n > 0:
                self.writers[h.ino] = n
            else:
                self.writers.pop(h.ino, None)
        await self._commit(h)
        left = self.opened.get(h.ino, 0) - 1
        if left > 0:
            self.opened[h.ino] = left
        else:
            self.opened.pop(h.ino, None)
            self.reader.closed(h.ino)
            self._maybe_purge(h.ino)

    # ------------------------------------------------------------------ directories
    @_errors
    async def opendir(self, inode, ctx):
        if self.poller is not None:
            self.poller.used(inode)
        await self.lister.ensure(inode, refresh_stale=True)
        fh = self._next_fh
        self._next_fh += 1
        self.dir_handles[fh] = inode
        return fh

    @_errors
    async def readdir(self, fh, start_id, token):
        counted = self.lookups.add
        reply = pyfuse3.readdir_reply
        for off, name, attrs, ino in self.replies.replies(self.dir_handles[fh], start_id):
            if not reply(token, name, attrs, off):
                return
            counted(ino)

    async def releasedir(self, fh):
        self.dir_handles.pop(fh, None)

    @_errors
    async def fsyncdir(self, fh, datasync):
        self.ns.flush()
        await self.cache.commit_async()

    # ------------------------------------------------------------------ the share
    @_errors
    async def statfs(self, ctx):
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] > 30:
            s = pyfuse3.StatvfsData()
            bs = 4096
            s.f_bsize = self.cache.block_size
            s.f_frsize = bs
            quota, used = 5 << 40, 0
            with trio.move_on_after(5):
                try:
                    u = await self.remote.usage()
                    quota, used = u.quota_bytes or quota, u.used_bytes
                except RemoteError as exc:
                    log.debug("share usage unavailable: %s", exc)
                    if self._usage is not None:
                        return self._usage[1]
            s.f_blocks = quota // bs
            s.f_bfree = s.f_bavail = max(0, quota - used) // bs
            s.f_files = 1 << 32
            s.f_ffree = s.f_favail = 1 << 31
            s.f_namemax = names.MAX_NAME
            self._usage = (now, s)
        return self._usage[1]

    # ------------------------------------------------------------------ status as xattrs
    def status(self) -> dict:
        st = self.wb.status()
        out = {"files": st.files, "bytes": st.bytes, "ops": st.ops, "error": st.error}
        out["conflicts"] = self.wb.conflict_count
        if self.poller is not None:
            out["poll"] = dict(self.poller.stats)
        if self.revalidator is not None:
            out["revalidate"] = dict(self.revalidator.stats)
        out["read"] = dict(self.reader.stats)
        out["readdir"] = dict(self.replies.stats)
        out["index_trims"] = self.cache.index_trims
        if self.wb.leases is not None:
            out["leases"] = dict(self.wb.leases.stats)
        return out

    def state(self, rec: Inode) -> str:
        st = self.cache.state(rec.ino, rec.size)
        if self.wb.is_dirty(rec.ino) or st.dirty:
            word = "dirty"
        elif st.full:
            word = "local"
        elif st.partial:
            word = "partial"
        else:
            word = "tiered"
        return word + (",pinned" if st.pinned else "")

    @_errors
    async def getxattr(self, inode, name, ctx):
        if inode == ROOT and name == XATTR_PENDING:
            if self._drain_scope is not None:  # someone still waits for the drain
                self._drain_scope.deadline = trio.current_time() + self.drain_grace
            return self.wb.status().as_json()
        if inode == ROOT and name == XATTR_PID:
            return str(os.getpid()).encode()
        if inode == ROOT and name == XATTR_STATUS:
            return json.dumps(self.status()).encode()
        if name == XATTR_STATE:
            rec = self.ns.must(inode)
            if rec.is_dir:
                raise pyfuse3.FUSEError(ENOATTR)
            self._sync_remote_valid(rec)
            return self.state(rec).encode()
        raise pyfuse3.FUSEError(ENOATTR)

    @_errors
    async def listxattr(self, inode, ctx):
        if inode == ROOT:
            return [XATTR_PENDING, XATTR_PID, XATTR_STATUS]
        rec = self.ns.must(inode)
        return [] if rec.is_dir else [XATTR_STATE]

    @_errors
    async def setxattr(self, inode, name, value, ctx):
        if inode == ROOT and name == XATTR_SYNC:
            if self.poller is None:
                raise pyfuse3.FUSEError(errno.ENOTSUP)
            await self.poller.full_pass()
            return
        if inode == ROOT and name == XATTR_CONTROL:
            cmd = value.decode(errors="replace").strip()
            if cmd == "lazy":
                self.drain_on_exit = False
                log.info("lazy unmount requested: the queue finishes at the next mount")
                return
            if cmd == "drain" and self.nursery is not None:
                st = self.wb.status()
                if st.ops or st.files:
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
                self.nursery.start_soon(self._drain_request, scope)
                return
            raise pyfuse3.FUSEError(errno.EINVAL)
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    async def _drain_request(self, scope: trio.CancelScope) -> None:
        """Owned by the mount's nursery; ends (and with it drain mode) when drained, replaced
        or no longer polled."""
        try:
            with scope:
                await self.wb.drain()
            if scope.cancelled_caught:
                log.info("drain request ended before the queue was empty")
        finally:
            if self._drain_scope is scope:
                self._drain_scope = None

    @_errors
    async def removexattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(ENOATTR)
