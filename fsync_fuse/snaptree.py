"""The share's snapshots as a read-only tree under the mount root (`.snapshots/` by default).

One directory per snapshot, named by its GMT token (snapnames.py), holding the share as it
was. Everything here lives in memory: inode numbers from SNAP_BASE up (live inodes are
numbered from 1 by the namespace and never get there), listings fetched from the snapshot
on first use and then kept (a snapshot never changes), metadata read with `stat` only for
entries that carry the POSIX marker, as live listings do (attrs.py).

Content goes through the block cache under the snapshot inode's number, so it counts
against --cache-size and a snapshot's block never serves the live file (their keys differ)
nor the other way round. The numbers are new at every mount, so whatever a previous mount
left under such keys is dropped at start (`drop_leftovers`), before any can be reused.

The list of snapshots follows the share: it is read again when `.snapshots` is looked at
and the last read is older than `ttl` (the poll interval). A snapshot that disappeared is
taken out of the tree; its files still open keep what the cache holds and fail with EIO for
the rest (the share answers ShareSnapshotNotFound), never hang.
"""

from __future__ import annotations

import calendar
import errno
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from cache import BlockCache
from fsync_fuse import snapnames
from fsync_fuse.attrs import DIR, FILE, LINK, Inode, has_marker
from fsync_fuse.groups import single_error
from fsync_fuse.namespace import ROOT
from fsync_fuse.namespace.tables import FsError
from remote.base import (
    AuthFailed,
    NotFound,
    PermissionDenied,
    Remote,
    RemoteEntry,
    RemoteError,
    SnapshotInfo,
)

log = logging.getLogger(__name__)

#: the first inode number (and handle) of the snapshot tree: `.snapshots` itself
SNAP_BASE = 1 << 48
#: seconds `ls .snapshots` waits for the share's list when one is known already
KNOWN_WAIT = 2.0
#: parallel `stat`s while listing a snapshot directory (entries with POSIX metadata)
STAT_PARALLEL = 8


def drop_leftovers(cache: BlockCache) -> int:
    """Drop cached content a previous mount stored under snapshot keys (see above)."""
    stale = [k for k in cache.keys() if k >= SNAP_BASE]
    for key in stale:
        cache.delete(key)
    return len(stale)


@dataclass(slots=True)
class Node:
    rec: Inode
    snapshot: str | None  # the snapshot id; None for `.snapshots` itself
    path: str  # share-relative path inside its snapshot
    children: dict[str, int] | None = None  # name -> inode; None until listed
    gone: bool = False  # its snapshot was deleted


def snapshot_ns(snapshot_id: str) -> int:
    """The time a snapshot id names, in ns since the epoch (0 when it is not one)."""
    try:
        t = time.strptime(snapshot_id[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return 0
    frac = snapshot_id[20:-1] if len(snapshot_id) > 20 else ""
    sub = int((frac + "000000000")[:9]) if frac.isdigit() else 0
    return calendar.timegm(t) * 1_000_000_000 + sub


class SnapshotTree:
    def __init__(
        self,
        *,
        remote: Remote,
        cache: BlockCache,
        owner: tuple[int, int],
        name: str,
        ttl: float,
        on_gone: Callable[[int, str], None] = lambda parent, name: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remote, self.cache, self.owner = remote, cache, owner
        #: told (parent inode, name) when a snapshot left the share: the kernel forgets it
        self.on_gone = on_gone
        self.name = name
        self.ttl = ttl
        self._clock = clock
        now = time.time_ns()
        root = Inode(SNAP_BASE, ROOT, name, DIR, mtime_ns=now, ctime_ns=now, mode=0o555)
        root.uid, root.gid = owner
        self._nodes: dict[int, Node] = {SNAP_BASE: Node(root, None, "", {})}
        self._next = SNAP_BASE + 1
        self._listed_at = -math.inf
        self._views: dict[str, Remote] = {}
        self._lookups: Counter[int] = Counter()
        self._open: Counter[int] = Counter()
        self._refresh_lock = trio.Lock()
        self._list_locks: dict[int, trio.Lock] = {}
        self.stats = {"snapshots": 0, "listings": 0}

    # ------------------------------------------------------------------ inodes
    @staticmethod
    def owns(ino: int) -> bool:
        return ino >= SNAP_BASE

    def must(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def looked_up(self, ino: int) -> None:
        self._lookups[ino] += 1

    def forget(self, ino: int, n: int) -> None:
        left = self._lookups[ino] - n
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        node = self._nodes.get(ino)
        if node is not None and node.gone and not self._open[ino]:
            self._drop(ino)

    def opened(self, ino: int) -> None:
        self._open[ino] += 1

    def closed(self, ino: int) -> None:
        self._open[ino] -= 1
        if self._open[ino] <= 0:
            del self._open[ino]
            node = self._nodes.get(ino)
            if node is not None and node.gone and ino not in self._lookups:
                self._drop(ino)

    # ------------------------------------------------------------------ the tree
    async def lookup(self, parent: int, name: str) -> Inode:
        node = self.must(parent)
        children = await self._children_of(parent, node)
        ino = children.get(name)
        if ino is None:
            raise FsError(errno.ENOENT)
        self.looked_up(ino)
        return self._nodes[ino].rec

    async def entries(self, ino: int) -> list[Inode]:
        """A directory's entries, sorted by name (readdir)."""
        node = self.must(ino)
        if node.rec.kind != DIR:
            raise FsError(errno.ENOTDIR)
        children = await self._children_of(ino, node)
        return [self._nodes[children[n]].rec for n in sorted(children)]

    async def _children_of(self, ino: int, node: Node) -> dict[str, int]:
        if ino == SNAP_BASE:
            await self.refresh()
        elif node.children is None:
            await self._list(ino, node)
        assert node.children is not None
        return node.children

    async def refresh(self, *, force: bool = False) -> None:
        """Read the share's list of snapshots again when it is older than `ttl`."""
        if not force and self._clock() - self._listed_at < self.ttl:
            return
        async with self._refresh_lock:
            if not force and self._clock() - self._listed_at < self.ttl:
                return
            known = self._listed_at != -math.inf
            infos: list[SnapshotInfo] | None = None
            try:
                # with a list known already, an unanswering share does not hold `ls` long
                with trio.move_on_after(KNOWN_WAIT if known else math.inf):
                    infos = await self.remote.list_snapshots()
            except (AuthFailed, PermissionDenied) as exc:
                log.warning(
                    "%s/ stays empty: the mount's credentials may not list the share's "
                    "snapshots (%s); a share SAS cannot, the account key or an account SAS can",
                    self.name,
                    exc.code or exc,
                )
                raise FsError(errno.EACCES) from None
            except RemoteError as exc:
                if not exc.transient or not known:
                    raise
            if infos is None:
                # the share is unreachable: the list known last stands until the next try
                log.debug("snapshots not listed again (share unreachable); keeping the known")
                self._listed_at = self._clock()
                return
            self._listed_at = self._clock()
            self._apply(snapnames.names(i.snapshot for i in infos))

    def _apply(self, named: dict[str, str]) -> None:
        root = self._nodes[SNAP_BASE]
        assert root.children is not None
        for name, ino in list(root.children.items()):
            if named.get(name) != self._nodes[ino].snapshot:
                del root.children[name]
                self._retire(ino)
                self.on_gone(SNAP_BASE, name)
        for name, sid in named.items():
            if name in root.children:
                continue
            t = snapshot_ns(sid)
            rec = Inode(self._new_ino(), SNAP_BASE, name, DIR, mtime_ns=t, ctime_ns=t, mode=0o555)
            rec.uid, rec.gid = self.owner
            self._nodes[rec.ino] = Node(rec, sid, "")
            root.children[name] = rec.ino
        self.stats["snapshots"] = len(root.children)

    def _retire(self, top: int) -> None:
        """A snapshot is gone: its nodes leave the tree once the kernel and handles let go."""
        sid = self._nodes[top].snapshot
        log.info("snapshot %s is gone from the share", sid)
        self._views.pop(sid or "", None)
        for ino in [i for i, n in self._nodes.items() if n.snapshot == sid]:
            node = self._nodes[ino]
            node.gone = True
            if ino not in self._lookups and not self._open[ino]:
                self._drop(ino)

    def _drop(self, ino: int) -> None:
        node = self._nodes.pop(ino, None)
        if node is not None and node.rec.kind == FILE:
            self.cache.delete(ino)

    def _new_ino(self) -> int:
        ino = self._next
        self._next += 1
        return ino

    def view(self, node: Node) -> Remote:
        if node.snapshot is None:
            raise FsError(errno.EISDIR)
        if node.gone:
            raise FsError(errno.EIO, f"snapshot {node.snapshot} was deleted")
        v = self._views.get(node.snapshot)
        if v is None:
            v = self._views[node.snapshot] = self.remote.at_snapshot(node.snapshot)
        return v

    async def _list(self, ino: int, node: Node) -> None:
        lock = self._list_locks.setdefault(ino, trio.Lock())
        async with lock:
            if node.children is not None:
                return
            view = self.view(node)
            try:
                entries = await view.list_dir(node.path)
            except NotFound:
                raise FsError(errno.ENOENT) from None
            metas = await self._stat_marked(view, node.path, entries)
            children: dict[str, int] = {}
            for e in entries:
                rec = self._record(ino, e, metas.get(e.name))
                self._nodes[rec.ino] = Node(rec, node.snapshot, _join(node.path, e.name))
                children[e.name] = rec.ino
            node.children = children
            self.stats["listings"] += 1
        self._list_locks.pop(ino, None)

    async def _stat_marked(
        self, view: Remote, path: str, entries: list[RemoteEntry]
    ) -> dict[str, RemoteEntry]:
        out: dict[str, RemoteEntry] = {}
        limiter = trio.CapacityLimiter(STAT_PARALLEL)

        async def one(e: RemoteEntry) -> None:
            async with limiter:
                try:
                    out[e.name] = await view.stat(_join(path, e.name), is_dir=e.is_dir)
                except NotFound:
                    pass

        with single_error():
            async with trio.open_nursery() as nursery:
                for e in entries:
                    if has_marker(e.attributes) is not False:
                        nursery.start_soon(one, e)
        return out

    def _record(self, parent: int, e: RemoteEntry, meta: RemoteEntry | None) -> Inode:
        src = meta or e
        rec = Inode(self._new_ino(), parent, e.name, DIR if e.is_dir else FILE)
        rec.size = 0 if e.is_dir else src.size
        rec.mtime_ns = src.last_write_ns or 0
        rec.ctime_ns = src.change_ns or rec.mtime_ns
        rec.attrs = src.attributes
        rec.etag = src.etag
        if meta is not None and meta.metadata is not None:
            rec.apply_metadata(meta.metadata, self.owner)
        else:
            rec.apply_defaults(self.owner)
        return rec

    # ------------------------------------------------------------------ content
    def fetcher(self, node: Node) -> Callable[[int, int], Awaitable[bytes]]:
        """Fetches from the node's snapshot; asked only for what the cache lacks, so the
        cached blocks of a file of a deleted snapshot still read."""

        async def fetch(offset: int, length: int) -> bytes:
            view = self.view(node)  # EIO once the snapshot is gone
            try:
                return await view.read(node.path, offset, length)
            except RemoteError as exc:
                # a deleted snapshot, or the share unreachable: the read fails, never hangs
                raise FsError(errno.EIO, str(exc)) from None

        return fetch

    async def read(self, ino: int, offset: int, length: int) -> bytes:
        node = self.must(ino)
        size = node.rec.size
        if offset >= size:
            return b""
        if self.cache.remote_valid(ino) != size:  # first read: the cache learns the size
            self.cache.set_remote_valid(ino, size)
        return await self.cache.read(ino, offset, length, size=size, fetch=self.fetcher(node))

    async def readlink(self, ino: int) -> str:
        node = self.must(ino)
        if node.rec.kind != LINK:
            raise FsError(errno.EINVAL)
        if node.rec.target is None:
            data = await self.fetcher(node)(0, node.rec.size)
            node.rec.target = data.decode("utf-8", "surrogateescape")
        return node.rec.target


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name
