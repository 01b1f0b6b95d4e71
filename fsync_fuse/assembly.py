"""One wiring: every part of a mounted share, built and run in one place.

The daemon (daemon.py) and the in-process test harness (tests/mount/inproc.py) both get the
filesystem from `open_mount`; only the daemon then hands `Mount.fs` to the kernel. Parts get
their collaborators in their constructors, in this order of construction:

    References, DirReplies                        what the kernel holds, readdir answers
    Namespace, KernelAttributes                   the tables (reporting changes to DirReplies)
    KernelNotifier, Pacing, DirtySet              kernel invalidations, bursts, dirty files
    Lister, Conflicts, Leases, WriteBack          listings, other sites, the upload queue
    Reader, Revalidator, Poller                   reads, close-to-open, change detection
    ControlServer, FS                             user.fsync.*, the kernel adapter

Background tasks (`Mount.run`) each own a nursery and stop with the mount: the cache's
maintenance, the write-back's worker and uploader, listings, read-ahead, polling, kernel
invalidations, drain requests, and the periodic flush/commit below.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from cache import BlockCache
from fsync_fuse.config import MountConfig
from fsync_fuse.conflicts import Conflicts
from fsync_fuse.control_server import ControlServer
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.fs import FS
from fsync_fuse.handles import References
from fsync_fuse.initial import initial_download
from fsync_fuse.kattrs import KernelAttributes
from fsync_fuse.leases import Leases
from fsync_fuse.listing import Lister
from fsync_fuse.metrics import Metrics
from fsync_fuse.namespace import ROOT, MergeResult, Namespace
from fsync_fuse.notify import KernelNotifier
from fsync_fuse.pins import Pins
from fsync_fuse.poller import Poller
from fsync_fuse.reader import Reader
from fsync_fuse.recall import CHANGED, Recaller
from fsync_fuse.revalidate import Revalidator
from fsync_fuse.settings import Settings
from fsync_fuse.snapadmin import SnapshotAdmin
from fsync_fuse.snapfs import SnapFS
from fsync_fuse.snaptree import SnapshotTree, drop_leftovers
from fsync_fuse.space import Space
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.pacing import Pacing
from fsync_fuse.writeback.queue import WriteBack
from fsync_fuse.xattrs import Xattrs
from remote.base import Remote, RemoteError

log = logging.getLogger(__name__)

#: without a date policy, a file used within this long counts as used for proactive recall
RECENT_USE = 86400.0


class Mount:
    """The parts of one mounted share, wired together (see the module doc for the order)."""

    def __init__(
        self,
        cfg: MountConfig,
        cache: BlockCache,
        remote: Remote,
        *,
        after_init: Callable[[], None] | None = None,
    ) -> None:
        self.cfg, self.cache, self.remote = cfg, cache, remote
        self.refs = References()
        #: a file changed elsewhere is fetched again when used within this (no date policy)
        self.recent_use = RECENT_USE
        self.replies = DirReplies()
        self.ns = Namespace(
            cache.env, uid=os.getuid(), gid=os.getgid(), on_dir_change=self.replies.changed
        )
        self.attrs = KernelAttributes(
            timeout=cfg.listing_ttl,
            block_size=cache.block_size,
            subdirs=self.ns.subdirs,
            generation=int(self.ns.site_id, 16),
        )
        self.notifier = KernelNotifier(ns=self.ns, refs=self.refs)
        self.pacing = Pacing(cache=cache)
        self.dirty = DirtySet(
            ns=self.ns, cache=cache, pacing=self.pacing, delay=cfg.writeback_delay
        )
        self.lister = Lister(
            ns=self.ns,
            cache=cache,
            remote=remote,
            dirty=self.dirty,
            refs=self.refs,
            on_merge=self._merged,
            ttl=cfg.attr_timeout,
            list_ttl=cfg.listing_ttl,
            io_timeout=cfg.io_timeout,
            list_ahead=cfg.list_ahead,
        )
        self.conflicts = Conflicts(
            ns=self.ns, cache=cache, remote=remote, site=cfg.site_name, on_change=self._name_changed
        )
        self.leases = Leases(env=cache.env, remote=remote) if cfg.upload_leases else None
        self.writeback = WriteBack(
            ns=self.ns,
            cache=cache,
            remote=remote,
            dirty=self.dirty,
            pacing=self.pacing,
            conflicts=self.conflicts,
            leases=self.leases,
        )
        self.reader = Reader(
            ns=self.ns,
            cache=cache,
            remote=remote,
            dirty=self.dirty,
            max_window=min(cfg.read_ahead, cfg.cache_size // 4),
            io_timeout=cfg.io_timeout,
            recall_max=cfg.cache_size // 4,
        )
        self.revalidator = Revalidator(
            ns=self.ns,
            cache=cache,
            remote=remote,
            dirty=self.dirty,
            lister=self.lister,
            ttl=cfg.attr_timeout,
        )
        self.poller = Poller(ns=self.ns, lister=self.lister, interval=cfg.poll_interval)
        self.settings = Settings(ns=self.ns, cache=cache, given=cfg.policies)
        self.recaller = Recaller(ns=self.ns, cache=cache, dirty=self.dirty, reader=self.reader)
        self.pins = Pins(ns=self.ns, cache=cache, lister=self.lister, recaller=self.recaller)
        self.space = Space(
            ns=self.ns, cache=cache, remote=remote, dirty=self.dirty, reader=self.reader
        )
        self.snapshots = (
            SnapshotTree(
                remote=remote,
                cache=cache,
                owner=self.ns.owner,
                name=cfg.snapshot_dir,
                ttl=cfg.listing_ttl,
                on_gone=self.notifier.name_changed,
            )
            if cfg.snapshot_dir
            else None
        )
        self.snapshot_admin = SnapshotAdmin(
            remote=remote,
            ns=self.ns,
            writeback=self.writeback,
            lister=self.lister,
            dirty=self.dirty,
            site=cfg.site_name,
            tree=self.snapshots,
        )
        self.control = ControlServer(
            ns=self.ns,
            cache=cache,
            dirty=self.dirty,
            writeback=self.writeback,
            reader=self.reader,
            replies=self.replies,
            poller=self.poller,
            revalidator=self.revalidator,
            cfg=cfg,
            lister=self.lister,
            remote=remote,
            pins=self.pins,
            recaller=self.recaller,
            settings=self.settings,
            tiering=cache,
            uploads=self.writeback.uploader,
            census=cache,
            snapshots=self.snapshot_admin,
        )
        self.metrics = Metrics(figures=self.control.figures)
        self.fs = FS(
            ns=self.ns,
            cache=cache,
            remote=remote,
            dirty=self.dirty,
            writeback=self.writeback,
            lister=self.lister,
            reader=self.reader,
            revalidator=self.revalidator,
            poller=self.poller,
            refs=self.refs,
            notifier=self.notifier,
            control=self.control,
            replies=self.replies,
            attrs=self.attrs,
            space=self.space,
            pins=self.pins,
            recaller=self.recaller,
            xattrs=Xattrs(ns=self.ns, remote=remote, dirty=self.dirty),
            snapfs=SnapFS(tree=self.snapshots, attrs=self.attrs) if self.snapshots else None,
            fsync_remote=cfg.fsync_remote,
            io_timeout=cfg.io_timeout,
            after_init=after_init,
        )

    def _merged(self, dir_ino: int, res: MergeResult) -> None:
        """A listing changed entries: the kernel is told, covered new files are pinned."""
        self.notifier.merged(dir_ino, res)
        self.pins.listed(dir_ino, res)
        if self.settings.policies.proactive_recall:
            # another site changed files this mount used: their new version comes now
            window = self.settings.policies.tier_after or self.recent_use
            now = time.time()
            for rec in res.changed:
                last = self.cache.last_access(rec.ino)
                if last is not None and now - last < window:
                    self.recaller.queue(rec.ino, CHANGED)

    def _name_changed(self, parent: int, name: str) -> None:
        """A conflict gave `name` in `parent` another meaning: the kernel forgets the name,
        the listing brings in what the share now holds."""
        self.notifier.name_changed(parent, name)
        self.lister.refresh_later(parent)

    async def recover(self) -> None:
        """What a previous run left: orphans (nothing refers to them any more), the root's
        attributes if never read, and everything dirty or queued goes out as soon as it can."""
        for ino in self.ns.purge_orphans():
            self.cache.delete(ino)
        drop_leftovers(self.cache)  # snapshot content of a previous run (snaptree.py)
        if self.cache.recovered:
            # a crash between the namespace's purge of an inode and the cache commit that
            # withdrew its content leaves content no inode owns: deleted, not leaked
            for key in self.cache.keys():  # (snapshot keys are gone already, just above)
                if self.ns.get(key) is None:
                    self.cache.delete(key)
        root = self.ns.get(ROOT)
        if root is not None and not root.meta_known:
            try:
                entry = await self.remote.stat("")
                root.apply_metadata(entry.metadata or {}, self.ns.owner)
                self.ns.update(
                    ROOT,
                    mode=root.mode,
                    uid=root.uid,
                    gid=root.gid,
                    extra=root.extra,
                    meta_known=True,
                    extra_known=True,
                    attrs=entry.attributes,
                    mtime_ns=entry.last_write_ns or root.mtime_ns,
                )
            except RemoteError as exc:
                log.debug("root metadata unavailable: %s", exc)
        self.dirty.requeue_all()
        st = self.writeback.status()
        if not st.empty:
            log.info(
                "resuming the queue of a previous run: %d operations, %d files", st.ops, st.files
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every background task of the mount; returns only when cancelled."""
        async with trio.open_nursery() as nursery:
            # the cache's periodic commit goes through flush_loop (namespace first)
            await nursery.start(functools.partial(self.cache.run, commit_interval=math.inf))
            await nursery.start(self.writeback.run)
            await nursery.start(self.lister.run)
            await nursery.start(self.reader.run)
            await nursery.start(self.poller.run)
            await nursery.start(self.notifier.run)
            await nursery.start(self.control.run)
            await nursery.start(self.recaller.run)
            nursery.start_soon(self.pins.sweep)
            nursery.start_soon(
                functools.partial(
                    initial_download,
                    self.cfg.initial_download,
                    ns=self.ns,
                    cache=self.cache,
                    lister=self.lister,
                    recaller=self.recaller,
                )
            )
            if self.cfg.metrics is not None:
                await nursery.start(functools.partial(self.metrics.serve, *self.cfg.metrics))
            nursery.start_soon(flush_loop, self.ns, self.cache)
            task_status.started()


@asynccontextmanager
async def open_mount(
    cfg: MountConfig, remote: Remote, *, after_init: Callable[[], None] | None = None
) -> AsyncIterator[Mount]:
    """Open the cache, build the parts, recover what a previous run left and run the
    background tasks while the caller uses the mount; on the way out stop them, persist the
    namespace's write-behind records and close the cache (a clean shutdown). Raises
    CacheMismatch when the cache directory belongs to another share or layout."""
    cache = BlockCache.open(
        cfg.cache_dir,
        max_bytes=cfg.cache_size,
        share_id=cfg.share_id,
        block_size=cfg.block_size,
        full_timeout=cfg.full_timeout,
    )
    mount: Mount | None = None
    try:
        mount = Mount(cfg, cache, remote, after_init=after_init)
        await mount.recover()
        async with trio.open_nursery() as nursery:
            await nursery.start(mount.run)
            try:
                yield mount
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if mount is not None:
            mount.ns.flush()
        cache.close()


async def flush_loop(
    ns: Namespace, cache: BlockCache, interval: float = 2.0, commit_interval: float = 5.0
) -> None:
    """Sizes and mtimes of files being written reach LMDB at least this often, and the
    cache's periodic commit carries them in its own transaction: a committed dirty block
    never lies beyond the committed size (else after a crash it would be above EOF, never
    uploaded, and the file re-queued forever). Start-up truncates whatever still does
    (`DirtySet.requeue_all`). A failure is logged: it must not take the mount down."""
    last_commit = trio.current_time()
    while True:
        await trio.sleep(interval)
        try:
            if trio.current_time() - last_commit >= commit_interval:
                last_commit = trio.current_time()
                await cache.commit_async(also=ns.write_pending)  # (with the records)
            else:
                ns.flush()
        except Exception:  # noqa: BLE001
            log.exception("periodic flush/commit failed; retrying")
